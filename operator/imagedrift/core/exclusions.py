"""Tags that are never candidates, whatever the tag policy says: Flux's ``exclusionList``.

Flux's ImageRepository drops tags matching any of ``exclusionList`` before a policy sees
them, by default ``^.*\\.sig$`` (the tags cosign stores signatures under), so a signature
can never be "the newest tag" of a regex or alphabetical policy. imagedrift does the same,
with the same default, before any manifest request is made for a tag. An explicit empty
list turns it off (as in Flux, where the default applies only when the field is absent).
Patterns are Go RE2 syntax, as Flux's, matched by RE2 itself the way the regex tag policy's
are (``goregex``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from imagedrift.core.goregex import RegexError, Regexp, compile_go
from imagedrift.errors import InvalidReference

DEFAULT: tuple[str, ...] = (r"^.*\.sig$",)
MAX_PATTERNS = 25


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[Regexp, ...]:
    return tuple(compile_go(p) for p in patterns)


def check(patterns: Sequence[str]) -> tuple[str, ...]:
    """The patterns, each proven to compile; InvalidReference names the one that does not."""
    if len(patterns) > MAX_PATTERNS:
        raise InvalidReference(f"at most {MAX_PATTERNS} patterns, not {len(patterns)}")
    for i, pattern in enumerate(patterns):
        try:
            compile_go(str(pattern))
        except RegexError as exc:
            raise InvalidReference(f"[{i}] {pattern!r} does not compile: {exc}") from exc
    return tuple(str(p) for p in patterns)


def split(tags: Iterable[str], patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(tags kept, tags excluded), each in the order given."""
    compiled = _compiled(patterns)
    kept: list[str] = []
    dropped: list[str] = []
    for tag in tags:
        (dropped if any(p.matches(tag) for p in compiled) else kept).append(tag)
    return kept, dropped
