"""The README's gate promises end to end: vulnerability reports from every source it names
(the Trivy Operator's VulnerabilityReport in the cluster, a SARIF referrer), ``maxReportAge``,
``ignore`` entries that expire, and Notation signatures verified with the policy's key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imagedrift.core.refs import ImageRef
from imagedrift.registry.push import (
    NOTATION_ARTIFACT,
    NOTATION_JWS,
    attach,
    attach_report,
    cosign_sign,
    notation_sign,
    trivy_report,
)
from tests.e2e.promised import (
    candidate_of,
    put_vulnerability_report,
    rfc3339,
    sarif_report,
    trivy_operator_crd,
    verdict_with,
    vulnerability_report,
)
from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, checks_pass, drift, publish_rebuild, wait_rolled
from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess

SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}


@pytest.fixture(scope="module")
def trivy_operator_installed(controlplane: ControlPlane, deploy_rbac: object) -> Iterator[None]:
    """The Trivy Operator's VulnerabilityReport type in the cluster, for this module."""
    with trivy_operator_crd(controlplane):
        yield


def _gate_policy(world: World, name: str, validation: dict[str, Any], **rollout: Any) -> str:
    spec: dict[str, Any] = {"base": base_spec(world), "app": SEMVER, "validation": validation}
    if rollout:
        spec["rollout"] = rollout
    return world.policy(name, spec)


def _held_back(world: World, operator: OperatorProcess, policy: str, workload: str) -> None:
    """Over two more checks the workload still runs its tag, and says it drifted."""
    checks_pass(operator, policy, 2)
    assert world.image_of(workload).endswith(":1.0.0"), world.image_of(workload)
    assert world.item(policy, workload)["state"] == "Drifted", world.item(policy, workload)


def _passed_lineage(world: World, policy: str, needle: str) -> dict[str, Any]:
    body = world.wait_ready(policy, reason="UpToDate")
    entry = dict(body["status"]["lineage"][0])
    assert entry["verdict"] == "Passed", entry
    assert any(needle in r for r in entry["reasons"]), entry["reasons"]
    assert [r["result"] for r in entry["rollouts"]] == ["Complete"], entry["rollouts"]
    return entry


def test_a_trivy_operator_vulnerability_report_in_the_cluster_gates_the_candidate(
    world: World,
    trivy_operator_installed: None,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """README: ``vulnerabilities`` reads "a Trivy Operator report". The VulnerabilityReport
    the Trivy Operator keeps for the candidate's digest decides (``source: cluster``): a
    CRITICAL finding rejects it, naming the report and the CVE; a report about another
    digest does not count; the rescan that updates the report in place lets it roll."""
    old, new, target = drift(world, "app")
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"trivyop-{world.suffix}")
    policy = _gate_policy(
        world, "trivyop", {"vulnerabilities": {"maxSeverity": "HIGH", "source": "cluster"}}
    )
    publish_rebuild(world, "app", new)
    now = datetime.now(UTC)
    report = "replicaset-web-6b7f9c-app"  # the Trivy Operator's name for its scan of web
    put_vulnerability_report(
        world,
        vulnerability_report(
            world,
            "web-6b7f9c",
            target,
            [("CVE-2024-1111", "CRITICAL"), ("CVE-2024-1112", "LOW")],
            now - timedelta(hours=1),
        ),
    )
    # A clean, newer report about the image that runs now says nothing of the candidate.
    running = f"{world.ref('app')}@{world.app_on(old, '1.0.0').digest}"
    put_vulnerability_report(world, vulnerability_report(world, "web-5f8d2a", running, [], now))
    operator = operator_factory()

    body = world.wait_policy(
        policy, verdict_with("Rejected", "worst CRITICAL: CVE-2024-1111"), "the report rejects"
    )
    reasons = candidate_of(body)["reasons"]
    source = f"vulnerabilities: VulnerabilityReport {world.namespace}/{report}: "
    assert any(r.startswith(source) for r in reasons), reasons
    assert body["status"]["lineage"][0]["verdict"] == "Rejected"
    world.wait_event(
        policy, "CandidateRejected", anywhere=True, needle=f"VulnerabilityReport {world.namespace}/"
    )
    _held_back(world, operator, policy, "web")

    # The Trivy Operator rescans and updates the same report: the critical finding is gone.
    put_vulnerability_report(
        world,
        vulnerability_report(
            world, "web-6b7f9c", target, [("CVE-2024-1112", "LOW")], datetime.now(UTC)
        ),
    )
    wait_rolled(world, "web", target)
    _passed_lineage(world, policy, f"{source}no finding above HIGH (1 total)")


