"""Calendar-versioned tags (calver.org), ordered by the date and numbers a layout names.

A layout is tokens and literal separators, e.g. ``YYYY.0M.0D`` (the default),
``vYYYY-0M-0D``, ``YY.MM.MICRO`` or ``YYYY.0W-MODIFIER``. Tokens (calver.org):

==========  ====================================  ======================
token       meaning                               digits
==========  ====================================  ======================
YYYY        full year                             exactly 4
YY          short year, years since 2000          1 to 3 (6, 16, 106)
0Y          zero-padded short year                2 to 3 (06, 16, 106)
MM / 0M     month, short / zero-padded            1-2 / exactly 2
WW / 0W     week of the year, short / padded      1-2 / exactly 2
DD / 0D     day of the month, short / padded      1-2 / exactly 2
MAJOR       first number                          1 or more
MINOR       second number                         1 or more
MICRO       third number (patch)                  1 or more
MODIFIER    a text tag such as rc1, dev, beta     [A-Za-z0-9._-]+
==========  ====================================  ======================

Argo CD Image Updater has released no ``calver`` strategy (its documentation points to
``alphabetical`` with an ``allowTags`` pattern, which orders ``2024.9.1`` above
``2024.10.1``); this follows the proposal under review there (argoproj-labs/
argocd-image-updater#1768) where it is definite:

- A layout needs a year; a week excludes month and day; a day needs a month; the date
  fields are adjacent and in year, month or week, day order; MAJOR, MINOR, MICRO appear in
  that order; no token appears twice; MODIFIER, if present, is last; a token of variable
  width cannot be directly followed by another token (``MMDD`` could not be read back).
- A tag must fill the layout, except that a trailing MODIFIER (with the separator before
  it) may be left out; a layout starting with a token also reads a tag with one leading
  ``v`` or ``V``. Dates are checked (month 1-12, week 1-53, a real day of that month).
  Tags that do not fit are skipped, not errors.
- Order: field by field in layout order (the date fields compare as numbers); a tag
  without a modifier is newer than the same version with one (a release after its
  candidates); modifiers compare in natural order (``rc2`` before ``rc10``). Equal versions
  (``2024.5.1`` and ``2024.05.01`` under ``YYYY.MM.DD``) rank by tag string, the greater
  string being newer, as every imagedrift policy breaks ties.

Pure: no I/O, no clock. A layout that cannot be used raises ``InvalidReference``.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Final

from imagedrift.core.tagpolicy import NewestFirst
from imagedrift.errors import InvalidReference

__all__ = ["DEFAULT_LAYOUT", "CalverPolicy", "Layout"]

DEFAULT_LAYOUT: Final = "YYYY.0M.0D"
MAX_LAYOUT_LENGTH: Final = 128

# token -> (digits pattern, fixed width?)
_TOKENS: Final[dict[str, tuple[str, bool]]] = {
    "YYYY": (r"[0-9]{4}", True),
    "MODIFIER": (r"[A-Za-z0-9._-]+", False),
    "MAJOR": (r"[0-9]+", False),
    "MINOR": (r"[0-9]+", False),
    "MICRO": (r"[0-9]+", False),
    "YY": (r"[1-9][0-9]{0,2}|0", False),
    "0Y": (r"[0-9]{2,3}", False),
    "MM": (r"[0-9]{1,2}", False),
    "0M": (r"[0-9]{2}", True),
    "WW": (r"[0-9]{1,2}", False),
    "0W": (r"[0-9]{2}", True),
    "DD": (r"[0-9]{1,2}", False),
    "0D": (r"[0-9]{2}", True),
}
# Longest first, so YYYY is not read as YY YY and MODIFIER is not read as anything else.
_TOKEN_RE: Final = re.compile("|".join(sorted(_TOKENS, key=len, reverse=True)))
_YEARS, _MONTHS, _WEEKS, _DAYS = ("YYYY", "YY", "0Y"), ("MM", "0M"), ("WW", "0W"), ("DD", "0D")
_DATE: Final = frozenset((*_YEARS, *_MONTHS, *_WEEKS, *_DAYS))
_NUMBERS: Final = ("MAJOR", "MINOR", "MICRO")
_LITERAL_RE: Final = re.compile(r"[A-Za-z0-9._-]*")
_NATURAL: Final = re.compile(r"([0-9]+)")


def _kind(token: str) -> str:
    for kind, tokens in (("year", _YEARS), ("month", _MONTHS), ("week", _WEEKS)):
        if token in tokens:
            return kind
    return "day" if token in _DAYS else token


@dataclass(frozen=True)
class Layout:
    """A parsed layout: ``text`` as written, ``tokens`` in order, and the tag grammar."""

    text: str
    tokens: tuple[str, ...]
    pattern: re.Pattern[str]
    groups: tuple[tuple[str, str], ...]  # (group name in pattern, token), in layout order

    @classmethod
    def parse(cls, text: str) -> Layout:
        if not text:
            text = DEFAULT_LAYOUT
        if len(text) > MAX_LAYOUT_LENGTH:
            raise InvalidReference(f"calver layout is {len(text)} characters; at most 128")
        parts: list[tuple[str, str]] = []  # (token or "", literal text)
        at = 0
        for match in _TOKEN_RE.finditer(text):
            if match.start() > at:
                parts.append(("", text[at : match.start()]))
            parts.append((match.group(0), ""))
            at = match.end()
        if at < len(text):
            parts.append(("", text[at:]))
        tokens = tuple(t for t, _ in parts if t)
        _validate(text, parts, tokens)
        regex: list[str] = []
        groups: list[tuple[str, str]] = []
        for i, (token, literal) in enumerate(parts):
            if not token:
                regex.append(re.escape(literal))
                continue
            groups.append((f"f{i}", token))
            body = f"(?P<f{i}>{_TOKENS[token][0]})"
            if token == "MODIFIER":
                # It may be left out, with the separator before it.
                before = regex.pop() if regex and not parts[i - 1][0] else ""
                body = f"(?:{before}{body})?"
            regex.append(body)
        prefix = "[vV]?" if parts[0][0] else ""
        return cls(text, tokens, re.compile(prefix + "".join(regex)), tuple(groups))

    def fields(self, tag: str) -> tuple[int | str, ...] | None:
        """The tag's values in layout order (a MODIFIER as text, "" when left out), or None
        when the tag does not fit the layout or names no real date."""
        match = self.pattern.fullmatch(tag)
        if match is None:
            return None
        values: list[int | str] = []
        date: dict[str, int] = {}
        for name, token in self.groups:
            raw = match.group(name)
            if token == "MODIFIER":
                values.append(raw or "")
                continue
            assert raw is not None  # only MODIFIER is optional
            value = int(raw)
            if token in ("YY", "0Y"):
                value += 2000
            date[_kind(token)] = value
            values.append(value)
        return tuple(values) if _real_date(date) else None


def _validate(text: str, parts: list[tuple[str, str]], tokens: tuple[str, ...]) -> None:
    def refuse(why: str) -> InvalidReference:
        return InvalidReference(f"calver layout {text!r}: {why}")

    for _, literal in parts:
        if literal and (not _LITERAL_RE.fullmatch(literal) or re.search(r"[0-9YMWD]", literal)):
            raise refuse(
                f"{literal!r} is neither a token nor a separator (tokens: "
                f"{', '.join(_TOKENS)}; separators are letters other than Y M W D, and . - _)"
            )
    kinds = [_kind(t) for t in tokens]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise refuse(f"{', '.join(repeated)} appears more than once")
    if "year" not in kinds:
        raise refuse("a calendar version needs a year (YYYY, YY or 0Y)")
    if "week" in kinds and ("month" in kinds or "day" in kinds):
        raise refuse("a week (WW, 0W) cannot be combined with a month or a day")
    if "day" in kinds and "month" not in kinds:
        raise refuse("a day (DD, 0D) needs a month (MM, 0M)")
    dated = [i for i, t in enumerate(tokens) if t in _DATE]
    if dated != list(range(dated[0], dated[0] + len(dated))):
        raise refuse("the date fields must be next to each other")
    order = [_kind(tokens[i]) for i in dated]
    if order != [k for k in ("year", "month", "week", "day") if k in order]:
        raise refuse("the date fields must read year, then month or week, then day")
    numbers = [t for t in tokens if t in _NUMBERS]
    if numbers != [t for t in _NUMBERS if t in numbers]:
        raise refuse("MAJOR, MINOR and MICRO must appear in that order")
    if "MODIFIER" in tokens and tokens[-1] != "MODIFIER":
        raise refuse("MODIFIER must be the last token")
    for (token, _), (following, _) in itertools.pairwise(parts):
        if token and following and not _TOKENS[token][1]:
            raise refuse(f"{token} has no fixed width, so it needs a separator before {following}")


def _real_date(date: dict[str, int]) -> bool:
    year = date.get("year", 2000)
    if "month" in date and not 1 <= date["month"] <= 12:
        return False
    if "week" in date and not 1 <= date["week"] <= 53:
        return False
    if "day" in date:
        return 1 <= date["day"] <= calendar.monthrange(year, date["month"])[1]
    return True


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NATURAL.split(text) if p)


def _compare_fields(a: tuple[int | str, ...], b: tuple[int | str, ...]) -> int:
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if isinstance(x, str) and isinstance(y, str):  # MODIFIER: none is newest
            if not x or not y:
                return 1 if not x else -1
            nx, ny = _natural(x), _natural(y)
            return (nx > ny) - (nx < ny)
        return (x > y) - (x < y)  # type: ignore[operator]
    return 0


class CalverPolicy(NewestFirst):
    """Tags that fit a calver layout, newest date (then numbers, then modifier) first."""

    __slots__ = ("layout",)

    def __init__(self, layout: str = DEFAULT_LAYOUT) -> None:
        self.layout = Layout.parse(layout)

    def skip_reason(self, tag: str) -> str | None:
        if self.layout.fields(tag) is not None:
            return None
        if self.layout.pattern.fullmatch(tag):
            return f"names no real date under layout {self.layout.text}"
        return f"does not fit layout {self.layout.text}"

    def ordered(self, tags: Iterable[str]) -> list[str]:
        keyed = [
            (fields, tag)
            for tag in dict.fromkeys(tags)
            if (fields := self.layout.fields(tag)) is not None
        ]

        def newer_first(
            a: tuple[tuple[int | str, ...], str], b: tuple[tuple[int | str, ...], str]
        ) -> int:
            return -(_compare_fields(a[0], b[0]) or (a[1] > b[1]) - (a[1] < b[1]))

        keyed.sort(key=cmp_to_key(newer_first))
        return [tag for _, tag in keyed]

    def is_downgrade(self, candidate: str, current: str) -> bool:
        new = self.layout.fields(candidate)
        if new is None:
            return True
        old = self.layout.fields(current)
        if old is None:
            return False
        return _compare_fields(new, old) < 0

    def describe(self) -> str:
        return f"calver {self.layout.text}"

    def __repr__(self) -> str:
        return f"CalverPolicy({self.layout.text!r})"
