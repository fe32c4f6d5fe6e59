"""Argo CD Image Updater's tag matchers: ``allowTags`` and ``ignoreTags``.

- ``allowTags``: ``regexp:<expression>`` keeps only tags the expression matches somewhere
  (Go ``regexp.MatchString``, by RE2 itself: unanchored, so anchor with ``^…$`` to match
  whole tags);
  ``any`` (or no value) keeps every tag.
- ``ignoreTags``: glob patterns matched against the whole tag with Go's
  ``path/filepath.Match``, as Argo CD does: ``*`` any run of characters, ``?`` one
  character, ``[abc]``, ``[a-z]`` and ``[^abc]`` classes, ``\\`` escaping the next
  character. ``*`` ignores every tag (Argo CD's documented way to pause updates).

A tag is kept when it is not ignored and the allow matcher matches it; the order of the two
does not matter. Deliberate difference: Argo CD reads a matcher that does not parse as
"match nothing" (an invalid glob as "ignore nothing"); imagedrift refuses the spec at
admission with the reason, so a typo cannot silently stop or unblock updates.

Pure. A matcher that does not parse raises ``InvalidReference`` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final

from imagedrift.core.goregex import RegexError, Regexp, compile_go
from imagedrift.errors import InvalidReference

__all__ = ["check_allow", "check_ignore", "split"]

REGEXP_PREFIX: Final = "regexp:"
ANY: Final = "any"
MAX_IGNORE: Final = 25


def _allow_pattern(allow: str) -> Regexp | None:
    if allow.lower() in ("", ANY):
        return None
    if not allow.lower().startswith(REGEXP_PREFIX):
        raise InvalidReference(
            f"{allow!r} is not a tag matcher: write regexp:<expression> or {ANY}"
        )
    expression = allow[len(REGEXP_PREFIX) :]
    try:
        return compile_go(expression)
    except RegexError as exc:
        raise InvalidReference(f"{allow!r} does not compile: {exc}") from exc


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's ``path/filepath.Match`` over a whole tag, as one anchored regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise InvalidReference(f"glob {pattern!r}: ends in a lone \\")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == "*":
            out.append(".*")
            i += 1
        elif ch == "?":
            out.append(".")
            i += 1
        elif ch == "[":
            i = _glob_class(pattern, i + 1, out)
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, i: int, out: list[str]) -> int:
    """One ``[^lo-hi...]`` class starting after its ``[``; where the pattern goes on."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    members: list[str] = []
    while True:
        if i >= n:
            raise InvalidReference(f"glob {pattern!r}: a [ is never closed")
        if pattern[i] == "]" and members:
            break
        low, i = _glob_char(pattern, i)
        if i < n and pattern[i] == "-" and i + 1 < n and pattern[i + 1] != "]":
            high, i = _glob_char(pattern, i + 1)
            if high < low:
                raise InvalidReference(f"glob {pattern!r}: range {low}-{high} is backwards")
            members.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            members.append(re.escape(low))
    out.append(f"[{'^' if negate else ''}{''.join(members)}]")
    return i + 1


def _glob_char(pattern: str, i: int) -> tuple[str, int]:
    if pattern[i] == "\\":
        if i + 1 >= len(pattern):
            raise InvalidReference(f"glob {pattern!r}: ends in a lone \\")
        return pattern[i + 1], i + 2
    if pattern[i] in "-]":
        raise InvalidReference(f"glob {pattern!r}: a bare {pattern[i]!r} in a [] class")
    return pattern[i], i + 1


def check_allow(allow: str) -> str:
    """``allow`` proven to parse (InvalidReference says why not)."""
    _allow_pattern(allow)
    return allow


def check_ignore(patterns: Sequence[str]) -> tuple[str, ...]:
    """The globs, each proven to parse; InvalidReference names the one that does not."""
    if len(patterns) > MAX_IGNORE:
        raise InvalidReference(f"at most {MAX_IGNORE} globs, not {len(patterns)}")
    for i, pattern in enumerate(patterns):
        try:
            _glob(str(pattern))
        except InvalidReference as exc:
            raise InvalidReference(f"[{i}] {exc}") from exc
    return tuple(str(p) for p in patterns)


@lru_cache(maxsize=256)
def _compiled(
    allow: str, ignore: tuple[str, ...]
) -> tuple[Regexp | None, tuple[tuple[str, re.Pattern[str]], ...]]:
    return _allow_pattern(allow), tuple((p, _glob(p)) for p in ignore)


def split(
    tags: Iterable[str], allow: str, ignore: tuple[str, ...]
) -> tuple[list[str], list[tuple[str, bool, str]]]:
    """(tags kept, [(tag, ignored?, why)] for the others), each in the order given."""
    allowed, globs = _compiled(allow, ignore)
    kept: list[str] = []
    dropped: list[tuple[str, bool, str]] = []
    for tag in tags:
        glob = next((p for p, g in globs if g.fullmatch(tag)), None)
        if glob is not None:
            dropped.append((tag, True, f"matches ignoreTags {glob!r}"))
        elif allowed is not None and not allowed.matches(tag):
            dropped.append((tag, False, f"not matched by allowTags {allow!r}"))
        else:
            kept.append(tag)
    return kept, dropped
