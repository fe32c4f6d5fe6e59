"""The receiver's strict HTTP/1.1 request-head reader and its responses, as tables."""

from __future__ import annotations

import pytest

from imagedrift.events.http11 import (
    MAX_FIELDS,
    MAX_HEAD,
    TOO_LARGE,
    BadHead,
    parse_head,
    response,
)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_webhook_request_head() -> None:
    parsed = parse_head(
        head(
            "POST /events?token=abc&x=1 HTTP/1.1",
            "Host: receiver:8443",
            "Content-Type:application/json",
            "X-Imagedrift-Token:  spaced \t",
            "ce-type: a",
            "CE-Type: b",
            "Content-Length: 12",
        )
    )
    assert (parsed.method, parsed.target, parsed.version) == (
        "POST",
        "/events?token=abc&x=1",
        "HTTP/1.1",
    )
    assert parsed.path == "/events"
    assert parsed.query("token") == "abc" and parsed.query("nope") is None
    assert parsed.header("content-type") == "application/json"
    assert parsed.header("X-IMAGEDRIFT-TOKEN") == "spaced"
    assert parsed.header("ce-type") == "a"  # the first of repeated fields
    assert parsed.content_length == 12


@pytest.mark.parametrize(
    ("label", "raw", "status", "reason"),
    [
        ("not terminated", b"GET / HTTP/1.1\r\nHost: x\r\n", 400, "empty line"),
        ("two words", head("GET /"), 400, "request line"),
        ("double space", head("GET  / HTTP/1.1", "Host: x"), 400, "request line"),
        ("bad method", head("G(T / HTTP/1.1", "Host: x"), 400, "method"),
        ("HTTP/2", head("GET / HTTP/2.0", "Host: x"), 400, "HTTP/1.0 and HTTP/1.1"),
        ("junk version", head("GET / SPDY", "Host: x"), 400, "HTTP/1.0 and HTTP/1.1"),
        ("absolute form", head("GET http://a/ HTTP/1.1", "Host: x"), 400, "path"),
        ("asterisk for GET", head("GET * HTTP/1.1", "Host: x"), 400, "path"),
        ("control in target", head("GET /a\x01b HTTP/1.1", "Host: x"), 400, "path"),
        ("non-ascii target", head("GET /caf\xe9 HTTP/1.1", "Host: x"), 400, "path"),
        ("no host", head("GET / HTTP/1.1"), 400, "Host"),
        ("folded", head("GET / HTTP/1.1", "Host: x", "X-A: 1", " 2"), 400, "folding"),
        ("space before colon", head("GET / HTTP/1.1", "Host : x"), 400, "header field"),
        ("no colon", head("GET / HTTP/1.1", "Host: x", "junk"), 400, "header field"),
        ("bare LF in value", head("GET / HTTP/1.1", "Host: x", "X-A: 1\n2"), 400, "control"),
        ("NUL in value", head("GET / HTTP/1.1", "Host: x", "X-A: \x00"), 400, "control"),
        (
            "too many fields",
            head("GET / HTTP/1.1", "Host: x", *(f"X-{i}: v" for i in range(MAX_FIELDS))),
            431,
            "header fields",
        ),
        (
            "too many bytes",
            head("GET / HTTP/1.1", "Host: x", "X-A: " + "v" * MAX_HEAD),
            431,
            "bytes",
        ),
    ],
)
def test_refused_heads(label: str, raw: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadHead) as refused:
        parse_head(raw)
    assert refused.value.status == status, label
    assert reason in str(refused.value), label


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (head("GET / HTTP/1.0"), True),  # HTTP/1.0 needs no Host
        (head("OPTIONS * HTTP/1.1", "Host: x"), True),
        (head("GET / HTTP/1.1", "Host: x", *(f"X-{i}: v" for i in range(MAX_FIELDS - 1))), True),
        (head("GET /?a=%20b HTTP/1.1", "Host: x", "X-Tab: a\tb"), True),
    ],
)
def test_accepted_edge_heads(raw: bytes, accepted: bool) -> None:
    assert parse_head(raw).method in ("GET", "OPTIONS")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((), None),
        (("Content-Length: 0",), 0),
        (("Content-Length: 1048576",), 1048576),
        (("Content-Length: " + "9" * 18,), int("9" * 18)),
        (("Content-Length: " + "9" * 5000,), TOO_LARGE),  # not int()-ed: no huge numbers
        (("Content-Length: -1",), "not a number"),
        (("Content-Length: 1e3",), "not a number"),
        (("Content-Length: \xb2",), "not a number"),  # a digit to str.isdigit, not to HTTP
        (("Content-Length: 1, 1",), "not a number"),
        (("Content-Length: 5", "Content-Length: 5"), "more than one"),
    ],
)
def test_content_length(fields: tuple[str, ...], expected: int | str | None) -> None:
    raw = head("POST / HTTP/1.1", "Host: x", *fields)
    if isinstance(expected, str):
        with pytest.raises(BadHead, match=expected) as refused:
            parse_head(raw)
        assert refused.value.status == 400
    else:
        assert parse_head(raw).content_length == expected


def test_response_bytes() -> None:
    date = "Thu, 01 Jan 2026 00:00:00 GMT"
    assert response(429, {"error": "slow down"}, headers={"Retry-After": "1"}, date=date) == (
        b"HTTP/1.1 429 Too Many Requests\r\n"
        b"Server: imagedrift-events\r\n"
        b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        b"Connection: close\r\n"
        b"Content-Length: 22\r\n"
        b"Content-Type: application/json\r\n"
        b"Retry-After: 1\r\n"
        b"\r\n"
        b'{"error": "slow down"}'
    )
    empty = response(200, None, date=date)
    assert empty.endswith(b"Content-Length: 0\r\n\r\n") and b"Content-Type" not in empty
    head_only = response(405, {"error": "x"}, date=date, with_body=False)
    assert head_only.endswith(b"Content-Length: 14\r\nContent-Type: application/json\r\n\r\n")
