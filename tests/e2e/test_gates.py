"""Validation gates end to end: signatures, vulnerability reports and smoke-test Jobs decide
whether a rebuilt candidate may roll, and say why on the policy and in Events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imagedrift.registry.push import attach_report, cosign_sign, trivy_report
from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, checks_pass, drift, policy_status, wait_rolled
from tests.harness.admission import policy_refusal
from tests.harness.controlplane import Kube
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _rejected_for(world: World, policy: str, gate: str) -> Callable[[dict[str, object]], bool]:
    def check(body: dict[str, object]) -> bool:
        candidate = (body.get("status") or {}).get("candidate") or {}  # type: ignore[attr-defined]
        return candidate.get("verdict") == "Rejected" and any(
            str(r).startswith(f"{gate}: ") for r in candidate.get("reasons") or []
        )

    return check


def _event_names(world: World, policy: str, reason: str, needle: str) -> bool:
    return any(r == reason and needle in message for _, r, message in world.all_events(policy))


def test_signature_and_vulnerability_gates_hold_until_satisfied(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    _, new, signed_target = drift(world, "sapp")
    world.publish("vapp", "1.0.0", world.app_on(base_image("v1"), "1.0.0"))
    unsigned = f"sig-{world.suffix}"
    scanned = f"vul-{world.suffix}"
    world.deployment("signed", f"{world.ref('sapp')}:1.0.0", policy=unsigned)
    world.deployment("scanned", f"{world.ref('vapp')}:1.0.0", policy=scanned)
    tags = {"tags": {"semver": {"range": ">=1.0.0"}}}
    world.policy(
        "sig",
        {
            "base": base_spec(world),
            "app": tags,
            "validation": {"signature": {"type": "cosign", "publicKey": _public_pem(key)}},
        },
    )
    world.policy(
        "vul",
        {
            "base": base_spec(world),
            "app": tags,
            "validation": {"vulnerabilities": {"maxSeverity": "HIGH", "source": "referrer"}},
        },
    )
    sapp = world.publish("sapp", "1.0.1", world.app_on(new, "1.0.1"))
    vapp = world.publish("vapp", "1.0.1", world.app_on(new, "v1.0.1"))
    attach_report(
        world.client,
        world.repo("vapp"),
        vapp,
        trivy_report(vapp, [("CVE-2024-0001", "CRITICAL"), ("CVE-2024-0002", "LOW")]),
        created="2024-01-01T00:00:00Z",
    )
    operator = operator_factory()

    body = world.wait_policy(unsigned, _rejected_for(world, unsigned, "signature"), "unsigned")
    reasons = body["status"]["candidate"]["reasons"]
    assert any("no cosign signature" in r for r in reasons), reasons
    body = world.wait_policy(scanned, _rejected_for(world, scanned, "vulnerabilities"), "critical")
    reasons = body["status"]["candidate"]["reasons"]
    assert any("worst CRITICAL: CVE-2024-0001" in r for r in reasons), reasons
    assert body["status"]["lineage"][0]["verdict"] == "Rejected"
    wait_for(
        lambda: _event_names(world, unsigned, "CandidateRejected", "signature: no cosign"),
        what="an Event naming the signature gate",
        timeout=30,
    )
    wait_for(
        lambda: _event_names(world, scanned, "CandidateRejected", "vulnerabilities:"),
        what="an Event naming the vulnerabilities gate",
        timeout=30,
    )
    checks_pass(operator, unsigned, 2)  # two more checks of each: still nothing rolled
    checks_pass(operator, scanned, 2)
    assert world.image_of("signed").endswith(":1.0.0")
    assert world.image_of("scanned").endswith(":1.0.0")
    assert world.item(unsigned, "signed")["state"] == "Drifted"

    # A signature by another key does not count; the policy's key does.
    cosign_sign(world.client, world.repo("sapp"), sapp, ec.generate_private_key(ec.SECP256R1()))
    wait_for(
        lambda: any(
            "does not verify" in r for r in policy_status(world, unsigned)["candidate"]["reasons"]
        ),
        what="the other key's signature refused",
        timeout=60,
    )
    assert world.image_of("signed").endswith(":1.0.0")
    cosign_sign(world.client, world.repo("sapp"), sapp, key, as_referrer=True)
    wait_rolled(world, "signed", signed_target)

    # A newer scan without the critical finding lets the candidate through.
    attach_report(
        world.client,
        world.repo("vapp"),
        vapp,
        trivy_report(vapp, [("CVE-2024-0002", "LOW")]),
        created="2024-02-01T00:00:00Z",
    )
    wait_rolled(world, "scanned", f"{world.ref('vapp')}@{vapp}")
    body = world.wait_ready(scanned, reason="UpToDate")
    entry = body["status"]["lineage"][0]
    assert entry["verdict"] == "Passed"
    assert any("no finding above HIGH" in r for r in entry["reasons"]), entry["reasons"]


SANDBOX = "imagedrift-smoke"


@pytest.mark.parametrize(
    ("label", "smoke", "message"),
    [
        (
            "another namespace",
            {"namespace": "default"},
            "smoke tests run in the operator's sandbox namespace",
        ),
        (
            "another service account",
            {"pod": {"serviceAccountName": "imagedrift"}},
            "run as the sandbox's service account",
        ),
        (
            "a privileged container",
            {"container": {"securityContext": {"privileged": True}}},
            "privileged containers and privilege escalation are not allowed",
        ),
        (
            "a hostPath volume",
            {"pod": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
            "no hostPath volumes in the sandbox",
        ),
        ("host networking", {"pod": {"hostNetwork": True}}, "host namespaces"),
        (
            "a second image",
            {"pod": {"initContainers": [{"name": "i", "image": "busybox"}]}},
            "only the candidate image runs",
        ),
    ],
)
def test_a_smoke_test_asking_for_more_than_the_sandbox_is_refused_at_admission(
    kube: Kube,
    crds_installed: None,
    label: str,
    smoke: dict[str, Any],
    message: str,
) -> None:
    container = {"name": "smoke", "image": "placeholder", **smoke.get("container", {})}
    template = {"template": {"spec": {"containers": [container], **smoke.get("pod", {})}}}
    spec = {
        "base": {"image": "r.example/base", "tag": "1"},
        "validation": {
            "smokeTest": {"template": template}
            | ({"namespace": smoke["namespace"]} if "namespace" in smoke else {})
        },
    }
    refusal = policy_refusal(kube, "sandbox-escape", spec)
    assert message in refusal, (label, refusal)
    assert "spec.validation.smokeTest" in refusal, "the message names the field"
