"""HTTP/1.1 request heads and responses as plain data, for the push-event receiver.

Pure (bytes in, values out). Strict on purpose: webhook senders send a request line,
CRLF-terminated header fields and a ``Content-Length`` body, and anything else is refused
rather than guessed at, so no two readings of one request can disagree (RFC 9112):

- the request line is ``METHOD SP origin-form SP HTTP/1.0|HTTP/1.1`` (``*`` for OPTIONS);
- at most ``MAX_HEAD`` bytes and ``MAX_FIELDS`` header fields (431 beyond either);
- no obsolete line folding, no whitespace before a colon, no control characters;
- HTTP/1.1 needs ``Host``; ``Content-Length`` is digits and appears at most once
  (the framing is settled before anything else is looked at).

``BadHead`` carries the status to answer and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

MAX_HEAD: Final = 16 * 1024
MAX_FIELDS: Final = 100
TOO_LARGE: Final = 1 << 62  # what a Content-Length with more than 18 digits counts as

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(r"/[\x21-\x7e]*")
_FIELD_CONTROLS: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS: Final = re.compile(r"[0-9]+")


class BadHead(ValueError):
    """A request head that is refused: ``status`` to answer, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class RequestHead:
    """One parsed request head; field names are lower-cased, in the order received."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> str | None:
        """The first value of field ``name`` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.fields if n == name), None)

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    @property
    def content_length(self) -> int | None:
        """The declared body length (checked by ``parse_head``), None without one; more
        than 18 digits counts as ``TOO_LARGE``."""
        value = self.header("content-length")
        if value is None:
            return None
        return int(value) if len(value) <= 18 else TOO_LARGE


def parse_head(raw: bytes) -> RequestHead:
    """Parse ``raw``, a request head up to and including its empty line; raise BadHead."""
    if len(raw) > MAX_HEAD:
        raise BadHead(431, f"request head larger than {MAX_HEAD} bytes")
    text = raw.decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise BadHead(400, "request head does not end with an empty line")
    request_line, *lines = text[:-4].split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise BadHead(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise BadHead(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadHead(400, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    if not (_TARGET.fullmatch(target) or (target == "*" and method == "OPTIONS")):
        raise BadHead(400, "the request target must be a path")
    if len(lines) > MAX_FIELDS:
        raise BadHead(431, f"more than {MAX_FIELDS} header fields")
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            raise BadHead(400, "obsolete line folding in the header")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadHead(400, "malformed header field")
        value = value.strip(" \t")
        if _FIELD_CONTROLS.search(value):
            raise BadHead(400, "control character in a header field")
        fields.append((name.lower(), value))
    lengths = [v for n, v in fields if n == "content-length"]
    if len(lengths) > 1:
        raise BadHead(400, "more than one Content-Length")
    if lengths and not _DIGITS.fullmatch(lengths[0]):
        raise BadHead(400, "Content-Length is not a number")
    head = RequestHead(method, target, version, tuple(fields))
    if version == "HTTP/1.1" and head.header("host") is None:
        raise BadHead(400, "HTTP/1.1 request without Host")
    return head


def response(
    status: int,
    payload: Any,
    *,
    headers: dict[str, str] | None = None,
    date: str,
    with_body: bool = True,
) -> bytes:
    """A complete response: ``payload`` as JSON (None: no body), ``Connection: close``
    (the receiver answers one request per connection). ``with_body=False`` for HEAD."""
    body = b"" if payload is None else json.dumps(payload).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: imagedrift-events",
        f"Date: {date}",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    if body:
        lines.append("Content-Type: application/json")
    lines.extend(f"{key}: {value}" for key, value in (headers or {}).items())
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if with_body else head
