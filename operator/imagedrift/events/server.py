"""The push-event receiver: an HTTPS endpoint in a background thread.

Every request must carry the shared secret, as ``Authorization: Bearer <secret>``, an
``X-Imagedrift-Token: <secret>`` header, or a ``?token=<secret>`` query parameter (Event
Grid webhooks can carry nothing else); it is compared in constant time. Then:

- ``OPTIONS`` with ``WebHook-Request-Origin`` is the CloudEvents abuse-protection handshake:
  the origin is allowed (``WebHook-Allowed-Origin``) and any rate (``WebHook-Allowed-Rate``);
- ``POST`` bodies (at most ``MAX_BODY`` bytes) are parsed by ``payloads.parse_delivery``;
  the image references they name go to ``on_push``, an Event Grid validation handshake is
  answered with its ``validationCode``;
- ``GET /healthz`` answers ``ok`` without a secret (probes carry none).

Answers: 200 accepted; 400 malformed (the reason is logged and returned); 401 no or wrong
secret; 405 other methods; 411 no Content-Length; 413 too large; 500 when ``on_push``
raised (senders retry).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from imagedrift.events.payloads import (
    Delivery,
    MalformedDelivery,
    parse_cloud_event_binary,
    parse_delivery,
)

log = logging.getLogger("imagedrift.events")
MAX_BODY: Final = 1024 * 1024  # Event Grid's own limit for one delivery is 1 MB
READ_TIMEOUT: Final = 10.0
TOKEN_HEADER: Final = "X-Imagedrift-Token"


_QUERY: Final = re.compile(r"\?[^\s\"]*")


def redact(text: str) -> str:
    """``text`` with every URL query string replaced: tokens travel in them."""
    return _QUERY.sub("?<redacted>", text)


class Receiver:
    """A running receiver: ``port`` it listens on, ``stop()`` to close it (idempotent)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def tls(self) -> bool:
        return self._server.context is not None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_receiver(
    *,
    host: str,
    port: int,
    secret: str,
    on_push: Callable[[list[str]], None],
    certfile: str | None,
    keyfile: str | None,
) -> Receiver:
    """Listen on ``host:port`` (0 picks a free port) and call ``on_push(refs)`` for every
    accepted delivery that names images. TLS with ``certfile``/``keyfile``; both ``None``
    serves plain HTTP, which the caller must have been told to do explicitly.

    Raises ValueError for an empty secret or only one of certfile/keyfile, OSError when
    the port cannot be bound or ssl.SSLError when the key pair does not load.
    """
    if not secret:
        raise ValueError("the push-event receiver needs a non-empty shared secret")
    if (certfile is None) != (keyfile is None):
        raise ValueError("give both certfile and keyfile, or neither")
    context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
    server = _Server((host, port), _Handler, context, secret.encode(), on_push)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="imagedrift-events",
        daemon=True,
    )
    thread.start()
    log.info(
        "push-event receiver listening on %s:%d (%s)",
        host,
        server.server_address[1],
        "https" if context else "plain http",
    )
    return Receiver(server, thread)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext | None,
        secret: bytes,
        on_push: Callable[[list[str]], None],
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.context = context
        self.secret = secret
        self.on_push = on_push

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.context is None:
            return sock, addr
        # The handshake happens in the handler's thread: a slow client cannot stall accept().
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # failed handshakes, dropped connections
            log.debug("connection from %s ended: %s", client_address, exc)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT
    server: _Server
    server_version = "imagedrift-events"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        # http.server logs the request line, and the documented ?token=<secret> is in it:
        # query strings never reach a log line, at any level.
        log.debug("%s %s", self.client_address[0], redact(format % args))

    # -- methods ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/healthz":
            self._send(200, {"status": "ok"})
            return
        if not self._authenticated():
            return
        self._send(
            405, {"error": "deliveries are POSTed"}, headers={"Allow": "POST, OPTIONS"}, close=True
        )

    def do_OPTIONS(self) -> None:
        if not self._authenticated():
            return
        origin = self.headers.get("WebHook-Request-Origin", "")
        headers = {"Allow": "POST, OPTIONS"}
        if origin:
            headers["WebHook-Allowed-Origin"] = origin
            headers["WebHook-Allowed-Rate"] = "*"
        self._send(200, None, headers=headers)

    def do_POST(self) -> None:
        if not self._authenticated():
            return
        body = self._body()
        if body is None:
            return
        try:
            if self.headers.get("ce-specversion") and self.headers.get("ce-type"):
                delivery = parse_cloud_event_binary(
                    {k.lower(): v for k, v in self.headers.items()}, body
                )
            else:
                delivery = parse_delivery(body)
        except MalformedDelivery as exc:
            log.warning("refused a delivery from %s: %s", self.client_address[0], exc)
            self._send(400, {"error": str(exc)})
            return
        self._deliver(delivery)

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    # -- helpers ----------------------------------------------------------------------------

    def _deliver(self, delivery: Delivery) -> None:
        if delivery.validation_code is not None:
            log.info("answered an Event Grid subscription validation")
            self._send(200, {"validationResponse": delivery.validation_code})
            return
        if delivery.refs:
            log.info("push event (%s): %s", delivery.form, ", ".join(delivery.refs))
            try:
                self.server.on_push(list(delivery.refs))
            except Exception:
                log.exception("handling pushed %s failed", ", ".join(delivery.refs))
                self._send(500, {"error": "the event could not be handled; retry"})
                return
        self._send(200, {"accepted": len(delivery.refs), "ignored": delivery.ignored})

    def _authenticated(self) -> bool:
        offered: list[str] = []
        authorization = self.headers.get("Authorization", "")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            offered.append(value.strip())
        if self.headers.get(TOKEN_HEADER):
            offered.append(self.headers[TOKEN_HEADER].strip())
        query = parse_qs(urlsplit(self.path).query)
        offered.extend(query.get("token", [])[:1])
        expected = self.server.secret
        # Every candidate is compared, so timing tells nothing about which one was close.
        matches = [hmac.compare_digest(o.encode(), expected) for o in offered]
        if any(matches):
            return True
        log.warning(
            "refused a %s from %s: %s",
            self.command,
            self.client_address[0],
            "wrong secret" if offered else "no secret",
        )
        self._send(
            401,
            {"error": "a valid shared secret is required"},
            headers={"WWW-Authenticate": 'Bearer realm="imagedrift"'},
            close=True,
        )
        return False

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(411, {"error": "send a Content-Length"}, close=True)
            return None
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self._send(411, {"error": "send a Content-Length"}, close=True)
            return None
        if length > MAX_BODY:
            log.warning("refused a %d byte delivery from %s", length, self.client_address[0])
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"}, close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _not_allowed(self) -> None:
        if self._authenticated():
            self._send(
                405,
                {"error": "deliveries are POSTed"},
                headers={"Allow": "POST, OPTIONS"},
                close=True,
            )

    def _send(
        self,
        status: int,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            # The request body was not read: the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body:
            self.wfile.write(body)
