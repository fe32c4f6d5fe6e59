"""The push-event receiver: an HTTPS endpoint on an asyncio loop in one background thread.

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
secret; 405 other methods; 411 no Content-Length (chunked bodies are refused); 413 too
large; 431 header too large; 429 this source is over its rate (``Retry-After``); 503 the
deliveries queue is full (``Retry-After``); 500 when ``on_push`` raised (senders retry).

How it holds under hostile load:

- Connections are served by one event loop, so an idle or slow one costs a socket and no
  thread; at most ``max_connections`` are open (more are closed as soon as accepted).
- Each request (TLS handshake, head and body) has ``deadline`` seconds; the handshake alone
  ``handshake_timeout``. A client that is slower is cut off (logged at DEBUG).
- The secret is checked on the head, before any body byte is read; the per-source rate
  limit (``ratelimit``) before that. At most ``max_bodies`` bodies are read at once (a
  body is up to 1 MB), so even senders holding the secret cannot make the receiver buffer
  a thousand of them; a request waiting for its turn is still bound by its deadline.
- ``on_push`` runs in a pool of ``workers`` threads, only for complete, authenticated,
  parsed deliveries; with ``queue`` more already waiting the answer is 503.
- One request per connection: every answer says ``Connection: close``. When a request's
  body was not read (refused early), the rest of it is read and dropped for a moment
  before closing, so the sender sees the answer instead of a reset.

TLS is started on each accepted socket by the connection's own task (not by the listener)
so that a socket still in its handshake already counts against ``max_connections``.
Query strings are redacted (``redact``) from every log line, at every level: the
``?token=`` form carries the secret in them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import math
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final

from imagedrift.events.http11 import MAX_HEAD, BadHead, RequestHead, parse_head, response
from imagedrift.events.payloads import (
    Delivery,
    MalformedDelivery,
    parse_cloud_event_binary,
    parse_delivery,
)
from imagedrift.events.ratelimit import SourceLimits, source_key

log = logging.getLogger("imagedrift.events")
MAX_BODY: Final = 1024 * 1024  # Event Grid's own limit for one delivery is 1 MB
TOKEN_HEADER: Final = "X-Imagedrift-Token"
LINGER_SECONDS: Final = 2.0  # reading and dropping an unread body before closing
CLOSE_SECONDS: Final = 2.0  # for the TLS close_notify exchange, then the socket is dropped
RETRY_AFTER_FULL: Final = 2  # seconds, when the deliveries queue is full

_QUERY: Final = re.compile(r"\?[^\s\"]*")


def redact(text: str) -> str:
    """``text`` with every URL query string replaced: tokens travel in them."""
    return _QUERY.sub("?<redacted>", text)


@dataclass(frozen=True)
class _Settings:
    secret: bytes
    on_push: Callable[[list[str]], None]
    context: ssl.SSLContext | None
    deadline: float
    handshake_timeout: float
    max_connections: int
    max_bodies: int
    workers: int
    queue: int
    rate: float | None
    burst: float


class Receiver:
    """A running receiver: ``port`` it listens on, ``tls``, ``stop()`` to close it
    (idempotent; deliveries already handed to ``on_push`` finish in their threads)."""

    def __init__(self, service: _Service) -> None:
        self._service = service
        self._stopped = False

    @property
    def port(self) -> int:
        return self._service.port

    @property
    def bodies_reading(self) -> int:
        """Requests whose body is being read right now (at most ``max_bodies``)."""
        return self._service.bodies_reading

    @property
    def bodies_waiting(self) -> int:
        """Requests whose body waits for one of the ``max_bodies`` slots right now."""
        return self._service.bodies_waiting

    @property
    def tls(self) -> bool:
        return self._service.settings.context is not None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._service.stop()


def start_receiver(
    *,
    host: str,
    port: int,
    secret: str,
    on_push: Callable[[list[str]], None],
    certfile: str | None,
    keyfile: str | None,
    deadline: float = 10.0,
    handshake_timeout: float = 5.0,
    max_connections: int = 1000,
    workers: int = 4,
    queue: int = 64,
    rate: float | None = 20.0,
    burst: float = 40.0,
    max_bodies: int = 32,
) -> Receiver:
    """Listen on ``host:port`` (0 picks a free port) and call ``on_push(refs)`` for every
    accepted delivery that names images. TLS with ``certfile``/``keyfile``; both ``None``
    serves plain HTTP, which the caller must have been told to do explicitly.

    Limits: ``deadline`` seconds per request (handshake, head and body),
    ``handshake_timeout`` for the TLS handshake, ``max_connections`` open at once,
    ``workers`` threads calling ``on_push`` with ``queue`` deliveries waiting at most, and
    per client address ``rate`` requests a second with bursts of ``burst`` (``rate=None``:
    no per-source limit, e.g. behind a proxy where every request comes from one address).

    Raises ValueError for an empty secret, only one of certfile/keyfile or a limit that is
    not positive, OSError when the port cannot be bound or ssl.SSLError when the key pair
    does not load.
    """
    if not secret:
        raise ValueError("the push-event receiver needs a non-empty shared secret")
    if (certfile is None) != (keyfile is None):
        raise ValueError("give both certfile and keyfile, or neither")
    if min(deadline, handshake_timeout, max_connections, workers, max_bodies) <= 0 or queue < 0:
        raise ValueError("receiver limits must be positive")
    if rate is not None and (rate <= 0 or burst < 1):
        raise ValueError("rate must be positive and burst at least 1 (rate=None: no limit)")
    context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
    settings = _Settings(
        secret=secret.encode(),
        on_push=on_push,
        context=context,
        deadline=deadline,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        workers=workers,
        queue=queue,
        rate=rate,
        burst=burst,
        max_bodies=max_bodies,
    )
    service = _Service(settings)
    service.start(host, port)
    log.info(
        "push-event receiver listening on %s:%d (%s; %d connections, %gs per request, "
        "%d workers, %s per source)",
        host,
        service.port,
        "https" if context else "plain http",
        max_connections,
        deadline,
        workers,
        f"{rate:g}/s burst {burst:g}" if rate is not None else "no limit",
    )
    return Receiver(service)


@dataclass(frozen=True)
class _Answer:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Exchange:
    """One connection's request as far as it got, for the answer and the log line."""

    peer: str
    connected: bool = False  # TLS is up (or not asked for)
    head: RequestHead | None = None
    body_read: bool = False

    def request_line(self) -> str:
        if self.head is None:
            return "-"
        return redact(f"{self.head.method} {self.head.target} {self.head.version}")

    def unread_body(self) -> bool:
        if self.body_read:
            return False
        if self.head is None:
            return True  # the framing is unknown: assume the sender is still sending
        return bool(self.head.content_length) or self.head.header("transfer-encoding") is not None


