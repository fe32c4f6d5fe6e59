"""Output formats shared by every command: ``table`` for people, ``json``/``yaml`` for tools.

Every command builds one plain document (the JSON contract, see ``imagedrift.cli``) and a
table renderer that reads only that document, so what a person sees and what a script
parses never disagree.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.refs import short_digest

API_VERSION = "cli.imagedrift.io/v1"
FORMATS = ("table", "json", "yaml")
DEFAULT_WIDTH = 100
NONE = "-"


def document(kind: str, **fields: Any) -> dict[str, Any]:
    """A versioned output document: ``apiVersion``, ``kind``, then the command's fields."""
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def render(doc: Mapping[str, Any], fmt: str, table: Callable[[Mapping[str, Any]], str]) -> str:
    """``doc`` as ``fmt``; always ends with a newline."""
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False))
    text = table(doc)
    return text if text.endswith("\n") else text + "\n"


def parse_time(value: str) -> datetime | None:
    return parse_timestamp(value) if value else None


def age(value: str, now: datetime) -> str:
    """``3m ago`` for an RFC 3339 timestamp, ``-`` when absent or unreadable."""
    then = parse_time(value)
    if then is None:
        return NONE
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def when(value: str, now: datetime) -> str:
    """``2024-05-01T10:00:00Z (3m ago)``, or ``-``."""
    return f"{value} ({age(value, now)})" if parse_time(value) else NONE


def short(digest: str) -> str:
    return short_digest(digest) or NONE


def short_image(image: str) -> str:
    """An image reference with its digest abbreviated (``repo@sha256:0123456789ab``)."""
    name, sep, digest = image.partition("@")
    return f"{name}@{short_digest(digest)}" if sep else (image or NONE)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with ``...`` in the middle."""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    head = (width - 3) // 2
    tail = width - 3 - head
    return text[:head] + "..." + text[len(text) - tail :]


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    shrink: int | None = None,
) -> str:
    """Columns padded to their widest cell. When a row is wider than ``width``, column
    ``shrink`` (default the widest) is cut to fit, the cut marked ``...``."""
    if not rows:
        return ""
    cells = [list(headers), *[[c or NONE for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    overflow = sum(widths) + 2 * (len(widths) - 1) - width
    if overflow > 0:
        col = widths.index(max(widths)) if shrink is None else shrink
        widths[col] = max(len(headers[col]), widths[col] - overflow)
    lines = []
    for row in cells:
        parts = [
            (cell if len(cell) <= w else cell[: max(0, w - 3)] + "...")[:w].ljust(w)
            for cell, w in zip(row, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, str]], width: int, indent: int = 2) -> str:
    """``label: value`` lines, labels aligned, long values wrapped under themselves."""
    if not pairs:
        return ""
    label_width = max(len(label) for label, _ in pairs) + 1
    lead = " " * indent
    out = []
    for label, value in pairs:
        prefix = f"{lead}{label + ':':<{label_width}} "
        wrapped = textwrap.wrap(
            value or NONE,
            width=max(20, width - len(prefix)),
            break_long_words=True,
            break_on_hyphens=False,
        ) or [NONE]
        out.append(prefix + wrapped[0])
        out.extend(" " * len(prefix) + line for line in wrapped[1:])
    return "\n".join(out)


def wrap(text: str, width: int, indent: int) -> str:
    """``text`` wrapped to ``width``, every line indented by ``indent`` spaces."""
    lead = " " * indent
    lines = textwrap.wrap(
        text, width=max(20, width - indent), break_long_words=True, break_on_hyphens=False
    )
    return "\n".join(lead + line for line in lines or [NONE])


def verbatim(text: str, indent: int) -> str:
    """``text`` line by line as written (a diff, a commit message: never wrapped), every
    line indented by ``indent`` spaces; blank lines stay empty."""
    lead = " " * indent
    return "\n".join(lead + line if line.strip() else "" for line in text.rstrip("\n").split("\n"))


def workload(ref: str) -> str:
    """``deployment/shop/web`` (as status records it) in kubectl's ``deployment/web -n shop``."""
    parts = ref.split("/")
    if len(parts) != 3:
        return ref
    kind, namespace, name = parts
    return f"{kind}/{name} -n {namespace}"
