"""Keel's update policies, judged relative to the tag a workload runs.

Keel (keel-hq/keel, ``internal/policy/semver.go``, ``force.go``; documented at
keel.sh/docs/#policies) decides "should ``current`` move to ``new``?"; imagedrift asks
the same question of every listed tag and takes the highest version that may move, as
Keel's poll trigger does (``trigger/poll/multi_tags_watcher.go``: tags sorted by version,
newest first, the first that should update wins).

Levels (``keel: {level: ..., matchPreRelease: ...}``):

``all``
    Any higher version, pre-releases included, whatever the running pre-release.
``major``
    Any higher version. Keel's ``major`` differs from ``all`` only in honouring
    ``matchPreRelease``.
``minor``
    A higher version with the same major (patch bumps included).
``patch``
    A higher version with the same major and minor.

``matchPreRelease`` (default true, as in Keel): except under ``all``, a version moves only
to one whose pre-release is exactly the running one's (``1.4.5-xx`` to ``1.4.6-xx`` yes,
``1.4.5`` to ``1.5.0-rc.1`` no, ``1.2.3-rc.1`` to ``1.2.3-rc.2`` no: Keel compares the whole
string). Versions parse as Keel's do (Masterminds ``NewVersion``: optional ``v``, two or
three numbers; a single number such as ``3050`` is not a version). A running ``latest``
may move to any version, as in Keel. Any other running tag that is not a version moves
nowhere: Keel errors on it.

``force: {matchTag: ...}``: Keel's ``force``. With ``matchTag`` only the running tag itself
(re-pushed, a new digest) is a candidate. Without it, a running version moves to any
higher version, any level, pre-releases included (Keel since keel-hq/keel#901 never lets
force go down between versions); a running tag that is not a version is followed by
digest only, which is what Keel's poll trigger watches for it.

In every policy the running tag itself stays a candidate: a rebuild re-pushed under the
same tag is what imagedrift exists to roll. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cmp_to_key
from typing import Final

import semver

from imagedrift.core.tagpolicy import NewestFirst, TagPolicy, parse_version
from imagedrift.errors import InvalidReference

__all__ = ["LEVELS", "ForcePolicy", "KeelPolicy"]

LEVELS: Final = ("all", "major", "minor", "patch")


def keel_version(tag: str) -> semver.Version | None:
    """A version as Keel reads one: two or three dot-separated numbers (optional ``v``)."""
    if tag.count(".") < 1 or tag.split("+", 1)[0].split("-", 1)[0].count(".") > 2:
        return None
    return parse_version(tag)


def _newer_first(found: list[tuple[semver.Version, str]]) -> list[str]:
    def cmp(a: tuple[semver.Version, str], b: tuple[semver.Version, str]) -> int:
        return -(int(a[0].compare(b[0])) or (a[1] > b[1]) - (a[1] < b[1]))

    return [tag for _, tag in sorted(found, key=cmp_to_key(cmp))]


class _Unanchored(NewestFirst):
    """A Keel policy before it knows the running tag: nothing is eligible yet."""

    __slots__ = ()

    def relative_to(self, current: str) -> TagPolicy:
        raise NotImplementedError

    def skip_reason(self, tag: str) -> str | None:
        return f"{self.describe()} is judged against the running tag"

    def ordered(self, tags: Iterable[str]) -> list[str]:
        return []

    def is_downgrade(self, candidate: str, current: str) -> bool:
        return self.relative_to(current).is_downgrade(candidate, current)

    def describe(self) -> str:
        raise NotImplementedError


class _Anchored(NewestFirst):
    """A Keel policy for a workload running ``current``: the tags ``skip_reason`` passes,
    versions newest first, then the running tag when it is no version (its digest)."""

    __slots__ = ("current",)

    def __init__(self, current: str) -> None:
        self.current = current

    @staticmethod
    def parse(tag: str) -> semver.Version | None:
        return keel_version(tag)

    def skip_reason(self, tag: str) -> str | None:
        raise NotImplementedError

    def ordered(self, tags: Iterable[str]) -> list[str]:
        found: list[tuple[semver.Version, str]] = []
        keep_current = False
        for tag in dict.fromkeys(tags):
            if self.skip_reason(tag) is not None:
                continue
            version = self.parse(tag)
            if version is None:
                keep_current = keep_current or tag == self.current
                continue
            found.append((version, tag))
        ordered = _newer_first(found)
        return [*ordered, self.current] if keep_current else ordered


class KeelPolicy(_Unanchored):
    """Keel's ``all``/``major``/``minor``/``patch``; ask ``relative_to(running)`` first."""

    __slots__ = ("level", "match_prerelease")

    def __init__(self, level: str, match_prerelease: bool = True) -> None:
        if level not in LEVELS:
            raise InvalidReference(f"keel level {level!r} is not one of {', '.join(LEVELS)}")
        self.level = level
        self.match_prerelease = match_prerelease

    def relative_to(self, current: str) -> TagPolicy:
        return _KeelFrom(self, current)

    def describe(self) -> str:
        pre = "" if self.match_prerelease or self.level == "all" else " any pre-release"
        return f"keel {self.level}{pre}"


