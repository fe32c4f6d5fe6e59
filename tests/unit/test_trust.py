"""A private CA bundle adds to the system roots; it never replaces them."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import cast

from imagedrift.registry.oci import _ssl_context
from imagedrift.registry.trust import with_system_roots
from tests.harness.tlsca import make_test_ca


def private_ca(path: Path) -> Path:
    return make_test_ca(path.parent / "private-ca").ca_cert


# A certificate's "subject" as ssl decodes it: relative distinguished names, each a tuple of
# (attribute, value) pairs (typeshed types every key of the dict as the union of all shapes).
Subject = tuple[tuple[tuple[str, str], ...], ...]


def subjects(context: ssl.SSLContext) -> list[str]:
    return [
        str(dict(x[0] for x in cast(Subject, c["subject"])).get("commonName", ""))
        for c in context.get_ca_certs()
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
    assert "imagedrift test CA" in names
    assert len(names) > 10, "the public roots are still trusted"
    assert with_system_roots(ca, str(tmp_path)) == combined, "written once, same path"


def test_the_registry_client_context_adds_the_bundle_to_the_defaults(tmp_path: Path) -> None:
    ca = private_ca(tmp_path / "ca.pem")
    context = _ssl_context(ca)
    assert isinstance(context, ssl.SSLContext)
    names = subjects(context)
    assert "imagedrift test CA" in names
    default = ssl.create_default_context()
    assert len(names) >= len(default.get_ca_certs()) + 1
