"""Calendar-versioned tags, read and ordered exactly as Argo CD Image Updater's ``calver``
strategy reads and orders them.

The definition is Argo CD Image Updater's (argoproj-labs/argocd-image-updater#1768,
``registry-scanner/pkg/tag/calver.go``, documented in ``docs/basics/update-strategies.md``),
ported rule for rule:

- A layout is tokens (calver.org's: ``YYYY YY 0Y MM 0M WW 0W DD 0D MAJOR MINOR MICRO
  MODIFIER``) and literal text, read left to right taking the first token of that list that
  fits. A layout needs a year; no field twice; a week excludes a month and a day; a day
  needs a month; the date fields are written next to each other, in any order
  (``DD-MM-YYYY``); MAJOR, MINOR and MICRO in that order; MODIFIER last; a token of
  variable width never directly before another token; no digit and no ``Y M W D`` outside
  a token. Like a tag (the upstream writes it where a tag goes), a layout is at most 128
  of ``A-Za-z0-9_.-``, not starting with ``.`` or ``-``.
- A tag fills the layout, except that a trailing run of MINOR, MICRO and MODIFIER, each
  after a literal, may be left out with their separators (``vYY.MINOR.MICRO`` reads
  ``v26``, ``v26.4`` and ``v26.4.11``); a missing number counts as 0. A layout starting
  with a token also reads a tag with one leading ``v`` or ``V`` before a digit. Padded
  tokens need their padding; short ones take one or two digits (``YY`` one to three, from
  2000: ``6`` is 2006, ``106`` 2106). Next to another token a padded token takes exactly
  its width (``0Y`` two digits).
- A number is read as Go's ``strconv.Atoi`` reads it: a component beyond 2**63-1 cannot be
  read, and the tag is skipped with that reason (never ordered first). Month 1-12, week
  0-53 (``date +%W`` counts a week 00), day a real day of that month.
- Order: field by field in layout order, the date one field where the layout first names
  it, compared year, month, week, day; a tag without a modifier is newer than the same
  version with one; modifiers in natural order (``rc2`` before ``rc10``, digit runs by
  value); equal versions by tag string, the greater string newer.

Pure: no I/O, no clock. A layout that cannot be used raises ``InvalidReference``.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Final

from imagedrift.core.tagpolicy import NewestFirst
from imagedrift.errors import InvalidReference

__all__ = ["DEFAULT_LAYOUT", "CalverPolicy", "Layout", "compare_natural"]

DEFAULT_LAYOUT: Final = "YYYY.0M.0D"
_LAYOUT_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_INT_MAX: Final = 2**63 - 1  # Go's int on the 64-bit platforms the upstream ships for

YEAR, MONTH, WEEK, DAY, MAJOR, MINOR, MICRO, MODIFIER = range(8)
_DATE: Final = (YEAR, MONTH, WEEK, DAY)


@dataclass(frozen=True)
class Token:
    """One layout token: its field, digits when bounded by a literal or the end, digits when
    another token follows (0: variable width, which may not), optional at the end?"""

    text: str
    field: int
    min_digits: int = 1
    max_digits: int = 0  # 0: unbounded
    adjacent: int = 0
    short_year: bool = False
    optional_tail: bool = False


# In the upstream's order: the first that fits is taken, so YYYY wins over YY.
TOKENS: Final = (
    Token("YYYY", YEAR, 4, 4, 4),
    Token("YY", YEAR, 1, 3, short_year=True),
    Token("0Y", YEAR, 2, 3, 2, short_year=True),
    Token("0M", MONTH, 2, 2, 2),
    Token("0W", WEEK, 2, 2, 2),
    Token("0D", DAY, 2, 2, 2),
    Token("MAJOR", MAJOR),
    Token("MINOR", MINOR, optional_tail=True),
    Token("MICRO", MICRO, optional_tail=True),
    Token("MODIFIER", MODIFIER, 0, optional_tail=True),
    Token("MM", MONTH, 1, 2),
    Token("WW", WEEK, 1, 2),
    Token("DD", DAY, 1, 2),
)
_NAMES: Final = "YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D, MAJOR, MINOR, MICRO and MODIFIER"
_MODIFIER_CHARS: Final = frozenset(string.ascii_letters + string.digits + "._-")

Element = Token | str  # a token, or a run of literal text


@dataclass(frozen=True)
class Layout:
    """A parsed layout: ``text`` as written, its ``elements``, the comparison ``order`` and
    the element indices a tag may end at (``optional_at``)."""

    text: str
    elements: tuple[Element, ...]
    order: tuple[int, ...]
    optional_at: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Layout:
        """Read ``text`` (empty: the default); InvalidReference says what is wrong."""
        text = text or DEFAULT_LAYOUT
        if not _LAYOUT_RE.fullmatch(text):
            raise InvalidReference(
                f"calver layout {text!r} is not written as a tag: at most 128 of "
                "A-Za-z0-9_.-, not starting with . or -"
            )
        elements: list[Element] = []
        claimed: dict[int, str] = {}
        pos = 0
        while pos < len(text):
            token = next((t for t in TOKENS if text.startswith(t.text, pos)), None)
            if token is None:
                ch = text[pos]
                if ch.isdigit() or ch in "YMWD":
                    raise InvalidReference(
                        f"calver layout {text!r} contains {ch!r} outside of a token: valid "
                        f"tokens are {_NAMES}"
                    )
                if elements and isinstance(elements[-1], str):
                    elements[-1] += ch
                else:
                    elements.append(ch)
                pos += 1
                continue
            if token.field in claimed:
                raise InvalidReference(
                    f"calver layout {text!r} defines the same field twice, with "
                    f"{claimed[token.field]} and {token.text}"
                )
            claimed[token.field] = token.text
            elements.append(token)
            pos += len(token.text)
        _validate(text, elements, set(claimed))
        return cls(text, tuple(elements), _order(elements, set(claimed)), _optional(elements))

    def read(self, tag: str) -> tuple[int | str, ...] | str:
        """The tag's fields (numbers in field order, then the modifier, "" when none), or
        why the tag cannot be read under this layout."""
        rest = tag
        if (
            not isinstance(self.elements[0], str)
            and len(rest) > 1
            and rest[0] in "vV"
            and rest[1].isascii()
            and rest[1].isdigit()
        ):
            rest = rest[1:]
        fields: list[int] = [0] * MODIFIER
        modifier = ""
        for i, element in enumerate(self.elements):
            if not rest and i in self.optional_at:
                break
            if isinstance(element, str):
                if not rest.startswith(element):
                    return f"expected {element!r} at {rest!r}"
                rest = rest[len(element) :]
                continue
            if element.field == MODIFIER:
                if not rest or any(ch not in _MODIFIER_CHARS for ch in rest):
                    return f"{rest!r} is not a valid MODIFIER"
                modifier, rest = rest, ""
                continue
            digits = _leading_digits(rest)
            if i + 1 < len(self.elements) and not isinstance(self.elements[i + 1], str):
                digits = digits[: element.adjacent]
                if len(digits) < element.adjacent:
                    return f"expected {element.adjacent} digits for {element.text} at {rest!r}"
            elif len(digits) < element.min_digits or (
                element.max_digits and len(digits) > element.max_digits
            ):
                return f"expected {element.text} to match at {rest!r}"
            rest = rest[len(digits) :]
            value = int(digits)
            if value > _INT_MAX:
                return (
                    f"{element.text} is {len(digits)} digits long, which is too large to be "
                    "a version segment"
                )
            fields[element.field] = value + 2000 if element.short_year else value
        if rest:
            return f"unexpected trailing {rest!r}"
        return _date_error(self, fields) or (*fields, modifier)


def _leading_digits(text: str) -> str:
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return text[:end]


def _validate(text: str, elements: list[Element], present: set[int]) -> None:
    def refuse(why: str) -> InvalidReference:
        return InvalidReference(f"calver layout {text!r} {why}")

    if YEAR not in present:
        raise refuse("must contain a year field (YYYY, YY or 0Y)")
    if WEEK in present and (MONTH in present or DAY in present):
        raise refuse("must not combine a week field with a month or day field")
    if DAY in present and MONTH not in present:
        raise refuse("contains a day but no month, which cannot be ordered")
    tokens = [e for e in elements if not isinstance(e, str)]
    date_seen = date_done = False
    for token in tokens:
        if token.field in _DATE:
            if date_done:
                raise refuse(
                    f"splits the date around {token.text}: write the date fields next to each other"
                )
            date_seen = True
        elif date_seen:
            date_done = True
    numbered = [t for t in tokens if MAJOR <= t.field <= MICRO]
    for before, after in itertools.pairwise(numbered):
        if after.field < before.field:
            raise refuse(
                f"places {before.text} before {after.text}, but {after.text} is the more "
                "significant of the two"
            )
    for i, element in enumerate(elements):
        if isinstance(element, str):
            continue
        if element.field == MODIFIER and i != len(elements) - 1:
            raise refuse(
                "places MODIFIER before the end of the layout: MODIFIER matches the "
                "remainder of the tag and must come last"
            )
        following = elements[i + 1] if i + 1 < len(elements) else ""
        if not isinstance(following, str) and not element.adjacent:
            raise refuse(
                f"places the variable width {element.text} directly before another field: "
                "separate them or use the zero padded form"
            )


def _order(elements: list[Element], present: set[int]) -> tuple[int, ...]:
    """Fields in comparison order: layout order, the date once where it is first named."""
    order: list[int] = []
    for element in elements:
        if isinstance(element, str):
            continue
        if element.field not in _DATE:
            order.append(element.field)
        elif not any(f in _DATE for f in order):
            order.extend(f for f in _DATE if f in present)
    return tuple(order)


def _optional(elements: list[Element]) -> frozenset[int]:
    """Where a tag may end: before each separator of the trailing optional run."""
    at: set[int] = set()
    i = len(elements) - 1
    while i >= 1:
        token, before = elements[i], elements[i - 1]
        if isinstance(token, str) or not token.optional_tail or not isinstance(before, str):
            break
        at.add(i - 1)
        i -= 2
    return frozenset(at)


def _days_in(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _date_error(layout: Layout, fields: list[int]) -> str:
    present = {e.field for e in layout.elements if not isinstance(e, str)}
    year, month, week, day = (fields[f] for f in _DATE)
    if MONTH in present and not 1 <= month <= 12:
        return f"month {month} is out of range"
    if WEEK in present and week > 53:
        return f"week {week} is out of range"
    if DAY in present and not 1 <= day <= _days_in(year, month):
        return f"{year}-{month:02d}-{day:02d} is not a valid date"
    return ""


def compare_natural(a: str, b: str) -> int:
    """The upstream's ``compareNatural``: digit runs by value (``rc2`` < ``rc10``), other
    characters by byte, then the shorter rest first."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i].isascii() and a[i].isdigit() and b[j].isascii() and b[j].isdigit():
            da, db = _leading_digits(a[i:]), _leading_digits(b[j:])
            ta, tb = da.lstrip("0"), db.lstrip("0")
            if len(ta) != len(tb):
                return -1 if len(ta) < len(tb) else 1
            if ta != tb:
                return -1 if ta < tb else 1
            i, j = i + len(da), j + len(db)
            continue
        if a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1
    rest_a, rest_b = a[i:], b[j:]
    return (rest_a > rest_b) - (rest_a < rest_b)


