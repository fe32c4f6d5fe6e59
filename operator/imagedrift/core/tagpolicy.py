"""Which tags a policy allows, newest first, and whether a roll would go backwards.

Three policies, each meaning what it means in Flux's image-reflector-controller and in
Argo CD Image Updater, so a policy written there reads the same here:

``semver``
    Tags that parse as versions the way Masterminds semver v3 ``NewVersion`` parses them
    (optional leading ``v``; ``1``, ``1.2`` or ``1.2.3``; pre-release; build metadata) and
    satisfy a Masterminds v3 constraint such as ``>=1.2.0 <2.0.0 || ^3``. Tags that are not
    versions are skipped. Pre-releases are candidates only for an ``||`` alternative in which
    some constraint names a pre-release (``>=1.2.0-0 <2``), as in Masterminds v3.3.
``regex``
    Flux's ``filterTags`` (``pattern`` searched in the tag, ``extract`` expanded like Go's
    ``Regexp.Expand``; an empty ``extract`` keeps the whole tag) followed by Flux's
    ``alphabetical`` or ``numerical`` policy. ``asc`` (the default): the latest is the
    greatest value; ``desc``: the latest is the smallest.
``sameTag``
    The tracked tag itself; the caller follows its digest.

Where the Go code leaves a choice to chance (it keeps whichever equal element it met first,
and Flux iterates a map), this module decides, so the same tags always give the same answer:

- Versions of equal precedence (``1.4``, ``1.4.0``, ``v1.4.0``, ``1.4.0+b1``) rank by tag
  string, the greater string being newer. Build metadata never orders versions.
- Regex tags with equal extracted values rank by tag string the same way.
- Numerical values compare exactly (as decimals). That agrees with Flux's float64 order
  wherever float64 can tell two values apart and breaks the ties float64 would leave.

``is_downgrade`` compares by the policy's order only, never by tie-break: a candidate whose
version (or extracted value) equals the current one is not a downgrade. When the current tag
cannot be placed in the policy's order at all (``latest`` under a semver policy, a tag the
regex does not match) nothing can be violated, so no candidate counts as a downgrade: that is
how a workload moves onto a policy for the first time. A candidate the policy cannot place is
always reported as a downgrade, so it is never rolled.

Pure: no I/O, no clock. Errors in user input raise ``InvalidReference``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cmp_to_key
from typing import Final, Literal, Protocol, runtime_checkable

import semver

from imagedrift.core.goregex import (
    RegexError,
    Regexp,
    compile_go,
    expand_template,
    template_references,
)
from imagedrift.errors import InvalidReference, TagPolicyFailed

__all__ = [
    "NewestFirst",
    "RegexPolicy",
    "SameTagPolicy",
    "SemverPolicy",
    "TagPolicy",
    "VersionRange",
    "expand_template",
    "parse_version",
]

Order = Literal["alphabetical", "numerical"]
Direction = Literal["asc", "desc"]
ORDERS: Final[tuple[Order, ...]] = ("alphabetical", "numerical")
DIRECTIONS: Final[tuple[Direction, ...]] = ("asc", "desc")

# The longest version range accepted; real ranges are a few dozen characters, and a bound
# keeps parsing time predictable for whatever a user puts in a spec.
MAX_RANGE_LENGTH: Final = 1024


@runtime_checkable
class TagPolicy(Protocol):
    """What every tag policy answers. Tags are plain strings as the registry lists them."""

    def ordered(self, tags: Iterable[str]) -> list[str]:
        """The eligible tags, each once, newest first; ineligible tags are left out."""
        ...

    def latest(self, tags: Iterable[str]) -> str | None:
        """The newest eligible tag, or None when no tag is eligible."""
        ...

    def is_downgrade(self, candidate: str, current: str) -> bool:
        """True when rolling from ``current`` to ``candidate`` would go backwards."""
        ...

    def describe(self) -> str:
        """A short human description for status messages, e.g. ``semver >=1.2 <2``."""
        ...

    def skip_reason(self, tag: str) -> str | None:
        """Why ``tag`` is not eligible (``not a version``, ``outside >=1.2 <2``), or None."""
        ...


class NewestFirst:
    """A policy's ``latest``: the first tag its ``ordered`` gives (each policy orders)."""

    __slots__ = ()

    def ordered(self, tags: Iterable[str]) -> list[str]:
        raise NotImplementedError

    def latest(self, tags: Iterable[str]) -> str | None:
        found = self.ordered(tags)
        return found[0] if found else None


