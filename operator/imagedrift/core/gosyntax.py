"""Where Go's ``regexp`` syntax and RE2's differ, the rewrite that makes RE2 read a pattern
exactly as Go does.

Go's ``regexp/syntax`` was ported from RE2, and RE2 accepts and matches the same patterns
in the same way, with three exceptions the oracle test (``tests/integration/
test_goregexp_oracle.py``, Go's own ``regexp`` over thousands of generated patterns)
measured, and only those are handled here:

- ``\\C`` (any byte): RE2 accepts it, Go refuses it.
- Capture names: Go allows ASCII letters, digits and ``_`` only (``isValidCaptureName``);
  RE2 also takes other Unicode word characters.
- Unicode class names (``\\pL``, ``\\p{Greek}``, ``\\P{^Lu}``): Go looks a name up loosely
  (``canonicalName``: case, ``_``, ``-`` and spaces ignored, so ``\\p{greek}`` and
  ``\\pl`` are classes), knows ``Cn``, ``LC``, ``Assigned`` and ``ASCII``, which RE2 does
  not, and refuses script names that keep an underscore (``\\p{Old_Italic}``), which RE2
  takes. Every name Go accepts is rewritten to the spelling RE2 knows; for the four RE2
  lacks, to their ASCII members, which is all a tag can hold (tags are ASCII, by the OCI
  distribution grammar, before any pattern sees them).

Everything else is passed to RE2 untouched. The scan also collects the name of every
capture group in order, because Go's ``Expand`` reads a name repeated in a pattern from the
first group of that name that took part in the match, and RE2 reports one index per name.
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["GoSyntaxError", "Rewritten", "rewrite"]

# Go 1.26 (Unicode 15.0.0): unicode.Scripts keys that canonicalName leaves as they are
# (the others, with an underscore or an inner capital, Go cannot look up), and
# unicode.Categories keys, and Any (which Go special-cases). All of them are RE2 names too.
_SCRIPT_NAMES: Final = """
    Adlam Ahom Arabic Armenian Avestan Balinese Bamum Batak Bengali Bhaiksuki Bopomofo
    Brahmi Braille Buginese Buhid Carian Chakma Cham Cherokee Chorasmian Common Coptic
    Cuneiform Cypriot Cyrillic Deseret Devanagari Dogra Duployan Elbasan Elymaic Ethiopic
    Georgian Glagolitic Gothic Grantha Greek Gujarati Gurmukhi Han Hangul Hanunoo Hatran
    Hebrew Hiragana Inherited Javanese Kaithi Kannada Katakana Kawi Kharoshthi Khmer Khojki
    Khudawadi Lao Latin Lepcha Limbu Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic
    Manichaean Marchen Medefaidrin Miao Modi Mongolian Mro Multani Myanmar Nabataean
    Nandinagari Newa Nko Nushu Ogham Oriya Osage Osmanya Palmyrene Phoenician Rejang Runic
    Samaritan Saurashtra Sharada Shavian Siddham Sinhala Sogdian Soyombo Sundanese Syriac
    Tagalog Tagbanwa Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta
    Toto Ugaritic Vai Vithkuqi Wancho Yezidi Yi Any"""
_CATEGORY_NAMES: Final = """
    C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z
    Zl Zp Zs"""
_SCRIPTS: Final = frozenset(_SCRIPT_NAMES.split())
_CATEGORIES: Final = frozenset(_CATEGORY_NAMES.split())
# unicode.CategoryAliases, keys as canonicalName spells them.
_ALIASES: Final = {
    "Casedletter": "Lc",
    "Closepunctuation": "Pe",
    "Combiningmark": "M",
    "Connectorpunctuation": "Pc",
    "Control": "Cc",
    "Currencysymbol": "Sc",
    "Dashpunctuation": "Pd",
    "Decimalnumber": "Nd",
    "Enclosingmark": "Me",
    "Finalpunctuation": "Pf",
    "Format": "Cf",
    "Initialpunctuation": "Pi",
    "Letter": "L",
    "Letternumber": "Nl",
    "Lineseparator": "Zl",
    "Lowercaseletter": "Ll",
    "Mark": "M",
    "Mathsymbol": "Sm",
    "Modifierletter": "Lm",
    "Modifiersymbol": "Sk",
    "Nonspacingmark": "Mn",
    "Number": "N",
    "Openpunctuation": "Ps",
    "Other": "C",
    "Otherletter": "Lo",
    "Othernumber": "No",
    "Otherpunctuation": "Po",
    "Othersymbol": "So",
    "Paragraphseparator": "Zp",
    "Privateuse": "Co",
    "Punctuation": "P",
    "Separator": "Z",
    "Spaceseparator": "Zs",
    "Spacingmark": "Mc",
    "Surrogate": "Cs",
    "Symbol": "S",
    "Titlecaseletter": "Lt",
    "Unassigned": "Cn",
    "Uppercaseletter": "Lu",
    "Cntrl": "Cc",
    "Digit": "Nd",
    "Punct": "P",
}
# The classes Go knows and RE2 does not, by what a tag can hold: (member, negated member)
# inside a class, (class, negated class) outside. A negated member leaves out U+017F and
# U+212A too, which fold to s and k: Go folds a class before it negates it. Cn has no
# ASCII members, like Cs (surrogates, which no text holds). A member list starts with \p{Cs}
# so that, like Go's \p, it cannot end a range (Go refuses [!-\p{Lc}]).
_NOT_ASCII: Final = "\\p{Cs}\\x80-\\x{17E}\\x{180}-\\x{2129}\\x{212B}-\\x{10FFFF}"
_ASCII_ONLY: Final[dict[str, tuple[tuple[str, str], tuple[str, str]]]] = {
    "Cn": (("\\p{Cs}", "\\P{Cs}"), ("\\p{Cs}", "\\P{Cs}")),
    "Assigned": (("\\P{Cs}", "\\p{Cs}"), ("\\P{Cs}", "\\p{Cs}")),
    "Ascii": (("\\p{Cs}\\x00-\\x7F", _NOT_ASCII), ("[\\x00-\\x7F]", "[^\\x00-\\x7F]")),
    "Lc": (
        ("\\p{Cs}A-Za-z", "\\p{Cs}\\x00-@\\[-\\x60{-\\x7F" + _NOT_ASCII),
        ("[A-Za-z]", "[^A-Za-z]"),
    ),
}
_SEPARATORS: Final = frozenset("_- ")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class GoSyntaxError(ValueError):
    """A pattern Go's ``regexp`` refuses and RE2 would take; the message is Go's."""


@dataclass(frozen=True)
class Rewritten:
    """``pattern`` for RE2, and the name of each capture group in order ("" when unnamed)."""

    pattern: str
    names: tuple[str, ...]


def _canonical(name: str) -> str:
    """Go's ``canonicalName``: first letter upper, the rest lower, separators dropped."""
    out: list[str] = []
    for ch in name:
        if ch in _SEPARATORS:
            continue
        if not out:
            out.append(ch.upper() if "a" <= ch <= "z" else ch)
        else:
            out.append(ch.lower() if "A" <= ch <= "Z" else ch)
    return "".join(out)


