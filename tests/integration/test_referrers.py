"""Signatures and reports attached to images, found again through the real registry.

The distribution 2.8 server has no referrers API, so this exercises the referrers tag
schema and cosign's ``.sig`` tag; the API path is covered in tests/unit/test_referrers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imagedrift.core import signatures as sig
from imagedrift.core.lineage import Lineage, Source
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import parse_policy
from imagedrift.engine.gates import GateIO, validate
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.push import (
    attach_report,
    cosign_sign,
    notation_sign,
    push,
    trivy_report,
)
from imagedrift.registry.referrers import COSIGN_SIG_TAG, list_referrers
from tests.e2e.scenario import base_image
from tests.harness.registry import Registry


@pytest.fixture
def client(registry: Registry) -> Iterator[OciRegistryClient]:
    c = registry.client()
    try:
        yield c
    finally:
        c.close()


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


LINEAGE = Lineage("", "sha256:base", Source.ANNOTATION, "", (), "ok")


def _policy(validation: dict[str, object]) -> object:
    return parse_policy(
        "p", {"base": {"image": "r.example/base", "tag": "1"}, "validation": validation}
    )


def test_signatures_and_reports_are_found_by_tag_schema_and_sig_tag(
    client: OciRegistryClient, registry_repo: str
) -> None:
    digest = push(client, registry_repo, base_image("referrers"), "1")
    ref = ImageRef(client.host, registry_repo, "", digest)
    assert list_referrers(client, ref) == []

    key = ec.generate_private_key(ec.SECP256R1())
    cosign_sign(client, registry_repo, digest, key)
    notation_sign(client, registry_repo, digest, key)
    attach_report(
        client,
        registry_repo,
        digest,
        trivy_report(digest, [("CVE-1", "LOW")]),
        created="2024-05-01T00:00:00Z",
    )
    found = list_referrers(client, ref)
    by_type = {r.artifact_type: r for r in found}
    assert set(by_type) >= {
        "application/vnd.cncf.notary.signature",
        "application/vnd.aquasecurity.trivy.report.json.v1+json",
    }
    assert {r.found_by for r in found} == {"referrers tag schema", COSIGN_SIG_TAG}
    assert len(found) == 3

    cosign = next(r for r in found if r.found_by == COSIGN_SIG_TAG)
    layer = cosign.layers[0]
    payload = client.get_blob(ref, layer.digest)
    check = sig.verify_cosign(
        payload, layer.annotations[sig.COSIGN_SIGNATURE_ANNOTATION], _pem(key), digest
    )
    assert check.ok, check.reason
    notation = by_type["application/vnd.cncf.notary.signature"]
    envelope = client.get_blob(ref, notation.layers[0].digest)
    assert sig.verify_notation_jws(envelope, _pem(key), digest).ok
    other = ec.generate_private_key(ec.SECP256R1())
    assert not sig.verify_notation_jws(envelope, _pem(other), digest).ok
    report = json.loads(
        client.get_blob(
            ref, by_type["application/vnd.aquasecurity.trivy.report.json.v1+json"].layers[0].digest
        )
    )
    assert report["Results"][0]["Vulnerabilities"][0]["VulnerabilityID"] == "CVE-1"


@pytest.mark.parametrize(
    ("label", "validation", "sign", "findings", "passed", "reason"),
    [
        ("unsigned", {"signature": {}}, None, None, False, "signature: no cosign or Notation"),
        (
            "cosign presence",
            {"signature": {"type": "cosign"}},
            "cosign",
            None,
            True,
            "presence only",
        ),
        ("cosign verified", {"signature": {"publicKey": "KEY"}}, "cosign", None, True, "verified"),
        (
            "cosign referrer",
            {"signature": {"publicKey": "KEY"}},
            "cosign-ref",
            None,
            True,
            "verified",
        ),
        (
            "notation verified",
            {"signature": {"type": "notation", "publicKey": "KEY"}},
            "notation",
            None,
            True,
            "notation signature verified",
        ),
        (
            "wrong key",
            {"signature": {"publicKey": "OTHER"}},
            "cosign",
            None,
            False,
            "does not verify",
        ),
        (
            "notation only, cosign wanted",
            {"signature": {"type": "cosign"}},
            "notation",
            None,
            False,
            "no cosign signature",
        ),
        (
            "critical finding",
            {"vulnerabilities": {"maxSeverity": "HIGH"}},
            None,
            [("CVE-9", "CRITICAL")],
            False,
            "worst CRITICAL: CVE-9",
        ),
        (
            "high allowed",
            {"vulnerabilities": {"maxSeverity": "HIGH"}},
            None,
            [("CVE-8", "HIGH")],
            True,
            "no finding above HIGH",
        ),
        (
            "ignored",
            {"vulnerabilities": {"maxSeverity": "LOW", "ignore": [{"id": "CVE-8"}]}},
            None,
            [("CVE-8", "HIGH")],
            True,
            "no finding above LOW",
        ),
        (
            "no report",
            {"vulnerabilities": {"source": "referrer"}},
            None,
            None,
            False,
            "no Trivy or SARIF report",
        ),
    ],
)
def test_gates_against_the_registry(
    client: OciRegistryClient,
    registry_repo: str,
    label: str,
    validation: dict[str, object],
    sign: str | None,
    findings: list[tuple[str, str]] | None,
    passed: bool,
    reason: str,
) -> None:
    digest = push(client, registry_repo, base_image(f"gates-{label}"), "1")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    if sign == "cosign":
        cosign_sign(client, registry_repo, digest, key)
    elif sign == "cosign-ref":
        cosign_sign(client, registry_repo, digest, key, as_referrer=True)
    elif sign == "notation":
        notation_sign(client, registry_repo, digest, key)
    if findings is not None:
        attach_report(client, registry_repo, digest, trivy_report(digest, findings))
    text = (
        json.dumps(validation)
        .replace('"KEY"', json.dumps(_pem(key)))
        .replace('"OTHER"', json.dumps(_pem(other)))
    )
    policy = _policy(json.loads(text))
    ref = ImageRef(client.host, registry_repo, "", digest)
    verdict = validate(policy, ref, LINEAGE, "proven", GateIO(client, object(), datetime.now(UTC)))  # type: ignore[arg-type]
    assert verdict.passed is passed, verdict.reasons
    assert any(reason in r for r in verdict.reasons), verdict.reasons
