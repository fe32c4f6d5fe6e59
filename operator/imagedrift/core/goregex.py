"""Go regular expressions and ``Regexp.Expand`` templates, as Flux users write them.

Flux's ``filterTags`` (and its ``exclusionList``) take Go RE2 patterns and Go ``Expand``
templates. Python's ``re`` reads most RE2 the same way; ``translate`` rewrites the
spellings it does not (``(?<name>...)``, ``\\z``, POSIX classes), and ``expand_template``
fills a template exactly as Go does. Pure.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["expand_template", "template_references", "translate"]

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


def expand_template(template: str, match: re.Match[str]) -> str:
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
        group: str | None = None
        if number >= 0:
            if number <= match.re.groups:
                group = match.group(number)
        elif name in match.re.groupindex:
            group = match.group(name)
        out.append(group or "")
    out.append(template[i:])
    return "".join(out)


_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_RE: Final = re.compile(r"\[:([a-z]+):\]")


def translate(pattern: str) -> str:
    """Translate the RE2 spellings Flux users write that Python's ``re`` spells differently:
    ``(?<name>...)`` named groups, ``\\z`` and POSIX classes such as ``[[:digit:]]``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            pair = pattern[i : i + 2]
            out.append("\\Z" if pair == "\\z" and not in_class else pair)
            i += 2
            continue
        if in_class:
            posix = _POSIX_RE.match(pattern, i)
            if posix is not None and posix.group(1) in _POSIX_CLASSES:
                out.append(_POSIX_CLASSES[posix.group(1)])
                i = posix.end()
                continue
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a leading ] is a literal member
                out.append("\\]")
                i += 1
            continue
        elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)
