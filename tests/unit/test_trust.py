"""A private CA bundle adds to the system roots; it never replaces them."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagedrift.registry.oci import _ssl_context
from imagedrift.registry.trust import with_system_roots


def private_ca(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagedrift test private CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def subjects(context: ssl.SSLContext) -> list[str]:
    return [
        str(dict(x[0] for x in c["subject"]).get("commonName", "")) for c in context.get_ca_certs()
    ]


def test_without_a_bundle_the_system_roots_alone(tmp_path: Path) -> None:
    assert with_system_roots(None, str(tmp_path)) is True
    assert with_system_roots("", str(tmp_path)) is True


def test_the_combined_bundle_holds_the_system_roots_and_the_private_ca(tmp_path: Path) -> None:
    ca = private_ca(tmp_path / "ca.pem")
    combined = with_system_roots(ca, str(tmp_path))
    assert isinstance(combined, str)
    context = ssl.create_default_context(cafile=combined)
    names = subjects(context)
    assert "imagedrift test private CA" in names
    assert len(names) > 10, "the public roots are still trusted"
    assert with_system_roots(ca, str(tmp_path)) == combined, "written once, same path"


def test_the_registry_client_context_adds_the_bundle_to_the_defaults(tmp_path: Path) -> None:
    ca = private_ca(tmp_path / "ca.pem")
    context = _ssl_context(ca)
    assert isinstance(context, ssl.SSLContext)
    names = subjects(context)
    assert "imagedrift test private CA" in names
    default = ssl.create_default_context()
    assert len(names) >= len(default.get_ca_certs()) + 1