def _unicode_class(pattern: str, i: int, in_class: bool) -> tuple[str, int] | None:
    """The RE2 spelling of the ``\\p``/``\\P`` class at ``i`` and where it ends, or None when
    the escape is malformed (RE2 then refuses it as Go does)."""
    negated = pattern[i + 1] == "P"
    if i + 2 >= len(pattern):
        return None
    if pattern[i + 2] == "{":
        end = pattern.find("}", i + 3)
        if end < 0:
            return None
        name, after = pattern[i + 3 : end], end + 1
    else:
        name, after = pattern[i + 2], i + 3
    seq = pattern[i:after]
    if name.startswith("^"):
        negated, name = not negated, name[1:]
    key = _canonical(name)
    key = _ALIASES.get(key, key)
    if key in _ASCII_ONLY:
        inside, outside = _ASCII_ONLY[key]
        return (inside if in_class else outside)[negated], after
    if key not in _SCRIPTS and key not in _CATEGORIES:
        raise GoSyntaxError(f"invalid character class range: `{seq}`")
    return f"\\{'P' if negated else 'p'}{{{key}}}", after


def _class_end(pattern: str, i: int, out: list[str]) -> int:
    """Copy the character class opening at ``i`` (rewriting Unicode classes) to ``out``;
    where the pattern goes on. A class that never closes is copied for RE2 to refuse."""
    n = len(pattern)
    out.append("[")
    i += 1
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < n:
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return i + 1
        first = False
        if ch == "[" and pattern.startswith(":", i + 1):
            close = pattern.find(":]", i + 2)
            if close >= 0:
                out.append(pattern[i : close + 2])
                i = close + 2
                continue
        if ch == "\\" and i + 1 < n:
            i = _escape(pattern, i, out, in_class=True)
            continue
        out.append(ch)
        i += 1
    return i


def _escape(pattern: str, i: int, out: list[str], *, in_class: bool) -> int:
    """Copy the escape at ``i`` to ``out``; where the pattern goes on."""
    kind = pattern[i + 1]
    if kind == "C":
        raise GoSyntaxError("invalid escape sequence: `\\C`")
    if kind in "pP":
        found = _unicode_class(pattern, i, in_class)
        if found is not None:
            out.append(found[0])
            return found[1]
    out.append(pattern[i : i + 2])
    return i + 2


def _group_name(pattern: str, i: int) -> tuple[str, int] | None:
    """A named group opening at ``i`` (``(?P<name>`` or ``(?<name>``): its name and where
    the name's ``>`` ends, or None when ``i`` opens no named group."""
    for opener in ("(?P<", "(?<"):
        if pattern.startswith(opener, i) and not pattern.startswith(("(?<=", "(?<!"), i):
            end = pattern.find(">", i + len(opener))
            if end < 0:
                return None
            name = pattern[i + len(opener) : end]
            if not name or any(ch not in _NAME_CHARS for ch in name):
                raise GoSyntaxError(f"invalid named capture: `{pattern[i : end + 1]}`")
            return name, end + 1
    return None


def rewrite(pattern: str) -> Rewritten:
    """``pattern`` as RE2 reads it the way Go does, with its capture names in order.

    Raise ``GoSyntaxError`` for what only Go refuses; anything else malformed is left for
    RE2 to refuse, which it does exactly where Go does.
    """
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and pattern.startswith("Q", i + 1):
            end = pattern.find("\\E", i + 2)
            stop = n if end < 0 else end + 2
            out.append(pattern[i:stop])
            i = stop
        elif ch == "\\" and i + 1 < n:
            i = _escape(pattern, i, out, in_class=False)
        elif ch == "[":
            i = _class_end(pattern, i, out)
        elif ch == "(":
            named = _group_name(pattern, i)
            if named is not None:
                names.append(named[0])
                out.append(pattern[i : named[1]])
                i = named[1]
                continue
            if not pattern.startswith("?", i + 1):
                names.append("")
            out.append(ch)
            i += 1
        else:
            out.append(ch)
            i += 1
    return Rewritten("".join(out), tuple(names))
