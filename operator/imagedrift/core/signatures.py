"""Verifying a cosign or Notation signature with a public key, over bytes already fetched.

- cosign: the signature (base64, from the layer annotation ``dev.cosignproject.cosign/signature``)
  is over the simple-signing JSON payload (the layer blob); the payload's
  ``critical.image.docker-manifest-digest`` must be the candidate's digest.
- Notation (JWS envelope, ``application/jose+json``): the signature is over
  ``<protected>.<payload>``; the payload's ``targetArtifact.digest`` must be the candidate's
  digest. Only the key is checked: Notation's trust policy and certificate chains (x5c)
  are not evaluated. COSE envelopes are not verified (reported as such).

Keys: ECDSA (P-256/384/521), Ed25519 and RSA (PKCS#1 v1.5 for cosign, PSS for Notation).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
NOTATION_JWS = "application/jose+json"
NOTATION_COSE = "application/cose"


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str


def load_public_key(pem: str) -> object:
    """The key in ``pem`` (a public key, or a certificate whose key is used); ValueError
    when it is neither, or of an unsupported type. Certificate chains are not evaluated."""
    try:
        if "BEGIN CERTIFICATE" in pem:
            key: object = x509.load_pem_x509_certificate(pem.encode()).public_key()
        else:
            key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"publicKey is not a PEM public key or certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ValueError(f"publicKey type {type(key).__name__} is not supported")
    return key


def _hash_for(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    return {256: hashes.SHA256(), 384: hashes.SHA384()}.get(key.curve.key_size, hashes.SHA512())


def verify_cosign(payload: bytes, signature_b64: str, public_key: str, digest: str) -> Check:
    """Is ``signature_b64`` a valid cosign signature by ``public_key`` for ``digest``?"""
    try:
        key = load_public_key(public_key)
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        return Check(False, str(exc))
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return Check(False, "cosign signature does not verify with the policy's publicKey")
    try:
        signed = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return Check(False, "cosign payload has no critical.image.docker-manifest-digest")
    if signed != digest:
        return Check(False, f"cosign signature is for {signed}, not {digest}")
    return Check(True, "cosign signature verified with the policy's publicKey")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_notation_jws(envelope: bytes, public_key: str, digest: str) -> Check:
    """Is the Notation JWS ``envelope`` signed by ``public_key`` over ``digest``?"""
    try:
        key = load_public_key(public_key)
        jws = json.loads(envelope)
        protected_b64, payload_b64 = str(jws["protected"]), str(jws["payload"])
        header = json.loads(_b64url(protected_b64))
        signature = _b64url(str(jws["signature"]))
        payload = json.loads(_b64url(payload_b64))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return Check(False, f"notation envelope does not parse: {exc}")
    alg = str(header.get("alg", ""))
    signing_input = f"{protected_b64}.{payload_b64}".encode()
    algorithms = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
    try:
        if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, signing_input, ec.ECDSA(algorithms.get(alg[2:], _hash_for(key))))
        elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            algorithm = algorithms.get(alg[2:], hashes.SHA256())
            key.verify(
                signature,
                signing_input,
                padding.PSS(padding.MGF1(algorithm), algorithm.digest_size),
                algorithm,
            )
        elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signing_input)
        else:
            return Check(False, f"notation alg {alg!r} does not match the publicKey's type")
    except InvalidSignature:
        return Check(False, "notation signature does not verify with the policy's publicKey")
    signed = str((payload.get("targetArtifact") or {}).get("digest", ""))
    if signed != digest:
        return Check(False, f"notation signature is for {signed or 'nothing'}, not {digest}")
    return Check(True, "notation signature verified with the policy's publicKey")
