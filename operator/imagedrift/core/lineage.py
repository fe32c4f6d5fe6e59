"""Which base digest an application image was built on.

Sources, in order of trust: the OCI annotations ``org.opencontainers.image.base.digest`` /
``.base.name`` on the manifest or index, the same keys as image config labels, and last
layer-prefix matching (the base's layers are the first layers of the app image), which
works for images no build tool annotated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from imagedrift.core.conditions import parse_timestamp, timestamp
from imagedrift.core.images import ImageManifest, Platform, ResolvedImage
from imagedrift.core.refs import short_digest

BASE_DIGEST_KEY = "org.opencontainers.image.base.digest"
BASE_NAME_KEY = "org.opencontainers.image.base.name"
# Copacetic (ACR continuous patching) sets this, an RFC 3339 time, on an image it patched in
# place: the original's layers and annotations plus one layer of OS package updates. The
# base annotations still name the original base, rightly: the base was not rebuilt.
COPA_PATCHED_KEY = "sh.copa.image.patched"


class Source(StrEnum):
    ANNOTATION = "annotation"
    LABEL = "label"
    LAYERS = "layers"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BaseDigest:
    """One known digest of the tracked base: its index (or sole manifest) digest, plus
    the per-platform manifests with their layers."""

    digest: str
    platforms: Mapping[Platform | None, ImageManifest]

    @classmethod
    def of(cls, image: ResolvedImage) -> BaseDigest:
        return cls(
            image.digest, {m.platform if image.is_index else None: m for m in image.manifests}
        )

    def digests(self) -> set[str]:
        return {self.digest, *(m.digest for m in self.platforms.values())}

    def layers_for(self, platform: Platform | None) -> tuple[str, ...] | None:
        if None in self.platforms:  # a single-platform base serves every app platform
            return self.platforms[None].layers
        manifest = self.platforms.get(platform)
        return manifest.layers if manifest else None


@dataclass(frozen=True)
class PlatformLineage:
    platform: str
    app_digest: str
    base_digest: str  # the base index/manifest digest it maps to, "" when unknown
    source: Source
    base_name: str = ""


@dataclass(frozen=True)
class Lineage:
    """Where an app image came from. ``base_digest`` is the known base digest every
    platform agrees on, or "" when unknown or when platforms disagree."""

    app_digest: str
    base_digest: str
    source: Source
    base_name: str
    platforms: tuple[PlatformLineage, ...]
    reason: str
    patched_at: str = ""  # when Copa patched it in place ("" = not a patched image)

    @property
    def known(self) -> bool:
        return bool(self.base_digest)


def _patched_at(app: ResolvedImage) -> str:
    """Copa's mark, from the index or manifest annotations or a config label."""
    for values in (
        app.annotations,
        *(m.annotations for m in app.manifests),
        *(m.labels for m in app.manifests),
    ):
        if values.get(COPA_PATCHED_KEY):
            return str(values[COPA_PATCHED_KEY])
    return ""


def _match_declared(declared: str, known: Iterable[BaseDigest]) -> str:
    """Map a declared base digest (index or platform manifest) to the base's top digest."""
    for base in known:
        if declared in base.digests():
            return base.digest
    return ""


def _declared(values: Mapping[str, str]) -> tuple[str, str]:
    return values.get(BASE_DIGEST_KEY, ""), values.get(BASE_NAME_KEY, "")


def _platform_lineage(
    manifest: ImageManifest,
    inherited: tuple[str, str, Source],
    known: list[BaseDigest],
) -> PlatformLineage:
    platform = str(manifest.platform) if manifest.platform else ""
    for values, source in (
        (manifest.annotations, Source.ANNOTATION),
        (manifest.labels, Source.LABEL),
    ):
        digest, name = _declared(values)
        if digest:
            return PlatformLineage(
                platform, manifest.digest, _match_declared(digest, known) or digest, source, name
            )
    if inherited[0]:
        digest, name, source = inherited
        return PlatformLineage(
            platform, manifest.digest, _match_declared(digest, known) or digest, source, name
        )
    for base in known:
        layers = base.layers_for(manifest.platform)
        if (
            layers
            and manifest.layers[: len(layers)] == layers
            and len(manifest.layers) >= len(layers)
        ):
            return PlatformLineage(platform, manifest.digest, base.digest, Source.LAYERS)
    return PlatformLineage(platform, manifest.digest, "", Source.UNKNOWN)