# --- Versions ---------------------------------------------------------------------------

# Go's \s (RE2's Perl class) is ASCII only; Python's \s would also match Unicode spaces.
_WS: Final = "[\t\n\f\r ]"
_WS_CHARS: Final = frozenset("\t\n\f\r ")

# Masterminds semver v3 SemVerRegex, as NewVersion anchors it.
_VERSION_RE: Final = re.compile(
    r"v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
_UINT64_DIGITS: Final = 20
_UINT64_MAX: Final = 2**64 - 1


def _uint64(digits: str) -> int | None:
    """Go's ParseUint(digits, 10, 64): leading zeros allowed, overflow is an error."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > _UINT64_DIGITS:
        return None
    value = int(significant)
    return value if value <= _UINT64_MAX else None


def parse_version(tag: str) -> semver.Version | None:
    """The version ``tag`` names, parsed leniently like Masterminds ``NewVersion``, or None.

    ``v1.2.3``, ``1.2.3``, ``1.2`` (1.2.0) and ``1`` (1.0.0) are versions, with optional
    ``-pre.release`` and ``+build`` parts. Numeric pre-release identifiers with leading zeros,
    parts beyond uint64 and anything else (``latest``, ``1.2.3.4``) are not.
    """
    match = _VERSION_RE.fullmatch(tag)
    if match is None:
        return None
    numbers = [_uint64(match.group(1))]
    numbers += [_uint64(part[1:]) if part else 0 for part in (match.group(2), match.group(3))]
    major, minor, patch = numbers
    if major is None or minor is None or patch is None:
        return None
    prerelease = match.group(5)
    if prerelease is not None and any(
        len(ident) > 1 and ident.isdigit() and ident[0] == "0" for ident in prerelease.split(".")
    ):
        return None
    try:
        return semver.Version(major, minor, patch, prerelease, match.group(8))
    except ValueError:
        # The library's own refusal (semver 3.2 caps a version at 255 characters): not a
        # version, like any other unreadable tag, never an error that stops the search.
        return None


def _compare(a: semver.Version, b: semver.Version) -> int:
    """Semantic version precedence; build metadata is ignored."""
    return int(a.compare(b))


def _compare_prerelease(a: str, b: str) -> int:
    """Masterminds ``comparePrerelease``; an empty side sorts first, as it does there."""
    a_parts, b_parts = a.split("."), b.split(".")
    for i in range(max(len(a_parts), len(b_parts))):
        x = a_parts[i] if i < len(a_parts) else ""
        y = b_parts[i] if i < len(b_parts) else ""
        if x == y:
            continue
        if not x or not y:
            return -1 if not x else 1
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return 0


# --- Version ranges (Masterminds semver v3 constraints) -----------------------------------

# Masterminds' constraint version: like a version, but each number may be x, X or * (and, as
# there, the class also admits "|", which then fails to parse as a number).
_CV: Final = (
    r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
_CV_RE: Final = re.compile(_CV)
_RANGE_RE: Final = re.compile(rf"{_WS}*({_CV}){_WS}+-{_WS}+({_CV}){_WS}*")
# Operators longest first: at any position only the longest operator can be followed by a
# version, which is the one Masterminds' leftmost-first alternation ends up choosing.
_OPERATORS: Final = ("!=", ">=", "=>", "<=", "=<", "~>", "=", ">", "<", "~", "^")
_OPERATOR_CHARS: Final = frozenset("!=<>~^")


def _is_x(part: str) -> bool:
    return part in ("x", "X", "*")


@dataclass(frozen=True)
class _Constraint:
    op: str
    con: semver.Version
    dirty: bool
    minor_dirty: bool
    patch_dirty: bool

    def check(self, v: semver.Version, include_pre: bool) -> bool:
        # A pre-release is a candidate only when its alternative names one (Masterminds #21).
        if v.prerelease and not include_pre:
            return False
        return _CHECKS[self.op](v, self)


def _check_equal(v: semver.Version, c: _Constraint) -> bool:
    # "1.2" and "=1.2.x" mean "~1.2"; a full version means exactly that version.
    if c.dirty:
        return _check_tilde(v, c)
    return _compare(v, c.con) == 0


def _check_not_equal(v: semver.Version, c: _Constraint) -> bool:
    if c.dirty:
        if c.con.major != v.major:
            return True
        if c.con.minor != v.minor and not c.minor_dirty:
            return True
        if c.minor_dirty:
            return False
        if c.con.patch != v.patch and not c.patch_dirty:
            return True
        if c.patch_dirty:
            if v.prerelease or c.con.prerelease:
                return _compare_prerelease(v.prerelease or "", c.con.prerelease or "") != 0
            return False
    return _compare(v, c.con) != 0


def _check_greater(v: semver.Version, c: _Constraint) -> bool:
    if not c.dirty:
        return _compare(v, c.con) > 0
    if v.major != c.con.major:
        return bool(v.major > c.con.major)
    if c.minor_dirty:
        return False  # ">11" needs 12 or higher
    if c.patch_dirty:
        return bool(v.minor > c.con.minor)  # ">11.1" needs 11.2 or higher
    return _compare(v, c.con) > 0


def _check_less(v: semver.Version, c: _Constraint) -> bool:
    return _compare(v, c.con) < 0


def _check_greater_equal(v: semver.Version, c: _Constraint) -> bool:
    return _compare(v, c.con) >= 0


def _check_less_equal(v: semver.Version, c: _Constraint) -> bool:
    if not c.dirty:
        return _compare(v, c.con) <= 0
    if v.major > c.con.major:
        return False
    return not (v.major == c.con.major and v.minor > c.con.minor and not c.minor_dirty)


def _check_tilde(v: semver.Version, c: _Constraint) -> bool:
    # ~1.2.3 and ~1.2 -> >=1.2.x <1.3.0; ~1 -> >=1.0.0 <2.0.0; ~0.0.0 and ~* -> anything.
    if _compare(v, c.con) < 0:
        return False
    if (c.con.major, c.con.minor, c.con.patch) == (0, 0, 0) and not (
        c.minor_dirty or c.patch_dirty
    ):
        return True
    if v.major != c.con.major:
        return False
    return not (v.minor != c.con.minor and not c.minor_dirty)


def _check_caret(v: semver.Version, c: _Constraint) -> bool:
    # ^1.2.3 -> >=1.2.3 <2; ^0.2.3 -> >=0.2.3 <0.3; ^0.0.3 -> =0.0.3; ^0.0 -> <0.1; ^0 -> <1.
    if _compare(v, c.con) < 0:
        return False
    if c.con.major > 0 or c.minor_dirty:
        return bool(v.major == c.con.major)
    if v.major > 0:
        return False
    if c.con.minor > 0 or c.patch_dirty:
        return bool(v.minor == c.con.minor)
    if v.minor > 0:
        return False
    return bool(v.patch == c.con.patch)


_CHECKS: Final[dict[str, Callable[[semver.Version, _Constraint], bool]]] = {
    "": _check_equal,
    "=": _check_equal,
    "!=": _check_not_equal,
    ">": _check_greater,
    "<": _check_less,
    ">=": _check_greater_equal,
    "=>": _check_greater_equal,
    "<=": _check_less_equal,
    "=<": _check_less_equal,
    "~": _check_tilde,
    "~>": _check_tilde,
    "^": _check_caret,
}


def _rewrite_hyphen_ranges(text: str) -> str:
    """Masterminds ``rewriteRange``: ``1.2 - 1.4.5`` becomes ``>= 1.2, <= 1.4.5``."""
    out = text
    for match in _RANGE_RE.finditer(text):
        out = out.replace(match.group(0), f">= {match.group(1)}, <= {match.group(11)} ", 1)
    return out


def _parse_constraint(op: str, version: str, shown: str, whole: str) -> _Constraint:
    match = _CV_RE.fullmatch(version)
    if match is None:
        raise InvalidReference(
            f"version range {whole!r}: {shown!r} is not an operator and a version "
            "(operators: = != > < >= <= ~ ~> ^; wildcards: x X *)"
        )
    major, minor, patch, pre = match.group(1), match.group(2), match.group(3), match.group(4)
    pre = pre or ""
    dirty = minor_dirty = patch_dirty = False
    if _is_x(major):
        text, dirty = f"0.0.0{pre}", True
    elif minor is None or _is_x(minor[1:]):
        text, dirty, minor_dirty = f"{major}.0.0{pre}", True, True
    elif patch is None or _is_x(patch[1:]):
        text, dirty, patch_dirty = f"{major}{minor}.0{pre}", True, True
    else:
        text = version
    con = parse_version(text)
    if con is None:
        raise InvalidReference(
            f"version range {whole!r}: {shown!r} has a version that does not parse"
        )
    return _Constraint(op, con, dirty, minor_dirty, patch_dirty)


def _parse_alternative(segment: str, whole: str) -> tuple[_Constraint, ...]:
    """One ``||`` alternative: constraints separated by whitespace or a comma (AND).

    A hand-written scan accepting exactly what Masterminds' ``validConstraintRegex`` accepts
    and splitting it as ``findConstraintRegex`` does; a backtracking regex could take
    exponential time on a long invalid range.
    """
    found: list[_Constraint] = []
    i, n = 0, len(segment)
    while i < n and segment[i] in _WS_CHARS:
        i += 1
    if i == n:
        raise InvalidReference(f"version range {whole!r}: an alternative is empty")
    while i < n:
        start = i
        op = next((o for o in _OPERATORS if segment.startswith(o, i)), "")
        i += len(op)
        while i < n and segment[i] in _WS_CHARS:
            i += 1
        end = i
        while end < n and segment[end] not in _WS_CHARS and segment[end] != ",":
            end += 1
        version = segment[i:end]
        shown = segment[start:end].strip() or segment[start:].strip()[:40]
        if not version or version[0] in _OPERATOR_CHARS:
            raise InvalidReference(
                f"version range {whole!r}: {shown!r} is not an operator and a version "
                "(operators: = != > < >= <= ~ ~> ^; wildcards: x X *)"
            )
        found.append(_parse_constraint(op, version, shown, whole))
        i = end
        separated = False
        while i < n and segment[i] in _WS_CHARS:
            i, separated = i + 1, True
        if i < n and segment[i] == ",":
            i += 1
            while i < n and segment[i] in _WS_CHARS:
                i += 1
            if i == n:
                raise InvalidReference(
                    f"version range {whole!r}: a comma is not followed by a constraint"
                )
        elif i < n and not separated:
            raise InvalidReference(f"version range {whole!r}: {shown!r} runs into {segment[i:]!r}")
    return tuple(found)


@dataclass(frozen=True)
class VersionRange:
    """A parsed Masterminds semver v3 constraint; ``str()`` gives the text it came from."""

    text: str
    alternatives: tuple[tuple[_Constraint, ...], ...]
    # Per alternative: does one of its constraints name a pre-release?
    include_prerelease: tuple[bool, ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parse ``text``; raise InvalidReference naming the part that does not parse.

        Grammar: ``||`` separates alternatives (OR); within one, constraints separated by
        whitespace and/or a comma must all hold (AND). Operators ``= != > < >= => <= =< ~ ~> ^``
        (none means ``=``), hyphen ranges ``1.2 - 1.4.5``, wildcards ``x X *`` in any
        position, partial versions (``1.2`` means ``1.2.x``) and a leading ``v``.
        """
        if not isinstance(text, str):
            raise InvalidReference(f"version range must be a string, not {type(text).__name__}")
        if not text.strip():
            raise InvalidReference("version range is empty")
        if len(text) > MAX_RANGE_LENGTH:
            raise InvalidReference(
                f"version range is {len(text)} characters long; at most {MAX_RANGE_LENGTH}"
            )
        rewritten = _rewrite_hyphen_ranges(text)
        alternatives = tuple(_parse_alternative(seg, text) for seg in rewritten.split("||"))
        include = tuple(any(c.con.prerelease for c in group) for group in alternatives)
        return cls(text, alternatives, include)

    def allows(self, version: semver.Version) -> bool:
        """True when ``version`` satisfies some alternative, as Masterminds ``Check`` says."""
        return any(
            all(c.check(version, pre) for c in group)
            for group, pre in zip(self.alternatives, self.include_prerelease, strict=True)
        )

    def __str__(self) -> str:
        return self.text


# --- Policies -------------------------------------------------------------------------------


def _unique(tags: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _tag_cmp(a: str, b: str) -> int:
    return (a > b) - (a < b)


class TagFilter:
    """Flux's ``filterTags``: ``pattern`` searched in the tag, the value ``extract`` expands
    (Go ``Regexp.Expand``; an empty ``extract`` keeps the whole tag). No pattern: every tag,
    as itself."""

    __slots__ = ("extract", "pattern")

    def __init__(self, pattern: str = "", extract: str = "", *, kind: str = "regex") -> None:
        if extract and not pattern:
            raise InvalidReference(f"{kind} extract {extract!r} needs a pattern to extract from")
        compiled: Regexp | None = None
        if pattern:
            try:
                compiled = compile_go(pattern)
            except RegexError as exc:
                raise InvalidReference(
                    f"{kind} pattern {pattern!r} does not compile: {exc}"
                ) from exc
            for name, number in template_references(extract):
                known = number <= compiled.groups if number >= 0 else name in compiled.groupindex
                if not known:
                    raise InvalidReference(
                        f"{kind} extract {extract!r} refers to group {name!r}, which pattern "
                        f"{pattern!r} does not have"
                    )
        self.pattern = compiled
        self.extract = extract

    def value(self, tag: str) -> str | None:
        """The value ``tag`` is ordered by, or None when the pattern does not match it."""
        if self.pattern is None:
            return tag
        match = self.pattern.search(tag)
        if match is None:
            return None
        return expand_template(self.extract, match) if self.extract else tag

    def describe(self) -> str:
        if self.pattern is None:
            return ""
        extract = f" extract {self.extract!r}" if self.extract else ""
        return f" pattern {self.pattern.pattern!r}{extract}"


def parse_strict_version(text: str) -> semver.Version | None:
    """Flux's ``version.ParseVersion``: Masterminds ``StrictNewVersion`` after one leading
    lowercase ``v`` is dropped. Exactly ``X.Y.Z`` (``1.2`` and ``1`` are not versions), no
    leading zeros, optional pre-release and build parts, at most 256 characters."""
    if len(text) > MAX_STRICT_LENGTH or _STRICT_RE.fullmatch(text) is None:
        return None
    return parse_version(text)


MAX_STRICT_LENGTH: Final = 256  # Masterminds' MaxVersionLen
# semver.org's own grammar, as StrictNewVersion enforces it, after Flux's optional "v".
_STRICT_RE: Final = re.compile(
    r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


class SemverPolicy(NewestFirst):
    """Tags whose version satisfies a Masterminds v3 range; newest is highest precedence.

    With ``pattern``/``extract`` (Flux's ``filterTags``) the version is read from the value
    extracted from the tag; with ``strict`` only full ``X.Y.Z`` versions count.
    """

    __slots__ = ("filter", "range", "strict")

    def __init__(
        self,
        version_range: str | VersionRange,
        *,
        pattern: str = "",
        extract: str = "",
        strict: bool = False,
    ) -> None:
        self.range = (
            version_range
            if isinstance(version_range, VersionRange)
            else VersionRange.parse(version_range)
        )
        self.filter = TagFilter(pattern, extract, kind="semver")
        self.strict = strict

    def version(self, tag: str) -> semver.Version | None:
        """The version ``tag`` names under this policy, or None."""
        value = self.filter.value(tag)
        if value is None:
            return None
        return parse_strict_version(value) if self.strict else parse_version(value)

    def skip_reason(self, tag: str) -> str | None:
        value = self.filter.value(tag)
        if value is None:
            return f"does not match pattern {self.filter.pattern.pattern!r}"  # type: ignore[union-attr]
        version = parse_strict_version(value) if self.strict else parse_version(value)
        if version is None:
            what = "a full X.Y.Z version" if self.strict else "a version"
            shown = f" ({value!r})" if value != tag else ""
            return f"not {what}{shown}"
        if not self.range.allows(version):
            return f"outside {self.range}"
        return None

    def ordered(self, tags: Iterable[str]) -> list[str]:
        eligible: list[tuple[semver.Version, str]] = []
        for tag in _unique(tags):
            version = self.version(tag)
            if version is not None and self.range.allows(version):
                eligible.append((version, tag))

        def newer_first(a: tuple[semver.Version, str], b: tuple[semver.Version, str]) -> int:
            return -(_compare(a[0], b[0]) or _tag_cmp(a[1], b[1]))

        eligible.sort(key=cmp_to_key(newer_first))
        return [tag for _, tag in eligible]

    def is_downgrade(self, candidate: str, current: str) -> bool:
        new = self.version(candidate)
        if new is None:
            return True
        old = self.version(current)
        if old is None:
            return False
        return _compare(new, old) < 0

    def describe(self) -> str:
        strict = " strict" if self.strict else ""
        return f"semver {self.range}{strict}{self.filter.describe()}"

    def __repr__(self) -> str:
        return f"SemverPolicy({self.range.text!r})"


_NUMBER_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> Decimal | None:
    """A finite decimal number as Go's ParseFloat reads it, exactly; None otherwise.

    Infinities, NaN and hexadecimal floats are not numbers here: they do not order tags.
    """
    if not _NUMBER_RE.fullmatch(text) or not math.isfinite(float(text)):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond decimal's range; float already rounded it
        return Decimal(float(text))


class RegexPolicy(NewestFirst):
    """Flux's ``filterTags`` + ``alphabetical``/``numerical`` policy over the extracted value.

    ``numerical`` fails closed as Flux's does: when any tag the pattern keeps extracts a
    value that is not a number, ``ordered`` raises ``TagPolicyFailed`` and no tag is a
    candidate, rather than the number-less tag being silently dropped.
    """

    __slots__ = ("direction", "filter", "order")

    def __init__(
        self,
        pattern: str,
        extract: str = "",
        order: str = "alphabetical",
        direction: str = "asc",
    ) -> None:
        if order not in ORDERS:
            raise InvalidReference(f"regex order {order!r} is not one of {', '.join(ORDERS)}")
        if direction not in DIRECTIONS:
            raise InvalidReference(
                f"regex direction {direction!r} is not one of {', '.join(DIRECTIONS)}"
            )
        self.filter = TagFilter(pattern or "(?:)", extract)
        self.order: Order = "numerical" if order == "numerical" else "alphabetical"
        self.direction: Direction = "desc" if direction == "desc" else "asc"

    @property
    def pattern(self) -> Regexp:
        assert self.filter.pattern is not None  # a regex policy always has one
        return self.filter.pattern

    @property
    def extract(self) -> str:
        return self.filter.extract

    def extracted(self, tag: str) -> str | None:
        """The value ``tag`` is ordered by, or None when the pattern does not match it."""
        return self.filter.value(tag)

    def _key(self, tag: str) -> str | Decimal | None:
        value = self.extracted(tag)
        if value is None or self.order == "alphabetical":
            return value
        return _number(value)

    def _value_cmp(self, a: str | Decimal, b: str | Decimal) -> int:
        """Positive when ``a`` is newer than ``b`` by the policy's order alone."""
        raw = (a > b) - (a < b)  # type: ignore[operator]
        return raw if self.direction == "asc" else -raw

    def skip_reason(self, tag: str) -> str | None:
        value = self.extracted(tag)
        if value is None:
            return f"does not match pattern {self.pattern.pattern!r}"
        if self.order == "numerical" and _number(value) is None:
            return f"extracts {value!r}, which is not a number"
        return None

    def ordered(self, tags: Iterable[str]) -> list[str]:
        keyed: list[tuple[str | Decimal, str]] = []
        for tag in _unique(tags):
            value = self.extracted(tag)
            if value is None:
                continue
            key = _number(value) if self.order == "numerical" else value
            if key is None:
                raise TagPolicyFailed(
                    f"numerical: tag {tag!r} extracts {value!r}, which is not a number; "
                    "the policy orders no tag until the pattern keeps only numbers"
                )
            keyed.append((key, tag))

        def newer_first(a: tuple[str | Decimal, str], b: tuple[str | Decimal, str]) -> int:
            return -(self._value_cmp(a[0], b[0]) or _tag_cmp(a[1], b[1]))

        keyed.sort(key=cmp_to_key(newer_first))
        return [tag for _, tag in keyed]

    def is_downgrade(self, candidate: str, current: str) -> bool:
        new = self._key(candidate)
        if new is None:
            return True
        old = self._key(current)
        if old is None:
            return False
        return _sign(self._value_cmp(new, old)) < 0

    def describe(self) -> str:
        extract = f" extract {self.extract!r}" if self.extract else ""
        return f"regex {self.pattern.pattern!r}{extract} {self.order} {self.direction}"

    def __repr__(self) -> str:
        return (
            f"RegexPolicy({self.pattern.pattern!r}, {self.extract!r}, "
            f"{self.order!r}, {self.direction!r})"
        )


# The distribution tag grammar (as imagedrift.core.refs.is_tag checks it).
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class SameTagPolicy(NewestFirst):
    """The tracked tag itself; what changes is its digest, which the caller follows."""

    __slots__ = ("tag",)

    def __init__(self, tag: str) -> None:
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
            raise InvalidReference(f"sameTag tag {tag!r} is not a valid image tag")
        self.tag = tag

    def skip_reason(self, tag: str) -> str | None:
        return None if tag == self.tag else f"not the followed tag {self.tag!r}"

    def ordered(self, tags: Iterable[str]) -> list[str]:
        return [self.tag] if self.tag in set(tags) else []

    def is_downgrade(self, candidate: str, current: str) -> bool:
        # Only the tracked tag is ever a candidate; re-rolling it (a new digest) is not a
        # downgrade, whatever the workload runs now. Any other tag is never rolled.
        return candidate != self.tag

    def describe(self) -> str:
        return f"sameTag {self.tag!r}"

    def __repr__(self) -> str:
        return f"SameTagPolicy({self.tag!r})"