def test_a_sarif_report_attached_as_a_referrer_gates_the_candidate(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: reports are "Trivy JSON / SARIF referrer". A SARIF log attached to the
    candidate (``application/sarif+json``, as ``oras attach`` or ``trivy --format sarif``
    pipelines push it) is read: Trivy's severity tag on the rule counts, so a CRITICAL result
    rejects the candidate; a newer SARIF scan without it lets the candidate roll."""
    _, new, target = drift(world, "app")
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"sarif-{world.suffix}")
    policy = _gate_policy(
        world, "sarif", {"vulnerabilities": {"maxSeverity": "HIGH", "source": "referrer"}}
    )
    digest = publish_rebuild(world, "app", new)
    attach_report(
        world.client,
        world.repo("app"),
        digest,
        sarif_report(target, [("CVE-2024-2222", "CRITICAL"), ("CVE-2024-2223", "MEDIUM")]),
        sarif=True,
        created="2024-01-01T00:00:00Z",
    )
    operator = operator_factory()

    body = world.wait_policy(
        policy, verdict_with("Rejected", "worst CRITICAL: CVE-2024-2222"), "the SARIF rejects"
    )
    reasons = candidate_of(body)["reasons"]
    assert any(r.startswith("vulnerabilities: SARIF report ") for r in reasons), reasons
    assert not any("CVE-2024-2223" in r for r in reasons), "MEDIUM is within maxSeverity HIGH"
    world.wait_event(policy, "CandidateRejected", anywhere=True, needle="SARIF report")
    _held_back(world, operator, policy, "web")

    attach_report(
        world.client,
        world.repo("app"),
        digest,
        sarif_report(target, [("CVE-2024-2223", "MEDIUM")]),
        sarif=True,
        created="2024-02-01T00:00:00Z",
    )
    wait_rolled(world, "web", target)
    entry = _passed_lineage(world, policy, "no finding above HIGH (1 total)")
    assert any(r.startswith("vulnerabilities: SARIF report ") for r in entry["reasons"])


def test_a_report_older_than_max_report_age_does_not_count(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: ``maxReportAge: 24h``. A clean scan older than ``maxReportAge`` does not
    let the candidate through (the verdict says how old it is); a fresh clean scan does."""
    _, new, target = drift(world, "app")
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"aged-{world.suffix}")
    policy = _gate_policy(
        world,
        "aged",
        {"vulnerabilities": {"maxSeverity": "HIGH", "maxReportAge": "1h", "source": "referrer"}},
    )
    digest = publish_rebuild(world, "app", new)
    now = datetime.now(UTC)
    attach_report(
        world.client,
        world.repo("app"),
        digest,
        trivy_report(digest, [("CVE-2024-4444", "LOW")]),
        created=rfc3339(now - timedelta(days=2)),
    )
    operator = operator_factory()

    body = world.wait_policy(
        policy, verdict_with("Rejected", "older than maxReportAge 3600s"), "the stale report"
    )
    assert any(
        r.startswith("vulnerabilities: Trivy report ") for r in candidate_of(body)["reasons"]
    )
    world.wait_event(policy, "CandidateRejected", anywhere=True, needle="older than maxReportAge")
    _held_back(world, operator, policy, "web")

    attach_report(
        world.client,
        world.repo("app"),
        digest,
        trivy_report(digest, [("CVE-2024-4444", "LOW")]),
        created=rfc3339(datetime.now(UTC) - timedelta(minutes=1)),
    )
    wait_rolled(world, "web", target)
    _passed_lineage(world, policy, "no finding above HIGH (1 total)")


