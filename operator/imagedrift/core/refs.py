"""Image references and digests as values.

Parsing follows the distribution reference grammar closely enough for what workloads
carry: ``[registry[:port]/]repository[:tag][@sha256:hex]``. A first component counts as a
registry host when it has a dot or a colon or is ``localhost``, as Docker decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagedrift.errors import InvalidReference

DOCKER_HUB = "docker.io"
# Used with fullmatch: "$" would also match before a final newline ("1.0\n" a tag).
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def is_digest(value: str) -> bool:
    """True when ``value`` is a sha256 or sha512 content digest."""
    return bool(_DIGEST_RE.fullmatch(value))


def is_tag(value: str) -> bool:
    """True when ``value`` is a valid tag (distribution's tag grammar)."""
    return bool(_TAG_RE.fullmatch(value))


def short_digest(digest: str, length: int = 12) -> str:
    """``sha256:0123456789ab`` style abbreviation for humans; empty stays empty."""
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:length]}"


@dataclass(frozen=True, order=True)
class ImageRef:
    """A parsed image reference. ``tag`` and ``digest`` may each be empty."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``text``; raise InvalidReference with the reason when it is not a reference."""
        original = text
        text = text.strip()
        if not text:
            raise InvalidReference("empty image reference")
        digest = ""
        if "@" in text:
            text, digest = text.split("@", 1)
            if not is_digest(digest):
                raise InvalidReference(f"{original!r}: {digest!r} is not a sha256/sha512 digest")
        tag = ""
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not is_tag(tag):
                raise InvalidReference(f"{original!r}: {tag!r} is not a valid tag")
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, text
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        for component in repository.split("/"):
            if not _COMPONENT_RE.fullmatch(component):
                raise InvalidReference(
                    f"{original!r}: repository component {component!r} is not lowercase "
                    "letters, digits and separators"
                )
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag (``latest``)."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        """The same repository pinned to ``digest`` (the tag is dropped: digest wins)."""
        return ImageRef(self.registry, self.repository, "", digest)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, "")

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
