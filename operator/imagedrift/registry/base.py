"""The one I/O boundary every registry backend implements.

A backend turns its SDK's or HTTP library's failures into ``imagedrift.errors`` and does
nothing else: caching, deduplication and decisions live above it. Manifests addressed by
digest are immutable, so callers may cache ``get_image`` results by digest forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef


@dataclass(frozen=True)
class Credentials:
    """Username/password (or token as password) for basic or bearer-token auth.

    ``identity`` is what error messages name (e.g. ``secret ns/name`` or ``anonymous``).
    """

    username: str = ""
    password: str = ""
    identity: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        return not self.username and not self.password


ANONYMOUS = Credentials()


@dataclass(frozen=True)
class TagInfo:
    """Tag metadata a backend may know beyond the digest (ACR does)."""

    name: str
    digest: str = ""
    last_updated: str = ""
    signed: bool | None = None
    quarantine_state: str = ""


@runtime_checkable
class TagFacts(Protocol):
    """A backend that knows more about a tag than its digest (ACR: quarantine, signed)."""

    def tag_info(self, ref: ImageRef) -> TagInfo: ...


class RegistryClient(Protocol):
    """One registry host. All methods raise ``imagedrift.errors.RegistryError`` subclasses."""

    host: str

    def resolve_digest(self, ref: ImageRef) -> str:
        """The digest ``ref`` points at now (a tag lookup costs one request)."""
        ...

    def get_image(self, ref: ImageRef) -> ResolvedImage:
        """Manifest (or index and its platform manifests) plus each image config's labels."""
        ...

    def list_tags(self, ref: ImageRef) -> list[str]:
        """Every tag of ``ref``'s repository (all pages)."""
        ...

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        """Raw manifest bytes, media type and digest for ``ref`` (tag or digest)."""
        ...

    def get_blob(self, ref: ImageRef, digest: str) -> bytes:
        """A blob of ``ref``'s repository, verified against ``digest``."""
        ...

    def close(self) -> None: ...
