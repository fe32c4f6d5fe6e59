"""Which certificate authorities outgoing TLS trusts: the system's, plus a private CA.

``IMAGEDRIFT_CA_BUNDLE`` names a private CA (a registry behind a corporate CA, a proxy).
Passing it to an HTTP client as *the* bundle would replace the system roots, and every
public registry and Entra ID would then fail to verify. So the operator writes one
combined bundle at startup: the system roots (the OS bundle OpenSSL uses, and certifi's,
which the Azure SDK's transport uses) followed by the private CA, and gives that path to
every client (httpx and the Azure SDK alike).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from pathlib import Path


def _system_bundles() -> list[Path]:
    found: list[Path] = []
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and os.path.isfile(cafile):
        found.append(Path(cafile))
    try:
        import certifi

        found.append(Path(certifi.where()))
    except ImportError:  # pragma: no cover - requests (azure-core's transport) brings it
        pass
    return found


def with_system_roots(extra: str | Path | None, directory: str | None = None) -> str | bool:
    """The path of a bundle holding the system roots and ``extra``; True (the system roots
    alone) without ``extra``. Raises OSError when ``extra`` cannot be read."""
    if not extra:
        return True
    private = Path(extra).read_bytes()
    parts = [p.read_bytes() for p in _system_bundles()]
    combined = b"\n".join(part.rstrip() for part in [*parts, private]) + b"\n"
    name = f"imagedrift-ca-{hashlib.sha256(combined).hexdigest()[:16]}.pem"
    target = Path(directory or tempfile.gettempdir()) / name
    if not target.exists():
        partial = target.with_suffix(".tmp")
        partial.write_bytes(combined)
        partial.replace(target)  # atomic: a concurrent reader never sees half a bundle
    return str(target)