class _Service:
    """The loop, its thread, the listener and the pool behind one Receiver."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_loop_error)
        self._thread = threading.Thread(target=self._run, name="imagedrift-events", daemon=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="imagedrift-events-push"
        )
        self._limits = (
            SourceLimits(settings.rate, settings.burst) if settings.rate is not None else None
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._at_capacity = False
        self._pending = 0  # deliveries handed to the pool and not finished
        self._bodies = asyncio.Semaphore(settings.max_bodies)  # bodies being read at once
        self.bodies_waiting = 0  # requests whose body waits for a free slot
        self.bodies_reading = 0  # requests whose body is being read

    # -- lifecycle (caller's thread) --------------------------------------------------------

    def start(self, host: str, port: int) -> None:
        self._thread.start()
        try:
            listening = asyncio.run_coroutine_threadsafe(self._listen(host, port), self._loop)
            self.port = listening.result(timeout=30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._pool.shutdown(wait=False)
            raise

    def stop(self) -> None:
        closing = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        try:
            closing.result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("push-event receiver: connections did not close in time")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _listen(self, host: str, port: int) -> int:
        # limit: a request head that does not end within MAX_HEAD bytes is refused (431).
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections (loop thread) ----------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.settings.max_connections:
            writer.transport.abort()
            if not self._at_capacity:
                log.warning(
                    "push-event receiver at %d open connections: refusing new ones",
                    self.settings.max_connections,
                )
            self._at_capacity = True
            return
        if self._at_capacity and len(self._connections) < self.settings.max_connections * 0.9:
            self._at_capacity = False
            log.info("push-event receiver accepts connections again")
        task = self._loop.create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        exchange = _Exchange(peer=str(peer[0]) if peer else "?")
        try:
            await self._exchange(reader, writer, exchange)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:
            log.exception("push-event receiver failed on %s", exchange.request_line())
        await self._hang_up(writer, exchange)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: _Exchange
    ) -> None:
        try:
            async with asyncio.timeout(self.settings.deadline):
                if self.settings.context is not None:
                    await writer.start_tls(
                        self.settings.context,
                        ssl_handshake_timeout=self.settings.handshake_timeout,
                    )
                exchange.connected = True
                outcome = await self._receive(reader, exchange)
        except TimeoutError:
            log.debug(
                "cut off %s after %gs: %s",
                exchange.peer,
                self.settings.deadline,
                exchange.request_line() if exchange.head else "no complete request head",
            )
            return
        except (OSError, asyncio.IncompleteReadError) as exc:  # failed handshakes, hang-ups
            log.debug("connection from %s ended: %s", exchange.peer, redact(str(exc)))
            return
        answer = await self._deliver(outcome) if isinstance(outcome, Delivery) else outcome
        await self._respond(reader, writer, exchange, answer)

    async def _receive(
        self, reader: asyncio.StreamReader, exchange: _Exchange
    ) -> _Answer | Delivery:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _Answer(431, {"error": f"request head larger than {MAX_HEAD} bytes"})
        try:
            head = exchange.head = parse_head(raw)
        except BadHead as exc:
            log.debug("refused a request head from %s: %s", exchange.peer, exc)
            return _Answer(exc.status, {"error": str(exc)})
        if head.method == "GET" and head.path == "/healthz":
            return _Answer(200, {"status": "ok"})
        if self._limits is not None:
            wait = self._limits.check(source_key(exchange.peer), self._loop.time())
            if wait:
                log.debug("%s is over its rate: 429 for %s", exchange.peer, exchange.request_line())
                return _Answer(
                    429, {"error": "too many requests"}, {"Retry-After": str(math.ceil(wait))}
                )
        if not self._authenticated(head):
            log.warning(
                "refused a %s from %s: %s",
                head.method,
                exchange.peer,
                "wrong secret" if _offered(head) else "no secret",
            )
            return _Answer(
                401,
                {"error": "a valid shared secret is required"},
                {"WWW-Authenticate": 'Bearer realm="imagedrift"'},
            )
        if head.method == "OPTIONS":
            origin = head.header("webhook-request-origin") or ""
            headers = {"Allow": "POST, OPTIONS"}
            if origin:
                headers["WebHook-Allowed-Origin"] = origin
                headers["WebHook-Allowed-Rate"] = "*"
            return _Answer(200, None, headers)
        if head.method != "POST":
            return _Answer(405, {"error": "deliveries are POSTed"}, {"Allow": "POST, OPTIONS"})
        if head.header("transfer-encoding") is not None:
            return _Answer(411, {"error": "send a Content-Length"})
        length = head.content_length
        if length is None:
            return _Answer(411, {"error": "send a Content-Length"})
        if length > MAX_BODY:
            log.warning("refused a %d byte delivery from %s", length, exchange.peer)
            return _Answer(413, {"error": f"body larger than {MAX_BODY} bytes"})
        self.bodies_waiting += 1
        try:
            await self._bodies.acquire()
        finally:
            self.bodies_waiting -= 1
        self.bodies_reading += 1
        try:
            body = await reader.readexactly(length) if length else b""
        finally:
            self.bodies_reading -= 1
            self._bodies.release()
        exchange.body_read = True
        try:
            if head.header("ce-specversion") and head.header("ce-type"):
                delivery = parse_cloud_event_binary(dict(head.fields), body)
            else:
                delivery = parse_delivery(body)
        except MalformedDelivery as exc:
            log.warning("refused a delivery from %s: %s", exchange.peer, exc)
            return _Answer(400, {"error": str(exc)})
        if delivery.validation_code is not None:
            log.info("answered an Event Grid subscription validation")
            return _Answer(200, {"validationResponse": delivery.validation_code})
        if not delivery.refs:
            return _Answer(200, {"accepted": 0, "ignored": delivery.ignored})
        return delivery

    def _authenticated(self, head: RequestHead) -> bool:
        # Every candidate is compared, so timing tells nothing about which one was close.
        matches = [hmac.compare_digest(o.encode(), self.settings.secret) for o in _offered(head)]
        return any(matches)

    async def _deliver(self, delivery: Delivery) -> _Answer:
        refs = ", ".join(delivery.refs)
        if self._pending >= self.settings.workers + self.settings.queue:
            log.warning("push-event queue full: answered 503 to a push of %s", refs)
            return _Answer(
                503,
                {"error": "too many deliveries waiting; retry"},
                {"Retry-After": str(RETRY_AFTER_FULL)},
            )
        log.info("push event (%s): %s", delivery.form, refs)
        self._pending += 1
        try:
            await self._loop.run_in_executor(self._pool, self.settings.on_push, list(delivery.refs))
        except Exception:
            log.exception("handling pushed %s failed", refs)
            return _Answer(500, {"error": "the event could not be handled; retry"})
        finally:
            self._pending -= 1
        return _Answer(200, {"accepted": len(delivery.refs), "ignored": delivery.ignored})

    async def _respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        answer: _Answer,
    ) -> None:
        data = response(
            answer.status,
            answer.payload,
            headers=answer.headers,
            date=formatdate(usegmt=True),
            with_body=exchange.head is None or exchange.head.method != "HEAD",
        )
        try:
            async with asyncio.timeout(self.settings.deadline):
                writer.write(data)
                await writer.drain()
            log.debug('%s "%s" %d', exchange.peer, exchange.request_line(), answer.status)
            if exchange.unread_body():
                await _drop_unread(reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("answering %s failed: %s", exchange.peer, redact(str(exc)))

    async def _hang_up(self, writer: asyncio.StreamWriter, exchange: _Exchange) -> None:
        if not exchange.connected:
            # A failed or unfinished TLS handshake: there is no stream to close politely.
            writer.transport.abort()
            return
        writer.close()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise


async def _drop_unread(reader: asyncio.StreamReader) -> None:
    # Closing with unread bytes makes the kernel send a reset, which can reach the sender
    # before it has read the answer; so read and drop, for a moment and up to a bound.
    dropped = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while dropped <= 2 * MAX_BODY:
                chunk = await reader.read(64 * 1024)
                if not chunk:
                    return
                dropped += len(chunk)
    except TimeoutError:
        return


def _offered(head: RequestHead) -> list[str]:
    offered: list[str] = []
    scheme, _, value = (head.header("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        offered.append(value.strip())
    token = head.header(TOKEN_HEADER)
    if token:
        offered.append(token)
    query = head.query("token")
    if query is not None:
        offered.append(query)
    return offered


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # asyncio's own report would name transports and peers; keep it to what went wrong.
    exc = context.get("exception")
    if isinstance(exc, OSError):
        log.debug("push-event receiver: %s: %s", context.get("message"), redact(str(exc)))
        return
    log.error("push-event receiver: %s", context.get("message"), exc_info=exc)
