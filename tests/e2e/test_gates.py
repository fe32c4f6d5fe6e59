"""Validation gates end to end: signatures, vulnerability reports and smoke-test Jobs decide
whether a rebuilt candidate may roll, and say why on the policy and in Events."""

from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imagedrift.registry.push import attach_report, cosign_sign, trivy_report
from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, drift, policy_status, wait_rolled
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for


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
    world: World, operator_factory: Callable[..., OperatorProcess]
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
    operator_factory()

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
    time.sleep(4)  # more checks: still nothing rolled
    assert world.image_of("signed").endswith(":1.0.0")
    assert world.image_of("scanned").endswith(":1.0.0")
    assert world.item(unsigned, "signed")["state"] == "Drifted"

    # A signature by another key does not count; the policy's key does.
    cosign_sign(world.client, world.repo("sapp"), sapp, ec.generate_private_key(ec.SECP256R1()))
    time.sleep(3)
    assert world.image_of("signed").endswith(":1.0.0")
    assert any(
        "does not verify" in r for r in policy_status(world, unsigned)["candidate"]["reasons"]
    )
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


def _job_spec(outcome: str) -> dict[str, object]:
    return {
        "backoffLimit": 0,
        "template": {
            "metadata": {"annotations": {"imagedrift.test/job-outcome": outcome}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "smoke", "image": "placeholder", "args": ["--smoke"]}],
            },
        },
    }


def test_smoke_test_job_decides_and_runs_once_per_digest(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _, new, target = drift(world, "good")
    world.publish("bad", "1.0.0", world.app_on(base_image("v1"), "1.0.0"))
    good, bad = f"good-{world.suffix}", f"bad-{world.suffix}"
    world.deployment("good", f"{world.ref('good')}:1.0.0", policy=good)
    world.deployment("bad", f"{world.ref('bad')}:1.0.0", policy=bad)
    for name, outcome in (("good", "succeed"), ("bad", "fail")):
        world.policy(
            name,
            {
                "base": base_spec(world),
                "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
                "validation": {
                    "smokeTest": {
                        "namespace": world.namespace,
                        "timeout": "60s",
                        "template": _job_spec(outcome),
                    }
                },
            },
        )
    world.publish("good", "1.0.1", world.app_on(new, "1.0.1"))
    bad_digest = world.publish("bad", "1.0.1", world.app_on(new, "b1.0.1"))
    operator_factory()

    wait_rolled(world, "good", target)
    body = world.wait_policy(bad, _rejected_for(world, bad, "smokeTest"), "smoke test failed")
    tests = body["status"]["smokeTests"]
    assert [(t["digest"], t["result"]) for t in tests] == [(bad_digest, "Failed")], tests
    assert "job failed" in body["status"]["candidate"]["reasons"][-1]
    wait_for(
        lambda: _event_names(world, bad, "CandidateRejected", "smokeTest:"),
        what="an Event naming the smoke test",
        timeout=30,
    )
    time.sleep(4)  # more checks: not re-run, not rolled
    assert world.image_of("bad").endswith(":1.0.0")
    from kubernetes import client

    jobs = client.BatchV1Api(world.kube.api_client).list_namespaced_job(world.namespace).items
    by_candidate = sorted(
        (j.metadata.annotations or {}).get("imagedrift.io/candidate", "") for j in jobs
    )
    assert by_candidate == sorted([target, f"{world.ref('bad')}@{bad_digest}"]), (
        "each candidate digest is smoke-tested exactly once"
    )
    good_status = policy_status(world, good)
    assert good_status["smokeTests"][0]["result"] == "Succeeded"
    assert good_status["lineage"][0]["verdict"] == "Passed"
