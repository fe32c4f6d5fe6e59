"""A registry that lies: just enough of the distribution API to be believed, then the lie.

``LyingRegistry`` is a threaded HTTP server on a loopback address. It serves what a test
stores in it honestly (manifests by tag and digest, blobs, tag lists, referrers) and, for a
path a test names, one lie instead:

- ``oversized``: more bytes than a limit, with a false ``Content-Length`` or none (chunked);
- ``wrong_digest``: bytes that are not what the digest in the path or header says;
- ``redirect``: a 307 to another server (``storage`` in tests: one that records any
  ``Authorization`` it is sent);
- ``trickle``: one byte (or one piece of a document) a second, for minutes.

A lie can carry a believable document (``body=``): the real manifest, padded with
whitespace to the oversized length, or trickled piece by piece. A client that ignored the
limit would then not choke on junk but swallow a valid manifest, and act on it: what a
test of that limit has to be able to see.

Bodies are generated as they are written, so the server itself holds none of them. Every
loop that writes is bounded in bytes and in time: a socket timeout ends a write the client
stopped reading, and ``close()`` ends a trickle at once. A ``HEAD`` on a lied-about path
is answered with the lie's headers alone, as HTTP wants: a body after them would be read
as the answer to the client's next request on the connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MiB = 1024 * 1024
_CHUNK = 64 * 1024
# A client that stops reading leaves a write blocked; this long, and the write gives up.
_WRITE_TIMEOUT = 10.0


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def padded_digest(body: bytes, size: int) -> str:
    """The digest of what ``oversized(path, size, body=body)`` sends, hashed as it is made
    (never held whole): a test serves the same bytes under that digest too, so a client
    that read them whole would find its manifest again by digest."""
    digest = hashlib.sha256()
    for chunk in _filler(size, body):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Seen:
    """One request the server answered."""

    method: str
    path: str
    authorization: str  # the whole header, "" when none was sent


@dataclass(frozen=True)
class _Lie:
    kind: str  # "oversized" | "wrong_digest" | "redirect" | "trickle"
    size: int = 0
    declared: int | None = None  # oversized: Content-Length to claim; None: chunked
    location: str = ""
    content_type: str = OCI_MANIFEST
    body: bytes = b""  # oversized: sent first, then padding; trickle: sent piece by piece


@dataclass
class _Content:
    documents: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> body, type
    tags: dict[str, list[str]] = field(default_factory=dict)
    lies: dict[str, _Lie] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    basic: tuple[str, str] | None = None
    bearer: bool = False


class LyingRegistry:
    """A lying distribution server on ``address`` (a loopback address), on a free port;
    HTTPS when given a ``tls`` server context.

    Store content with ``put_manifest`` / ``put_blob``, tell it to lie about one path with
    ``oversized`` / ``wrong_digest`` / ``redirect`` / ``trickle``, and read back what it
    was asked in ``seen``. ``require_basic`` demands basic auth on ``/v2/`` paths;
    ``require_bearer`` a bearer token, which its own ``/token`` hands to anyone.
    """

    def __init__(self, address: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Lock()
        self._content = _Content()
        self._closing = threading.Event()
        owner = self

        class Handler(_Handler):
            registry = owner

        self._server = ThreadingHTTPServer((address, 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits one poll
            name="lying-registry",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self.host}"

    def close(self) -> None:
        self._closing.set()  # ends any trickle now
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- content ------------------------------------------------------------------------

    def put_manifest(
        self, repository: str, data: bytes, *, tag: str = "", media_type: str = OCI_MANIFEST
    ) -> str:
        """Store a manifest under its digest (and ``tag``); return the digest."""
        digest = digest_of(data)
        with self._lock:
            for reference in (digest, tag):
                if reference:
                    path = f"/v2/{repository}/manifests/{reference}"
                    self._content.documents[path] = (data, media_type)
            tags = self._content.tags.setdefault(repository, [])
            if tag and tag not in tags:  # a tag moved to another manifest is listed once
                tags.append(tag)
        return digest

    def put_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        with self._lock:
            path = f"/v2/{repository}/blobs/{digest}"
            self._content.documents[path] = (data, "application/octet-stream")
        return digest

    def put_document(self, path: str, data: bytes, media_type: str) -> None:
        """Serve ``data`` at ``path`` as it is (a referrers list, a token answer)."""
        with self._lock:
            self._content.documents[path] = (data, media_type)

    def require_basic(self, username: str, password: str) -> None:
        with self._lock:
            self._content.basic = (username, password)

    def require_bearer(self) -> None:
        with self._lock:
            self._content.bearer = True

    # -- lies -----------------------------------------------------------------------------

    def oversized(
        self, path: str, size: int, *, declared: int | None = None, body: bytes = b""
    ) -> None:
        """Answer ``path`` with ``size`` bytes, claiming ``Content-Length: declared`` (or
        sending none, chunked, when ``declared`` is None). With ``body`` the bytes are
        ``body`` and then spaces: a JSON ``body`` stays the same valid document however
        long (``padded_digest`` is their digest); without, JSON-looking junk."""
        self._lie(path, _Lie("oversized", size=size, declared=declared, body=body))

    def wrong_digest(self, path: str) -> None:
        """Answer ``path`` with a body that is not what its digest says: for a by-digest
        path other bytes; for a tag, the stored bytes with the digest of other bytes."""
        self._lie(path, _Lie("wrong_digest"))

    def redirect(self, path: str, location: str) -> None:
        """Answer ``path`` with ``307 Location: location``."""
        self._lie(path, _Lie("redirect", location=location))

    def trickle(self, path: str, size: int = 300, *, body: bytes = b"") -> None:
        """Answer ``path`` one byte a second: ``size`` seconds unless the client leaves.
        With ``body``: that document, whole and correct, in ``size`` pieces, one a second
        (a client with no deadline reads it all, ``size`` seconds late)."""
        self._lie(path, _Lie("trickle", size=size, body=body))

    def _lie(self, path: str, lie: _Lie) -> None:
        with self._lock:
            self._content.lies[path] = lie

    # -- observation ----------------------------------------------------------------------

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._content.seen)

    def seen_paths(self) -> list[str]:
        return [request.path for request in self.seen]

    # -- used by the handler --------------------------------------------------------------

    def _answer_for(self, path: str) -> tuple[_Lie | None, tuple[bytes, str] | None]:
        with self._lock:
            return self._content.lies.get(path), self._content.documents.get(path)

    def _tags(self, repository: str) -> list[str] | None:
        with self._lock:
            tags = self._content.tags.get(repository)
            return None if tags is None else list(tags)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._content.seen.append(seen)

    def _auth(self) -> tuple[tuple[str, str] | None, bool]:
        with self._lock:
            return self._content.basic, self._content.bearer


def _filler(size: int, body: bytes = b"") -> Iterator[bytes]:
    """``size`` bytes in chunks, made as they are sent: ``body`` then spaces, or without a
    ``body`` JSON-looking junk."""
    head = body[:size]
    for start in range(0, len(head), _CHUNK):
        yield head[start : start + _CHUNK]
    block = b" " * _CHUNK if body else b'{"junk":"' + b"x" * (_CHUNK - 12) + b'"}\n'
    sent = len(head)
    while sent < size:
        chunk = block[: min(_CHUNK, size - sent)]
        sent += len(chunk)
        yield chunk


class _Handler(BaseHTTPRequestHandler):
    registry: LyingRegistry
    protocol_version = "HTTP/1.1"
    timeout = _WRITE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.registry._record(Seen(self.command, path, self.headers.get("Authorization", "")))
        basic, bearer = self.registry._auth()
        sent = self.headers.get("Authorization", "")
        if basic is not None and path.startswith("/v2/"):
            expected = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            if sent != expected:
                self._send(401, b"", extra={"WWW-Authenticate": 'Basic realm="lying"'})
                return
        if bearer and path.startswith("/v2/") and not sent.startswith("Bearer "):
            challenge = f'Bearer realm="{self.registry.url}/token",service="lying"'
            self._send(401, b"", extra={"WWW-Authenticate": challenge})
            return
        lie, document = self.registry._answer_for(path)
        if lie is not None:
            self._lie(lie, document, head=head)
            return
        if path == "/v2/":
            self._send(200, b"{}", content_type="application/json")
            return
        if path.endswith("/tags/list"):
            repository = path.removeprefix("/v2/").removesuffix("/tags/list")
            tags = self.registry._tags(repository)
            if tags is None:
                self._send(404, b"")
                return
            body = json.dumps({"name": repository, "tags": tags}).encode()
            self._send(200, body, content_type="application/json")
            return
        if path == "/token" and document is None:
            self._send(200, b'{"token": "lying-token", "expires_in": 300}')
            return
        if "/referrers/" in path and document is None:
            # No referrers stored: an empty index, as the API answers for none.
            empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            self._send(200, empty.encode(), content_type=OCI_INDEX, head=head)
            return
        if document is None:
            self._send(404, b"")
            return
        data, media_type = document
        self._send(
            200,
            data,
            content_type=media_type,
            extra={"Docker-Content-Digest": digest_of(data)},
            head=head,
        )

    def _lie(self, lie: _Lie, document: tuple[bytes, str] | None, *, head: bool) -> None:
        if lie.kind == "redirect":
            self._send(307, b"", extra={"Location": lie.location})
        elif lie.kind == "wrong_digest":
            data = document[0] if document else b'{"schemaVersion":2}'
            if "/sha256:" in self.path:
                self._send(200, data + b" ", content_type=lie.content_type, head=head)
            else:
                claimed = digest_of(data + b"other")
                extra = {"Docker-Content-Digest": claimed}
                self._send(200, data, content_type=lie.content_type, extra=extra, head=head)
        elif lie.kind == "oversized":
            self._stream(
                _filler(lie.size, lie.body),
                declared=lie.declared,
                content_type=lie.content_type,
                head=head,
            )
        elif lie.kind == "trickle":
            pieces = _pieces(lie.body or b" " * lie.size, lie.size)
            self._stream(self._one_a_second(pieces), declared=sum(map(len, pieces)), head=head)

    def _one_a_second(self, pieces: Sequence[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            yield piece
            if self.registry._closing.wait(1.0):
                return

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream(
        self,
        chunks: Iterator[bytes],
        *,
        declared: int | None,
        content_type: str = OCI_MANIFEST,
        head: bool = False,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if declared is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        if head:
            return  # the headers are the whole answer; the connection stays usable
        try:
            for chunk in chunks:
                if declared is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                self.wfile.flush()
            if declared is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading, as it should have
        # Whatever was sent, the connection cannot carry another answer.
        self.close_connection = True


def _pieces(data: bytes, count: int) -> list[bytes]:
    """``data`` cut into at most ``count`` pieces of (nearly) equal length, in order."""
    step = max(1, -(-len(data) // max(1, count)))
    return [data[start : start + step] for start in range(0, len(data), step)]
