"""Tags that are never candidates, whatever the tag policy says: Flux's ``exclusionList``.

Flux's ImageRepository drops tags matching any of ``exclusionList`` before a policy sees
them, by default ``^.*\\.sig$`` (the tags cosign stores signatures under), so a signature
can never be "the newest tag" of a regex or alphabetical policy. imagedrift does the same,
with the same default, before any manifest request is made for a tag. An explicit empty
list turns it off (as in Flux, where the default applies only when the field is absent).
Patterns are Go RE2 syntax, as Flux's, translated the way the regex tag policy does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from imagedrift.core.goregex import translate
from imagedrift.errors import InvalidReference

DEFAULT: tuple[str, ...] = (r"^.*\.sig$",)
MAX_PATTERNS = 25


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(translate(p)) for p in patterns)


def check(patterns: Sequence[str]) -> tuple[str, ...]:
    """The patterns, each proven to compile; InvalidReference names the one that does not."""
    if len(patterns) > MAX_PATTERNS:
        raise InvalidReference(f"at most {MAX_PATTERNS} patterns, not {len(patterns)}")
    for i, pattern in enumerate(patterns):
        try:
            re.compile(translate(str(pattern)))
        except re.error as exc:
            raise InvalidReference(f"[{i}] {pattern!r} does not compile: {exc}") from exc
    return tuple(str(p) for p in patterns)


def split(tags: Iterable[str], patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(tags kept, tags excluded), each in the order given."""
    compiled = _compiled(patterns)
    kept: list[str] = []
    dropped: list[str] = []
    for tag in tags:
        (dropped if any(p.search(tag) for p in compiled) else kept).append(tag)
    return kept, dropped
