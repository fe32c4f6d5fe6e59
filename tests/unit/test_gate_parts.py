"""Table tests of signature verification, gate spec parsing, and the referrers API path."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imagedrift.core import signatures as sig
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import parse_policy
from imagedrift.errors import InvalidSpec
from imagedrift.registry.oci import OciRegistryClient, sha256_digest
from imagedrift.registry.push import cosign_payload
from imagedrift.registry.referrers import list_referrers

DIGEST = "sha256:" + "a" * 64
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cosign_sig(key: PrivateKey, payload: bytes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        raw = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(payload)
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("label", "signer", "verifier", "signed_for", "payload_override", "ok", "reason"),
    [
        ("ecdsa", EC, EC, DIGEST, None, True, "verified"),
        ("ed25519", ED, ED, DIGEST, None, True, "verified"),
        ("rsa pkcs1v15", RSA, RSA, DIGEST, None, True, "verified"),
        ("other key", EC, ED, DIGEST, None, False, "does not verify"),
        ("signed for another digest", EC, EC, "sha256:" + "b" * 64, None, False, "not sha256:aaa"),
        ("payload without digest", EC, EC, DIGEST, b'{"critical":{}}', False, "no critical.image"),
    ],
)
def test_verify_cosign(
    label: str,
    signer: PrivateKey,
    verifier: PrivateKey,
    signed_for: str,
    payload_override: bytes | None,
    ok: bool,
    reason: str,
) -> None:
    payload = payload_override or cosign_payload("r/app", signed_for)
    check = sig.verify_cosign(payload, cosign_sig(signer, payload), pem(verifier), DIGEST)
    assert check.ok is ok and reason in check.reason, check.reason


def test_a_certificate_stands_for_its_public_key() -> None:
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(EC.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(EC, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    payload = cosign_payload("r/app", DIGEST)
    assert sig.verify_cosign(payload, cosign_sig(EC, payload), cert_pem, DIGEST).ok
    other = sig.verify_cosign(payload, cosign_sig(EC, payload), cert_pem, "sha256:" + "c" * 64)
    assert not other.ok


def test_bad_public_key_and_signature_are_reasons_not_errors() -> None:
    payload = cosign_payload("r/app", DIGEST)
    assert "not a PEM public key" in sig.verify_cosign(payload, "AA==", "nope", DIGEST).reason
    assert not sig.verify_cosign(payload, "***", pem(EC), DIGEST).ok
    assert "does not parse" in sig.verify_notation_jws(b"{}", pem(EC), DIGEST).reason


VALID = {"base": {"image": "r.example/base", "tag": "1"}}


@pytest.mark.parametrize(
    ("label", "extra", "message"),
    [
        ("bad wave", {"rollout": {"waves": [{"count": 1, "percent": 5}]}}, r"waves\[0\]"),
        (
            "bad cron",
            {"rollout": {"maintenanceWindows": [{"schedule": "nope", "duration": "1h"}]}},
            "schedule",
        ),
        (
            "bad zone",
            {
                "rollout": {
                    "maintenanceWindows": [
                        {"schedule": "0 2 * * *", "duration": "1h", "timeZone": "Mars/Base"}
                    ]
                }
            },
            "unknown time zone",
        ),
        (
            "bad severity",
            {"validation": {"vulnerabilities": {"maxSeverity": "SEVERE"}}},
            "maxSeverity",
        ),
        (
            "bad expiry",
            {"validation": {"vulnerabilities": {"ignore": [{"id": "C", "expires": "soon"}]}}},
            "expires",
        ),
        (
            "smoke without containers",
            {"validation": {"smokeTest": {"template": {}}}},
            "smokeTest.template",
        ),
        (
            "smoke container missing",
            {
                "validation": {
                    "smokeTest": {
                        "container": "x",
                        "template": {"template": {"spec": {"containers": [{"name": "a"}]}}},
                    }
                }
            },
            "no container 'x'",
        ),
        (
            "smoke test in another namespace",
            {
                "validation": {
                    "smokeTest": {
                        "namespace": "default",
                        "template": {"template": {"spec": {"containers": [{"name": "a"}]}}},
                    }
                }
            },
            r"smokeTest\.namespace: smoke tests run in the operator's sandbox",
        ),
        (
            "smoke test as another account",
            {
                "validation": {
                    "smokeTest": {
                        "template": {
                            "template": {
                                "spec": {
                                    "serviceAccountName": "imagedrift",
                                    "containers": [{"name": "a"}],
                                }
                            }
                        },
                    }
                }
            },
            r"template\.spec\.serviceAccountName: smoke tests run as the sandbox",
        ),
    ],
)
def test_invalid_gate_and_rollout_specs(label: str, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_policy("p", {**VALID, **extra})


def test_gate_and_rollout_specs_parse() -> None:
    policy = parse_policy(
        "p",
        {
            **VALID,
            "rollout": {
                "waves": [{"count": 1}, {"percent": 50}],
                "pauseBetweenWaves": "1m",
                "maxConcurrent": 3,
                "maintenanceWindows": [
                    {"schedule": "0 2 * * 1-5", "duration": "2h", "timeZone": "Europe/Paris"}
                ],
            },
            "validation": {
                "signature": {"type": "cosign"},
                "vulnerabilities": {
                    "maxSeverity": "medium",
                    "maxReportAge": "24h",
                    "ignore": [{"id": "CVE-1", "expires": "2030-01-01T00:00:00Z"}],
                },
                "smokeTest": {
                    "timeout": "90s",
                    "template": {"template": {"spec": {"containers": [{"name": "t"}]}}},
                },
            },
        },
    )
    r, v = policy.rollout, policy.validation
    assert [(w.count, w.percent) for w in r.waves] == [(1, 0), (0, 50)]
    assert (r.pause_between_waves, r.max_concurrent) == (60.0, 3)
    assert r.maintenance_windows[0].time_zone == "Europe/Paris"
    assert v.signature is not None and v.signature.type == "cosign"
    assert v.vulnerabilities is not None and v.vulnerabilities.max_severity == "MEDIUM"
    assert v.vulnerabilities.max_report_age == 86400.0
    assert v.vulnerabilities.ignore[0].expires is not None
    assert v.smoke_test is not None and v.smoke_test.timeout == 90.0


def test_referrers_api_is_used_when_the_registry_has_it() -> None:
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.notary.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json"},
            "layers": [{"mediaType": "application/jose+json", "digest": "sha256:ee", "size": 1}],
        }
    ).encode()
    artifact_digest = sha256_digest(artifact)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == f"/v2/app/referrers/{DIGEST}":
            index = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"digest": artifact_digest, "artifactType": "x"}],
            }
            return httpx.Response(
                200,
                json=index,
                headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
            )
        if request.url.path == f"/v2/app/manifests/{artifact_digest}":
            return httpx.Response(
                200,
                content=artifact,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    client = OciRegistryClient("r.example", transport=httpx.MockTransport(handler))
    found = list_referrers(client, ImageRef("r.example", "app", "", DIGEST))
    assert [(r.digest, r.artifact_type, r.found_by) for r in found] == [
        (artifact_digest, "application/vnd.cncf.notary.signature", "referrers API")
    ]
    assert f"/v2/app/manifests/sha256-{'a' * 64}" not in seen, "tag schema not needed"
    assert f"/v2/app/manifests/sha256-{'a' * 64}.sig" in seen, "cosign .sig tag still looked at"
