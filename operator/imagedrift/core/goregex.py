"""Go regular expressions and ``Regexp.Expand`` templates, as Flux and Argo CD users write
them, matched by RE2 itself.

Flux's ``filterTags`` and ``exclusionList``, Argo CD's ``allowTags`` and the CRD's CEL rules
all read Go ``regexp`` syntax, which is RE2's. ``compile`` hands a pattern to RE2 (Google's
own bindings), after the few rewrites ``gosyntax`` makes where Go and RE2 measurably
differ, so a pattern is accepted, refused and matched exactly as Go does it, in time linear
in the tag whatever the pattern. ``expand_template`` fills a template exactly as Go does.
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import re2

from imagedrift.core.gosyntax import GoSyntaxError, rewrite

__all__ = [
    "Match",
    "RegexError",
    "Regexp",
    "compile_go",
    "expand_template",
    "template_references",
]

_TEMPLATE_NUMBER_LIMIT: Final = 100_000_000  # Go's extract() stops reading numbers at 1e8


def _template_reference(text: str) -> tuple[str, int, int] | None:
    """Go ``regexp.extract``: the name after a ``$``, its group number (-1 for a name) and
    how many characters it took, or None when malformed (the ``$`` is then literal)."""
    brace = text.startswith("{")
    i = start = 1 if brace else 0
    while i < len(text) and (text[i].isalpha() or text[i].isdecimal() or text[i] == "_"):
        i += 1
    if i == start:
        return None
    name = text[start:i]
    if brace:
        if i >= len(text) or text[i] != "}":
            return None
        i += 1
    number = 0
    for ch in name:
        if not "0" <= ch <= "9" or number >= _TEMPLATE_NUMBER_LIMIT:
            number = -1
            break
        number = number * 10 + ord(ch) - ord("0")
    if name[0] == "0" and len(name) > 1:
        number = -1
    return name, number, i


def template_references(template: str) -> list[tuple[str, int]]:
    refs: list[tuple[str, int]] = []
    i = 0
    while (j := template.find("$", i)) >= 0:
        if template.startswith("$", j + 1):
            i = j + 2
            continue
        ref = _template_reference(template[j + 1 :])
        if ref is None:
            i = j + 1
            continue
        refs.append((ref[0], ref[1]))
        i = j + 1 + ref[2]
    return refs


def expand_template(template: str, match: Match) -> str:
    """Go's ``Regexp.Expand``: ``$name``, ``${name}``, ``$1`` and ``$$`` filled from ``match``.

    A reference to a group that does not exist or did not take part in the match expands to
    the empty string; a ``$`` not followed by a name stays a literal ``$``.
    """
    out: list[str] = []
    i = 0
    while (j := template.find("$", i)) >= 0:
        out.append(template[i:j])
        if template.startswith("$", j + 1):
            out.append("$")
            i = j + 2
            continue
        ref = _template_reference(template[j + 1 :])
        if ref is None:
            out.append("$")
            i = j + 1
            continue
        name, number, used = ref
        i = j + 1 + used
        out.append(match.group(number) if number >= 0 else match.named(name))
    out.append(template[i:])
    return "".join(out)


class RegexError(ValueError):
    """A pattern Go's ``regexp`` refuses; the message says why."""


_OPTIONS: Final = re2.Options()
_OPTIONS.log_errors = False  # the refusal is raised, not also written to stderr


@dataclass(frozen=True)
class Match:
    """One match: ``groups[i]`` is group i's text (0 the whole match), None when group i
    took no part; ``names[i]`` its name ("" when unnamed)."""

    groups: tuple[str | None, ...]
    names: tuple[str, ...]

    def group(self, number: int) -> str:
        """Group ``number``'s text; "" when it does not exist or took no part."""
        if 0 <= number < len(self.groups):
            return self.groups[number] or ""
        return ""

    def named(self, name: str) -> str:
        """Go's ``Expand``: the first group called ``name`` that took part, else ""."""
        for group, called in zip(self.groups, self.names, strict=True):
            if called == name and group is not None:
                return group
        return ""


@dataclass(frozen=True)
class Regexp:
    """A compiled Go pattern: ``pattern`` as written, ``groups`` capture groups, ``names``
    their names in order (index 0 is the whole match)."""

    pattern: str
    names: tuple[str, ...]
    _compiled: Any = field(repr=False, compare=False)

    @property
    def groups(self) -> int:
        return len(self.names) - 1

    @property
    def groupindex(self) -> Mapping[str, int]:
        """Each name's first group, as Go's ``SubexpIndex`` gives it."""
        found: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if name:
                found.setdefault(name, i)
        return found

    def search(self, text: str) -> Match | None:
        """Go's ``FindStringSubmatch``: the leftmost match anywhere in ``text``, or None."""
        found = self._compiled.search(text)
        if found is None:
            return None
        groups = tuple(found.group(i) for i in range(len(self.names)))
        return Match(groups, self.names)

    def matches(self, text: str) -> bool:
        """Go's ``MatchString``: does the pattern match anywhere in ``text``?"""
        return self._compiled.search(text) is not None


@lru_cache(maxsize=512)
def compile_go(pattern: str) -> Regexp:
    """``pattern`` compiled as Go's ``regexp.Compile`` would; RegexError says why not."""
    try:
        rewritten = rewrite(pattern)
        compiled = re2.compile(rewritten.pattern, _OPTIONS)
    except GoSyntaxError as exc:
        raise RegexError(f"error parsing regexp: {exc}") from None
    except re2.error as exc:
        raise RegexError(f"error parsing regexp: {_text(exc)}") from None
    names = ("", *rewritten.names)
    if len(names) != compiled.groups + 1:  # the scan and RE2 disagree: trust RE2's names
        by_index = {index: name for name, index in compiled.groupindex.items()}
        names = tuple(by_index.get(i, "") for i in range(compiled.groups + 1))
    return Regexp(pattern, names, compiled)


def _text(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
