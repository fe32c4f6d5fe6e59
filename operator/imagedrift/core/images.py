"""What the registry told us about an image, as plain values the core decides on."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagedrift.core.refs import ImageRef


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not os/arch[/variant]")
        return cls(*parts)

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out


@dataclass(frozen=True)
class ImageManifest:
    """One platform's image manifest, with what lineage needs from it and its config."""

    digest: str
    media_type: str
    config_digest: str
    layers: tuple[str, ...]
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    platform: Platform | None = None
    created: str = ""


@dataclass(frozen=True)
class ResolvedImage:
    """An image at one digest: a single manifest, or an index with one manifest per platform.

    ``annotations`` are the top-level ones (the index's for a multi-arch image, the
    manifest's otherwise). ``manifests`` holds the image manifests (attestation and other
    non-image entries of an index are left out).
    """

    ref: ImageRef
    digest: str
    media_type: str
    manifests: tuple[ImageManifest, ...]
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_index(self) -> bool:
        return "index" in self.media_type or "manifest.list" in self.media_type

    def for_platform(self, platform: Platform | None) -> ImageManifest | None:
        """The manifest for ``platform``; for a single-manifest image, that manifest."""
        if not self.is_index:
            return self.manifests[0] if self.manifests else None
        for manifest in self.manifests:
            if manifest.platform == platform:
                return manifest
        return None