def trace(app: ResolvedImage, known: Iterable[BaseDigest]) -> Lineage:
    """Trace ``app`` to one of the ``known`` base digests (newest first is best).

    A declared digest that matches no known base is still reported (it is evidence that
    the app was built on *some other* base digest); layer matching only ever reports
    known bases.
    """
    known = list(known)
    top_digest, top_name = _declared(app.annotations)
    inherited = (top_digest, top_name, Source.ANNOTATION)
    per_platform = tuple(_platform_lineage(m, inherited, known) for m in app.manifests)
    patched = _patched_at(app)
    if not per_platform:
        return Lineage(app.digest, "", Source.UNKNOWN, "", (), "image has no manifests")
    bases = {p.base_digest for p in per_platform}
    names = {p.base_name for p in per_platform if p.base_name}
    sources = {p.source for p in per_platform}
    source = sources.pop() if len(sources) == 1 else Source.UNKNOWN
    name = names.pop() if len(names) == 1 else ""
    if len(bases) != 1 or "" in bases:
        unknown = [p.platform or "image" for p in per_platform if not p.base_digest]
        reason = (
            "no base annotation, label or layer prefix matches a known base digest "
            f"({', '.join(unknown)})"
            if unknown
            else "platforms were built on different base digests"
        )
        return Lineage(app.digest, "", Source.UNKNOWN, name, per_platform, reason, patched)
    base_digest = bases.pop()
    return Lineage(
        app.digest,
        base_digest,
        source,
        name,
        per_platform,
        f"base {base_digest} by {source.value}",
        patched,
    )


def built_on(lineage: Lineage, base: BaseDigest, base_repository: str) -> tuple[bool, str]:
    """Is the traced image proven to sit on ``base``? Returns (verdict, reason)."""
    if (
        lineage.base_name
        and base_repository
        and not _same_repository(lineage.base_name, base_repository)
    ):
        return False, f"built on a different base image {lineage.base_name!r}"
    if not lineage.known:
        return False, f"lineage unknown: {lineage.reason}"
    if lineage.base_digest not in base.digests():
        return False, f"built on base digest {lineage.base_digest}, not the current {base.digest}"
    return True, f"built on the current base {base.digest} (by {lineage.source.value})"


def remediated_in_place(
    lineage: Lineage, base_changed_at: datetime | None, accept: bool
) -> tuple[bool, str]:
    """Does a Copa-patched image (not built on the current base) count as remediated?

    Only with the policy's ``acceptPatched``, and only when it was patched after the base
    changed (a patch older than the new base cannot hold its fixes). It never counts as
    built on the new base: the reason says "patched in place" and names the base it is on.
    """
    when = parse_timestamp(lineage.patched_at)
    built = f"built on base digest {short_digest(lineage.base_digest) or 'unknown'}"
    if when is None:
        return False, f"{built}; its patch mark {lineage.patched_at!r} is not a time"
    said = f"patched in place at {lineage.patched_at} (Copa), {built}"
    if not accept:
        return False, f"{said}: not rebuilt on the current base (spec.app.acceptPatched is off)"
    if base_changed_at is None:
        return False, f"{said}: the base's change time is unknown, so the patch cannot be dated"
    if when < base_changed_at:
        return False, f"{said}: older than the current base ({timestamp(base_changed_at)})"
    return True, f"{said}: accepted as remediated (acceptPatched)"


def _same_repository(base_name: str, repository: str) -> bool:
    """Compare an annotated ``base.name`` (may carry a tag or digest) to a repository."""
    name = base_name.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name == repository or name.endswith("/" + repository) or repository.endswith("/" + name)
