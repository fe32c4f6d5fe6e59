"""Edit YAML text by splicing: parse only to find a value, then replace exactly its characters.

Re-serialising a file loses what people put there on purpose (comments, quoting, block
scalars, blank lines, ``---``, CRLF line endings). So the text is never re-emitted:
PyYAML composes it only to locate nodes, and their marks (character offsets into the very
``str`` given, a leading BOM counted as one character, CRLF as two) delimit the span to
replace. The new value keeps the old quoting style, and is quoted when a plain scalar would
read as something other than a string (in YAML 1.1 as PyYAML and Helm read it, or in 1.2 as
Go's yaml.v3 does).

Aliases are kept as ``AliasNode`` (PyYAML would hand back the anchored node, whose marks
point at the anchor), so a walk never follows them and an edit never lands on the anchor by
mistake. A value that cannot be changed in place alone (an alias, an anchored or tagged
value, a block scalar, an empty or multi-line value) raises ``NotSpliceable`` with the reason.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.emitter import Emitter
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from imagedrift.errors import ImageDriftError

STR_TAG = "tag:yaml.org,2002:str"
# Plain scalars YAML 1.2 (Go's yaml.v3) or yaml.v2's 1.1 booleans read as non-strings, where
# PyYAML's 1.1 resolver may not ("1e3", "0o17", "y"): these are quoted too.
_AMBIGUOUS = re.compile(
    r"[-+]?(\.inf|\.nan|0o[0-7]+|0x[0-9a-f]+|[0-9][0-9_]*(\.[0-9_]*)?(e[-+]?[0-9]+)?"
    r"|\.[0-9]+(e[-+]?[0-9]+)?)|y|n|yes|no|on|off|true|false|null|~",
    re.IGNORECASE,
)
_PROPERTY = re.compile(r"([&!])(\S*)\s+")
_COMMENT = re.compile(r"[ \t]+#(.*)")
_DASH = re.compile(r" *- +")


class YamlSyntaxError(ImageDriftError, ValueError):
    """The text does not parse as YAML; the message names the line."""


class NotSpliceable(ImageDriftError):
    """The value cannot be changed in place without changing others; the message says why."""


@dataclass(frozen=True, order=True)
class Span:
    """Replace ``text[start:end]`` with ``text`` (``start == end``: insert)."""

    start: int
    end: int
    text: str


class AliasNode(Node):
    """``*anchor`` where it is written; ``value`` is the anchored node (not walked)."""

    id = "alias"

    def __init__(self, anchor: str, target: Node, start_mark: Any, end_mark: Any) -> None:
        super().__init__("", target, start_mark, end_mark)
        self.anchor = anchor


class _Loader(Reader, Scanner, Parser, Composer, Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        Resolver.__init__(self)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) and event.anchor in self.anchors:
            self.get_event()  # type: ignore[no-untyped-call]
            target = self.anchors[event.anchor]
            return AliasNode(str(event.anchor), target, event.start_mark, event.end_mark)
        return super().compose_node(parent, index)  # undefined aliases fail there


def documents(text: str) -> list[Node]:
    """The root node of each document of ``text``; raise ``YamlSyntaxError`` when it does
    not parse (the message names the line)."""
    loader = _Loader(text)
    try:
        roots: list[Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                roots.append(node)
        return roots
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"line {line}: {problem}") from exc
    except yaml.YAMLError as exc:  # the reader: a character YAML does not allow
        raise YamlSyntaxError(str(exc).replace("\n", " ")) from exc
    except RecursionError as exc:  # PyYAML composes recursively
        raise YamlSyntaxError("nested too deeply to read") from exc
    finally:
        loader.dispose()


def parse_files(
    files: Mapping[str, str], wanted: Callable[[str], bool]
) -> tuple[dict[str, list[Node]], dict[str, str]]:
    """The documents of each ``wanted`` file (path -> text), and why the others do not parse."""
    docs: dict[str, list[Node]] = {}
    broken: dict[str, str] = {}
    for path, text in ((path, text) for path, text in files.items() if wanted(path)):
        try:
            docs[path] = documents(text)
        except YamlSyntaxError as exc:
            broken[path] = f"{path} does not parse ({exc})"
    return docs, broken


def walk(node: Node) -> Iterator[Node]:
    """``node`` and everything under it, depth first, in text order; aliases are yielded,
    never followed."""
    yield node
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield from walk(key)
            yield from walk(value)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from walk(item)


def line_of(node: Node) -> int:
    """The 1-based line where ``node`` starts."""
    return int(node.start_mark.line) + 1


def scalar(node: Node | None) -> str | None:
    """The string value of a scalar, read through an alias; None for anything else."""
    if isinstance(node, AliasNode):
        node = node.value
    return str(node.value) if isinstance(node, ScalarNode) else None


def child(node: Node | None, key: str) -> Node | None:
    """The value of ``key`` in mapping ``node`` (None: absent, or not a mapping)."""
    if not isinstance(node, MappingNode):
        return None
    for k, value in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return value  # type: ignore[no-any-return]
    return None


def properties(text: str, node: Node) -> tuple[str, str]:
    """(anchor, tag) written before ``node`` ("" each when absent)."""
    anchor = tag = ""
    pos = node.start_mark.index
    while match := _PROPERTY.match(text, pos):
        if match[1] == "&":
            anchor = match[2]
        else:
            tag = match[1] + match[2]
        pos = match.end()
    return anchor, tag


def lookup(text: str, root: Node, keys: str | Sequence[str]) -> Node | None:
    """The node at ``keys`` (or dotted path, ``\\.`` escaping a dot) below mapping ``root``,
    for editing; None when a key is absent.

    Raises ``NotSpliceable`` when the way there goes through an alias, a merge key (``<<``)
    or an anchored collection: an edit there would change other places too, or land in the
    wrong one.
    """
    node: Node | None = root
    if isinstance(keys, str):
        keys = [key.replace("\\.", ".") for key in re.split(r"(?<!\\)\.", keys)]
    for key in keys:
        where = f"line {line_of(node)}" if node is not None else ""
        if isinstance(node, AliasNode):
            raise NotSpliceable(f"{where}: {key!r} is reached through the alias *{node.anchor}")
        if node is None or not isinstance(node, MappingNode):
            return None
        anchor, _ = properties(text, node)
        if anchor:
            raise NotSpliceable(f"{where}: {key!r} is inside &{anchor}, shared by its aliases")
        found = child(node, key)
        if sum(isinstance(k, ScalarNode) and k.value == key for k, _ in node.value) > 1:
            raise NotSpliceable(f"{where}: {key!r} is set twice; readers disagree on which wins")
        if found is None and child(node, "<<") is not None:
            raise NotSpliceable(f"{where}: {key!r} may come through a merge key (<<)")
        node = found
    return node


def why_not_spliceable(text: str, node: Node) -> str:
    """Why ``node`` cannot be replaced in place on its own ("" when it can)."""
    where = f"line {line_of(node)}"
    if isinstance(node, AliasNode):
        return (
            f"{where}: the value is the alias *{node.anchor} of a value set elsewhere; "
            f"change it where &{node.anchor} is defined"
        )
    if not isinstance(node, ScalarNode):
        return f"{where}: the value is a {getattr(node, 'id', 'node')}, not a single value"
    anchor, tag = properties(text, node)
    if anchor:
        return f"{where}: the value carries the anchor &{anchor}; its aliases would change too"
    if tag:
        return f"{where}: the value has the explicit tag {tag}"
    if node.style in ("|", ">"):
        return f"{where}: the value is a block scalar ({node.style})"
    start, end = node.start_mark.index, node.end_mark.index
    if start == end:
        return f"{where}: the value is empty; there is nothing to replace in place"
    if "\n" in text[start:end] or "\r" in text[start:end]:
        return f"{where}: the value spans several lines"
    return ""


def plain_ok(value: str) -> bool:
    """True when ``value`` written plain reads back as the same string everywhere (block
    and flow context, YAML 1.1 and 1.2)."""
    analysis = Emitter(io.StringIO()).analyze_scalar(value)
    # PyYAML's emitter allows no ":" in flow plain scalars, though its parser (and YAML 1.2)
    # read "repo:tag" there: block rules, and none of the flow indicators.
    if not analysis.allow_block_plain or analysis.multiline or set(value) & set(",[]{}"):
        return False
    if _AMBIGUOUS.fullmatch(value):
        return False
    tag = Resolver().resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == STR_TAG)


def render(value: str, style: str | None = None) -> str:
    """``value`` as a YAML scalar: in ``style`` ("'" or '"') when given, else plain when
    that is safe, else double-quoted."""
    if style == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if style is None and plain_ok(value):
        return value
    # JSON's escapes are a subset of YAML's double-quoted ones.
    return json.dumps(value, ensure_ascii=False)


def replace_scalar(text: str, node: Node, new_value: str) -> Span:
    """The span that sets scalar ``node`` to ``new_value`` in its own quoting style (a plain
    one is quoted only when plain would change the meaning). Raises ``NotSpliceable``."""
    why = why_not_spliceable(text, node)
    if why:
        raise NotSpliceable(why)
    style = node.style if isinstance(node, ScalarNode) and node.style in ("'", '"') else None
    return Span(node.start_mark.index, node.end_mark.index, render(new_value, style))


def apply(text: str, spans: Iterable[Span]) -> str:
    """``text`` with every span applied (back to front, so offsets stay valid). Spans must
    lie inside the text and not overlap; two insertions at one offset are ambiguous."""
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    for span in ordered:
        if not 0 <= span.start <= span.end <= len(text):
            raise ValueError(f"span {span.start}:{span.end} is outside the text")
    for a, b in itertools.pairwise(ordered):
        if a.end > b.start or a.start == a.end == b.start == b.end:
            raise ValueError(f"spans {a.start}:{a.end} and {b.start}:{b.end} overlap")
    out = text
    for span in reversed(ordered):
        out = out[: span.start] + span.text + out[span.end :]
    return out


def line_end(text: str, index: int) -> int:
    """The offset just past the line break that ends the line holding ``index``."""
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def newline(text: str, index: int = -1) -> str:
    """The line break of the line holding ``index`` (of the first line when -1, or when
    that line has none): CRLF files stay CRLF."""
    nl = text.find("\n", max(index, 0)) if index >= 0 else -1
    if nl < 0:
        nl = text.find("\n")
    return "\r\n" if nl > 0 and text[nl - 1] == "\r" else "\n"


def trailing_comment(text: str, node: Node) -> str:
    """The comment right after ``node`` on its line (without ``#``), "" when none."""
    end = node.end_mark.index
    rest = text[end : line_end(text, end)].rstrip("\r\n")
    match = _COMMENT.match(rest)
    return match[1].strip() if match else ""


def last_value(node: Node) -> Node:
    """The node written last inside ``node`` (through block collections, whose end is a
    line end): the line after it is where new keys of ``node`` go."""
    while isinstance(node, MappingNode | SequenceNode) and node.value and not node.flow_style:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return node


def _single_line(text: str, node: Node) -> None:
    block = isinstance(node, ScalarNode) and node.style in ("|", ">")
    if block or not isinstance(node, ScalarNode | AliasNode):
        raise NotSpliceable(
            f"line {line_of(node)}: no line to add after this {getattr(node, 'id', 'node')}"
        )
    if "\n" in text[node.start_mark.index : node.end_mark.index]:
        raise NotSpliceable(f"line {line_of(node)}: the value before the new lines spans lines")


def insert_lines(text: str, after: Node, lines: Sequence[str]) -> Span:
    """Whole ``lines`` inserted after the line on which scalar ``after`` ends, with that
    line's own line break. Raises ``NotSpliceable`` when ``after`` does not end a line."""
    _single_line(text, after)
    at = line_end(text, after.end_mark.index)
    nl = newline(text, after.end_mark.index)
    body = "".join(line + nl for line in lines)
    if at == len(text) and not text.endswith("\n"):  # the last line had no break
        body = nl + body[: -len(nl)]
    return Span(at, at, body)


def append_items(text: str, seq: Node, items: Sequence[Sequence[str]]) -> Span:
    """New entries at the end of sequence ``seq``, written as its last entry is: a block
    entry's ``- `` prefix and indentation, or ``, item`` in a flow sequence (one-line items
    only). Each item is its lines without indentation. Raises ``NotSpliceable``."""
    if not isinstance(seq, SequenceNode):
        raise NotSpliceable(f"line {line_of(seq)}: not a list of entries")
    if seq.flow_style:
        if any(len(item) != 1 for item in items):
            raise NotSpliceable(f"line {line_of(seq)}: a flow list takes one-line entries only")
        joined = ", ".join(item[0] for item in items)
        if not seq.value:
            at = seq.end_mark.index - 1  # just before "]"
            return Span(at, at, joined)
        at = seq.value[-1].end_mark.index
        if isinstance(seq.value[-1], MappingNode | SequenceNode):
            raise NotSpliceable(f"line {line_of(seq)}: the last entry is not a single value")
        return Span(at, at, ", " + joined)
    last = seq.value[-1]
    start = last.start_mark.index
    prefix = text[text.rfind("\n", 0, start) + 1 : start]
    if not _DASH.fullmatch(prefix):
        raise NotSpliceable(f"line {line_of(last)}: the last entry does not start its line")
    indent = " " * len(prefix)
    lines = [(prefix if i == 0 else indent) + line for item in items for i, line in enumerate(item)]
    return insert_lines(text, last_value(last), lines)


def insert_in_mapping(text: str, mapping: Node, pairs: Sequence[tuple[str, str]]) -> Span:
    """New ``key: value`` pairs (already rendered) after the last pair of ``mapping``: one
    line each at the mapping's own indentation, or ``, key: value`` in a flow mapping.
    Raises ``NotSpliceable``."""
    if not isinstance(mapping, MappingNode) or not mapping.value:
        raise NotSpliceable(f"line {line_of(mapping)}: not a mapping with keys")
    last = last_value(mapping)
    if mapping.flow_style:
        last = mapping.value[-1][1]
        _single_line(text, last)
        joined = "".join(f", {key}: {value}" for key, value in pairs)
        return Span(last.end_mark.index, last.end_mark.index, joined)
    indent = " " * mapping.value[0][0].start_mark.column
    return insert_lines(text, last, [f"{indent}{key}: {value}" for key, value in pairs])


def unshared(text: str, node: Node | None) -> None:
    """Raise ``NotSpliceable`` when ``node`` is an alias or anchored: what is edited inside
    it would change elsewhere too."""
    if isinstance(node, AliasNode) or (node is not None and properties(text, node)[0]):
        raise NotSpliceable(why_not_spliceable(text, node) or f"line {line_of(node)}: anchored")


def entries(text: str, node: Node | None) -> list[Node]:
    """The entries of a list about to be edited (none when ``node`` is not a list). Raises
    ``NotSpliceable`` for an alias or an anchored list: its entries are shared."""
    unshared(text, node)
    return list(node.value) if isinstance(node, SequenceNode) else []