class _KeelFrom(_Anchored):
    """A Keel level as it applies to a workload running ``current``."""

    __slots__ = ("policy", "version")

    def __init__(self, policy: KeelPolicy, current: str) -> None:
        super().__init__(current)
        self.policy = policy
        self.version = keel_version(current)

    def skip_reason(self, tag: str) -> str | None:
        if tag == self.current:
            return None
        new = keel_version(tag)
        if new is None:
            return "not a version (Keel needs two or three numbers)"
        if self.current == "latest":
            return None
        old = self.version
        if old is None:
            return f"the running {self.current} is not a version, so no level applies"
        level, pre = self.policy.level, self.policy.match_prerelease
        if level != "all" and pre and (new.prerelease or "") != (old.prerelease or ""):
            return (
                f"pre-release {new.prerelease or 'none'} is not the running one's (matchPreRelease)"
            )
        if new.compare(old) <= 0:
            return f"not higher than the running {self.current}"
        if level == "minor" and new.major != old.major:
            return f"a major bump; level minor stays on {old.major}.x"
        if level == "patch" and (new.major, new.minor) != (old.major, old.minor):
            return f"beyond a patch bump; level patch stays on {old.major}.{old.minor}.x"
        return None

    def is_downgrade(self, candidate: str, current: str) -> bool:
        if candidate == current:
            return False
        new, old = keel_version(candidate), keel_version(current)
        if new is None:
            return True
        if old is None:
            return current != "latest"  # only latest may move to a version
        return int(new.compare(old)) < 0

    def describe(self) -> str:
        return f"{self.policy.describe()} from {self.current}"


class ForcePolicy(_Unanchored):
    """Keel's ``force``, with or without ``matchTag``; ask ``relative_to(running)`` first."""

    __slots__ = ("match_tag",)

    def __init__(self, match_tag: bool = False) -> None:
        self.match_tag = match_tag

    def relative_to(self, current: str) -> TagPolicy:
        return _ForceFrom(self.match_tag, current)

    def describe(self) -> str:
        return "force matchTag" if self.match_tag else "force"


class _ForceFrom(_Anchored):
    __slots__ = ("match_tag", "version")

    def __init__(self, match_tag: bool, current: str) -> None:
        super().__init__(current)
        self.match_tag = match_tag
        self.version = parse_version(current)

    @staticmethod
    def parse(tag: str) -> semver.Version | None:
        return parse_version(tag)  # force takes any version Masterminds reads

    def skip_reason(self, tag: str) -> str | None:
        if tag == self.current:
            return None
        if self.match_tag:
            return f"matchTag follows only the running tag {self.current}"
        if self.version is None:
            return f"the running {self.current} is not a version: followed by digest only"
        new = parse_version(tag)
        if new is None:
            return "not a version"
        if new.compare(self.version) <= 0:
            return f"not higher than the running {self.current}"
        return None

    def is_downgrade(self, candidate: str, current: str) -> bool:
        if candidate == current:
            return False
        if self.match_tag:
            return True
        new, old = parse_version(candidate), parse_version(current)
        return new is None or old is None or int(new.compare(old)) < 0

    def describe(self) -> str:
        return f"{'force matchTag' if self.match_tag else 'force'} from {self.current}"