def _compare(a: tuple[int | str, ...], b: tuple[int | str, ...], order: tuple[int, ...]) -> int:
    for field in order:
        x, y = a[field], b[field]
        if x == y:
            continue
        if isinstance(x, str) and isinstance(y, str):  # MODIFIER: none is newest
            if not x or not y:
                return 1 if not x else -1
            return compare_natural(x, y)
        return -1 if x < y else 1  # type: ignore[operator]
    return 0


class CalverPolicy(NewestFirst):
    """Tags that fit a calver layout, newest first, as Argo CD Image Updater orders them."""

    __slots__ = ("layout",)

    def __init__(self, layout: str = DEFAULT_LAYOUT) -> None:
        self.layout = Layout.parse(layout)

    def skip_reason(self, tag: str) -> str | None:
        read = self.layout.read(tag)
        return f"does not fit layout {self.layout.text}: {read}" if isinstance(read, str) else None

    def ordered(self, tags: Iterable[str]) -> list[str]:
        keyed = [
            (fields, tag)
            for tag in dict.fromkeys(tags)
            if not isinstance(fields := self.layout.read(tag), str)
        ]
        order = self.layout.order

        def newer_first(
            a: tuple[tuple[int | str, ...], str], b: tuple[tuple[int | str, ...], str]
        ) -> int:
            return -(_compare(a[0], b[0], order) or (a[1] > b[1]) - (a[1] < b[1]))

        keyed.sort(key=cmp_to_key(newer_first))
        return [tag for _, tag in keyed]

    def is_downgrade(self, candidate: str, current: str) -> bool:
        new = self.layout.read(candidate)
        if isinstance(new, str):
            return True
        old = self.layout.read(current)
        if isinstance(old, str):
            return False
        return _compare(new, old, self.layout.order) < 0

    def describe(self) -> str:
        return f"calver {self.layout.text}"

    def __repr__(self) -> str:
        return f"CalverPolicy({self.layout.text!r})"
