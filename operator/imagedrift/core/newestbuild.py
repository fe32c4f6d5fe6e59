"""Argo CD Image Updater's ``newest-build``: the tag whose image was built last.

Upstream (``registry-scanner/pkg/tag/tag.go`` ``SortByDate``, and
argocd-image-updater.readthedocs.io, "Update strategies"): tags are ordered by the
``created`` time in the image configuration (the build time, not the push time), equal
times by tag name, the greater name newest; a tag whose configuration has no parseable
``created`` is left out. Reading a configuration per tag costs a manifest and a blob request
each, which is why upstream recommends narrowing the tags with ``allowTags``.

imagedrift reads the build times itself (through its image cache, so an image is read once)
for the tags left after ``exclusionList``/``ignoreTags``/``allowTags``, and at most
``MAX_TAGS`` of them: beyond that the policy fails closed with a reason asking for a
narrower ``allowTags``, where upstream would read every tag on every check.

Pure once built: ``with_times`` gives a policy over known build times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.images import ResolvedImage
from imagedrift.core.tagpolicy import NewestFirst
from imagedrift.errors import TagPolicyFailed

__all__ = ["MAX_TAGS", "NewestBuildPolicy", "build_time"]

MAX_TAGS: Final = 100


def build_time(image: ResolvedImage) -> datetime | None:
    """When ``image`` was built: its config's ``created``; for an index the latest of its
    images' (as upstream takes the latest of the platforms it reads)."""
    times = [t for m in image.manifests if (t := parse_timestamp(m.created)) is not None]
    return max(times) if times else None


class NewestBuildPolicy(NewestFirst):
    """Tags ordered by build time, newest first; needs ``with_times`` before it orders."""

    __slots__ = ("times",)

    def __init__(self, times: Mapping[str, datetime | None] | None = None) -> None:
        self.times: Mapping[str, datetime | None] | None = times

    def with_times(self, times: Mapping[str, datetime | None]) -> NewestBuildPolicy:
        """This policy over ``times`` (tag -> build time, None when the image has none)."""
        return NewestBuildPolicy(times)

    @staticmethod
    def too_many(count: int) -> str:
        return (
            f"newestBuild: {count} tags are left to read build times from, more than "
            f"{MAX_TAGS}; narrow them with spec.app.allowTags (or ignoreTags)"
        )

    def _time(self, tag: str) -> datetime | None:
        if self.times is None:
            raise TagPolicyFailed("newestBuild: the build times were not read")
        return self.times.get(tag)

    def skip_reason(self, tag: str) -> str | None:
        if self.times is not None and tag not in self.times:
            return "its build time was not read"
        return None if self._time(tag) is not None else "its image has no build time (created)"

    def ordered(self, tags: Iterable[str]) -> list[str]:
        keyed = [(t, tag) for tag in dict.fromkeys(tags) if (t := self._time(tag)) is not None]
        keyed.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [tag for _, tag in keyed]

    def is_downgrade(self, candidate: str, current: str) -> bool:
        new = self._time(candidate)
        if new is None:
            return True
        old = self._time(current)
        if old is None:
            return False
        return new < old

    def describe(self) -> str:
        return "newestBuild"
