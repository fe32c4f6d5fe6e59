"""Registry mirrors: the host imagedrift contacts instead of the one a reference names.

Clusters that pull Docker Hub images through a mirror (containerd's ``hosts.toml``, a
pull-through cache) keep short references such as ``nginx:1.25`` in their pod templates;
those mean ``docker.io/library/nginx:1.25``, and imagedrift must read them where the nodes
pull them. ``IMAGEDRIFT_REGISTRY_MIRRORS`` maps a registry host to its mirror:
``docker.io=mirror.example.com,ghcr.io=http://127.0.0.1:5000``. A mirror is HTTPS unless
its value says ``http://``, and it serves the same repository paths (``library/nginx``).
References, lineage and status keep the names the workloads use; only the requests go to
the mirror. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imagedrift.errors import InvalidReference

__all__ = ["Mirror", "parse_mirrors"]

_HOST: Final = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?")


@dataclass(frozen=True)
class Mirror:
    host: str
    scheme: str = "https"


def parse_mirrors(text: str) -> dict[str, Mirror]:
    """``host=mirror`` pairs separated by commas; InvalidReference names a bad pair."""
    mirrors: dict[str, Mirror] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        source, sep, target = (part.strip() for part in pair.partition("="))
        scheme = "https"
        for prefix in ("https://", "http://"):
            if target.startswith(prefix):
                scheme, target = prefix[:-3], target[len(prefix) :]
        target = target.rstrip("/")
        if not sep or not _HOST.fullmatch(source) or not _HOST.fullmatch(target):
            raise InvalidReference(
                f"registry mirror {pair!r}: write host=mirror-host[:port] "
                "(optionally http:// before the mirror)"
            )
        if source in mirrors:
            raise InvalidReference(f"registry mirror for {source} is given twice")
        mirrors[source] = Mirror(target, scheme)
    return mirrors