def test_an_ignored_finding_passes_until_its_expiry_and_blocks_after_it(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: ``ignore: [{id, expires, reason}]``. A CRITICAL finding an unexpired entry
    names does not block: the candidate passes (and rolls where nothing else holds it).
    Once the entry's ``expires`` has passed, the same report rejects the candidate, saying
    the ignore expired, and it does not roll even when nothing else holds it any more."""
    _, new, held_target = drift(world, "held")
    world.publish("free", "1.0.0", world.app_on(base_image("v1"), "free 1.0.0"))
    held_name, free_name = f"expiring-{world.suffix}", f"ignored-{world.suffix}"
    world.deployment("held", f"{world.ref('held')}:1.0.0", policy=held_name)
    world.deployment("free", f"{world.ref('free')}:1.0.0", policy=free_name)
    findings = [("CVE-2024-3333", "CRITICAL"), ("CVE-2024-3334", "LOW")]
    digests = {app: publish_rebuild(world, app, new) for app in ("held", "free")}
    for app, digest in digests.items():
        attach_report(
            world.client,
            world.repo(app),
            digest,
            trivy_report(digest, findings),
            created=rfc3339(datetime.now(UTC)),
        )
    free_target = f"{world.ref('free')}@{digests['free']}"
    operator = operator_factory()

    # Created once the operator runs, so its first checks fall well before the expiry.
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    closed = (datetime.now(UTC).hour + 12) % 24
    policy = _gate_policy(
        world,
        "expiring",
        {
            "vulnerabilities": {
                "maxSeverity": "HIGH",
                "source": "referrer",
                "ignore": [
                    {"id": "CVE-2024-3333", "expires": rfc3339(expires), "reason": "not reachable"}
                ],
            }
        },
        maintenanceWindows=[{"schedule": f"0 {closed} * * *", "duration": "1h"}],
    )
    forever = _gate_policy(
        world,
        "ignored",
        {
            "vulnerabilities": {
                "maxSeverity": "HIGH",
                "source": "referrer",
                "ignore": [
                    {"id": "CVE-2024-3333", "expires": "2099-01-01T00:00:00Z", "reason": "n/a"}
                ],
            }
        },
    )

    # Before the expiry: the ignored CRITICAL finding does not count.
    body = world.wait_policy(
        policy, verdict_with("Passed", "vulnerabilities: "), "passed while ignored", timeout=25
    )
    assert datetime.now(UTC) < expires, "the passing verdict was seen before the expiry"
    assert any("no finding above HIGH" in r for r in candidate_of(body)["reasons"])
    held = world.item(policy, "held")
    assert held["state"] == "Waiting" and "outside maintenance windows" in held["reason"], held
    wait_rolled(world, "free", free_target)
    _passed_lineage(world, forever, "no finding above HIGH (2 total)")

    # After it: the same report rejects the candidate and says why.
    body = world.wait_policy(
        policy,
        verdict_with("Rejected", "(ignore expired for CVE-2024-3333)"),
        "rejected once the ignore expired",
        timeout=60,
    )
    assert datetime.now(UTC) >= expires
    assert any("worst CRITICAL: CVE-2024-3333" in r for r in candidate_of(body)["reasons"])
    assert body["status"]["lineage"][0]["verdict"] == "Rejected"
    world.wait_event(
        policy, "CandidateRejected", anywhere=True, needle="ignore expired for CVE-2024-3333"
    )

    # Nothing else holds it now: the window is open all the time. Still it does not roll.
    world.kube.custom.patch_cluster_custom_object(
        "imagedrift.io",
        "v1alpha1",
        "imagepolicies",
        policy,
        {
            "spec": {
                "rollout": {"maintenanceWindows": [{"schedule": "* * * * *", "duration": "2m"}]}
            }
        },
    )
    generation = world.get_policy(policy)["metadata"]["generation"]
    world.wait_policy(
        policy,
        lambda b: (b.get("status") or {}).get("observedGeneration") == generation,
        "the open window observed",
    )
    _held_back(world, operator, policy, "held")
    assert world.image_of("held") != held_target


def _signing_certificate(key: ec.EllipticCurvePrivateKey) -> str:
    """A self-signed code-signing certificate for ``key`` (PEM): what a Notation trust
    store holds, and what the CRD accepts as ``publicKey`` ("PEM public key or
    certificate")."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagedrift e2e signer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _notation_envelope(world: World, digest: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The JWS envelope of a Notation signature by ``key`` of image ``digest`` in ``app``."""
    repository = ImageRef(world.host, world.repo("app"))
    signature = notation_sign(world.client, world.repo("app"), digest, key)
    manifest, _, _ = world.client.get_manifest(repository.with_digest(signature))
    layer = json.loads(manifest)["layers"][0]["digest"]
    return world.client.get_blob(repository, str(layer))


def test_a_notation_signature_is_verified_with_the_policy_key(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: ``signature: {type: notation, publicKey}`` verifies "over the candidate
    digest, not just presence" (here the signer's certificate, as Notation users hold it).
    A cosign signature, even by that key, does not satisfy ``type: notation``; that key's
    Notation signature of another image, copied onto the candidate, is refused; so is a
    Notation signature by another key; one by the certificate's key over the candidate
    lets it roll."""
    key = ec.generate_private_key(ec.SECP256R1())
    old, new, target = drift(world, "app")
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"notation-{world.suffix}")
    policy = _gate_policy(
        world,
        "notation",
        {"signature": {"type": "notation", "publicKey": _signing_certificate(key)}},
    )
    digest = publish_rebuild(world, "app", new)
    cosign_sign(world.client, world.repo("app"), digest, key, as_referrer=True)
    operator = operator_factory()

    body = world.wait_policy(
        policy, verdict_with("Rejected", "no notation signature attached"), "cosign is not enough"
    )
    assert any(r.startswith("signature: ") for r in candidate_of(body)["reasons"])
    world.wait_event(
        policy, "CandidateRejected", anywhere=True, needle="signature: no notation signature"
    )
    _held_back(world, operator, policy, "web")

    # A valid signature of the image that runs now, replayed onto the candidate.
    running = world.app_on(old, "1.0.0").digest
    envelope = _notation_envelope(world, running, key)
    attach(
        world.client, world.repo("app"), digest, NOTATION_ARTIFACT, [(envelope, NOTATION_JWS, {})]
    )
    world.wait_policy(
        policy,
        verdict_with("Rejected", f"notation signature is for {running}, not {digest}"),
        "a replayed Notation signature refused",
    )
    assert world.image_of("web").endswith(":1.0.0")

    notation_sign(world.client, world.repo("app"), digest, ec.generate_private_key(ec.SECP256R1()))
    world.wait_policy(
        policy,
        verdict_with("Rejected", "notation signature does not verify with the policy's publicKey"),
        "another key's Notation signature refused",
    )
    _held_back(world, operator, policy, "web")

    notation_sign(world.client, world.repo("app"), digest, key)
    wait_rolled(world, "web", target)
    _passed_lineage(
        world, policy, "signature: notation signature verified with the policy's publicKey"
    )
