"""An HTTP front for the real registry that adds what the distribution server lacks in tests:
bearer-token auth with its own ``/token`` endpoint (or plain basic auth), injected 429/503
answers, and request counting (each request with the proxy's own ``time.monotonic()`` of its
receipt and its answer). Everything else is forwarded to the registry unchanged, over
real sockets on 127.0.0.1.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.harness import leaks
from tests.harness.procs import LOOPBACK

SERVICE = "imagedrift-test-registry"
# Hop-by-hop headers (RFC 9110) are the proxy's own business, not forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    }
)


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str  # without the query string
    query: str
    status: int
    authorization: str  # the scheme the client used ("bearer", "basic" or "")
    # ``time.monotonic()`` (one clock for every process of the machine) when the request's
    # head was read and when its answer was about to be sent: timing checks measure these,
    # the proxy's own moments, not when a test happened to look.
    received: float = field(default=0.0, compare=False)
    answered: float = field(default=0.0, compare=False)


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: str | None


@dataclass
class _State:
    mode: str = "open"  # "open", "bearer" or "basic"
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: bool = False
    expires_in: int = 300
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (scope, expiry)
    faults: list[_Fault] = field(default_factory=list)
    tag_page_size: int = 0  # 0: pass tag lists through as the registry sends them
    requests: list[ProxiedRequest] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)


def _repository_of(path: str) -> str:
    """``/v2/<name>/(manifests|blobs|tags)/...`` -> ``<name>`` ("" for ``/v2/``)."""
    if not path.startswith("/v2/"):
        return ""
    rest = path[len("/v2/") :]
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in rest:
            return rest.split(marker, 1)[0]
    return ""


def _remember_passwords(users: Mapping[str, str]) -> None:
    for user, password in users.items():
        leaks.remember(password, f"registry password of {user}")
        leaks.remember(base64.b64encode(f"{user}:{password}".encode()).decode(), "basic auth")


class RegistryProxy:
    """A threaded proxy on a free loopback port in front of ``upstream`` (a registry URL).

    Open by default; ``require_bearer`` / ``require_basic`` switch on auth, ``fail_next``
    injects errors. All methods are thread-safe.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream_host = parts.hostname or LOOPBACK
        self._upstream_port = parts.port or 80
        self._upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self._state = _State()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="registry-proxy", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RegistryProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- configuration ----------------------------------------------------------------

    def require_bearer(
        self, users: Mapping[str, str], *, expires_in: int = 300, anonymous_pull: bool = False
    ) -> None:
        """Demand ``Bearer`` tokens from ``/token``, which checks basic ``users``."""
        _remember_passwords(users)
        with self._lock:
            self._state.mode = "bearer"
            self._state.users = dict(users)
            self._state.expires_in = expires_in
            self._state.anonymous_pull = anonymous_pull

    def require_basic(self, users: Mapping[str, str]) -> None:
        _remember_passwords(users)
        with self._lock:
            self._state.mode = "basic"
            self._state.users = dict(users)

    def open(self) -> None:
        with self._lock:
            self._state.mode = "open"

    def revoke_tokens(self) -> None:
        """Forget every issued token, as a token service restart or key rotation would."""
        with self._lock:
            self._state.tokens.clear()

    def fail_next(self, count: int, *, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next ``count`` registry requests (not ``/token``) with ``status``."""
        with self._lock:
            self._state.faults.append(_Fault(count, status, retry_after))

    def paginate_tags(self, page_size: int) -> None:
        """Serve tag lists in pages of at most ``page_size`` with ``Link: rel="next"``, as
        Docker Hub and GHCR do (distribution 2.8 ignores ``n`` for tags)."""
        with self._lock:
            self._state.tag_page_size = page_size

    def clear_faults(self) -> None:
        with self._lock:
            self._state.faults.clear()

    # -- observation ------------------------------------------------------------------

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Registry requests seen (``/token`` requests are in ``token_requests``)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def token_requests(self) -> list[dict[str, str]]:
        """Query parameters of each ``/token`` request (service, scope), plus ``user``."""
        with self._lock:
            return list(self._state.token_requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._state.requests.clear()
            self._state.token_requests.clear()

    # -- used by the handler ------------------------------------------------------------

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            for fault in self._state.faults:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
            return None

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._state.requests.append(request)

    def _basic_user(self, authorization: str) -> str | None:
        """The user name when ``authorization`` carries valid basic credentials."""
        if not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        with self._lock:
            expected = self._state.users.get(user)
        return user if expected is not None and secrets.compare_digest(expected, password) else None

    def _issue_token(
        self, query: Mapping[str, str], authorization: str
    ) -> tuple[int, dict[str, Any]]:
        user = self._basic_user(authorization) if authorization else None
        with self._lock:
            self._state.token_requests.append({**query, "user": user or ""})
            anonymous_pull = self._state.anonymous_pull
            expires_in = self._state.expires_in
        if authorization and user is None:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        scope = query.get("scope", "")
        if user is None and not (anonymous_pull and scope.endswith(":pull")):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]}
        token = secrets.token_urlsafe(24)
        leaks.remember(token, "registry bearer token")
        with self._lock:
            self._state.tokens[token] = (scope, time.monotonic() + expires_in)
        return 200, {"token": token, "access_token": token, "expires_in": expires_in}

    def _authorized(self, method: str, path: str, authorization: str) -> tuple[bool, str]:
        """(allowed, WWW-Authenticate challenge to send when not)."""
        with self._lock:
            mode = self._state.mode
        if mode == "open" or path == "/token":
            return True, ""
        if mode == "basic":
            ok = self._basic_user(authorization) is not None
            return ok, f'Basic realm="{SERVICE}"'
        repository = _repository_of(path)
        actions = "pull" if method in ("GET", "HEAD") else "pull,push"
        scope = f"repository:{repository}:{actions}" if repository else ""
        challenge = f'Bearer realm="{self.realm}",service="{SERVICE}"'
        if scope:
            challenge += f',scope="{scope}"'
        if not authorization.lower().startswith("bearer "):
            return False, challenge
        token = authorization[7:].strip()
        with self._lock:
            granted = self._state.tokens.get(token)
        if granted is None or granted[1] < time.monotonic():
            return False, challenge
        granted_scope = granted[0]
        if not scope:
            return True, ""
        name, _, granted_actions = granted_scope.rpartition(":")
        wanted = set(actions.split(","))
        allowed = name == f"repository:{repository}" and wanted <= set(granted_actions.split(","))
        return allowed, challenge

    def _tag_page(self, path: str, query: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """A page of the tag list when pagination is on and this is a tag-list request."""
        with self._lock:
            page_size = self._state.tag_page_size
        if not page_size or not path.endswith("/tags/list"):
            return None
        status, headers, data = self._forward("GET", path, {}, b"")
        if status != 200:
            return status, headers, data
        document = json.loads(data)
        params = {k: v[0] for k, v in parse_qs(query).items()}
        size = min(page_size, int(params.get("n") or page_size))
        remaining = sorted(
            tag for tag in document.get("tags") or [] if tag > params.get("last", "")
        )
        page = remaining[:size]
        out = [("Content-Type", "application/json")]
        if len(remaining) > size:
            out.append(("Link", f'<{path}?n={size}&last={page[-1]}>; rel="next"'))
        body = json.dumps({"name": document.get("name"), "tags": page}).encode()
        return 200, out, body

    def _forward(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=30
        )
        try:
            forwarded = {
                k: v
                for k, v in headers.items()
                if k.lower() not in _HOP_BY_HOP | {"host", "authorization"}
            }
            connection.request(
                method,
                target,
                body=body if body or method in ("PUT", "POST", "PATCH") else None,
                headers=forwarded,
            )
            response = connection.getresponse()
            data = response.read()
            out: list[tuple[str, str]] = []
            for name, value in response.getheaders():
                if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                    continue
                if name.lower() == "location" and value.startswith(self._upstream):
                    # Keep the client talking to us for the rest of an upload.
                    value = self.url + value[len(self._upstream) :]
                out.append((name, value))
            if method == "HEAD":
                length = response.getheader("Content-Length")
                if length is not None:
                    out.append(("Content-Length", length))
            return response.status, out, data
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    owner: RegistryProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests look at RegistryProxy.requests instead

    def _handle(self) -> None:
        received = time.monotonic()
        method = self.command
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorization = self.headers.get("Authorization", "")
        scheme = authorization.split(" ", 1)[0].lower() if authorization else ""
        if parts.path == "/token":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, document = self.owner._issue_token(query, authorization)
            self._reply(
                status, [("Content-Type", "application/json")], json.dumps(document).encode()
            )
            return
        fault = self.owner._take_fault()
        if fault is not None:
            headers = [("Content-Type", "application/json")]
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
            error = {
                "errors": [
                    {
                        "code": "TOOMANYREQUESTS" if fault.status == 429 else "UNAVAILABLE",
                        "message": "injected",
                    }
                ]
            }
            # Recorded before replying, so a client that has its answer sees it counted.
            self.owner._record(
                ProxiedRequest(
                    method,
                    parts.path,
                    parts.query,
                    fault.status,
                    scheme,
                    received=received,
                    answered=time.monotonic(),
                )
            )
            self._reply(fault.status, headers, json.dumps(error).encode())
            return
        allowed, challenge = self.owner._authorized(method, parts.path, authorization)
        if not allowed:
            error = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            headers = [("Content-Type", "application/json"), ("WWW-Authenticate", challenge)]
            self.owner._record(
                ProxiedRequest(
                    method,
                    parts.path,
                    parts.query,
                    401,
                    scheme,
                    received=received,
                    answered=time.monotonic(),
                )
            )
            self._reply(401, headers, json.dumps(error).encode())
            return
        try:
            paged = self.owner._tag_page(parts.path, parts.query) if method == "GET" else None
            if paged is not None:
                status, headers, data = paged
            else:
                status, headers, data = self.owner._forward(
                    method, self.path, dict(self.headers.items()), body
                )
        except OSError as exc:
            # The registry behind us is down: a gateway says so with 502.
            status, headers, data = (
                502,
                [("Content-Type", "text/plain")],
                f"upstream: {exc}".encode(),
            )
        self.owner._record(
            ProxiedRequest(
                method,
                parts.path,
                parts.query,
                status,
                scheme,
                received=received,
                answered=time.monotonic(),
            )
        )
        self._reply(status, headers, data)

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        # A HEAD answer carries the headers of the GET answer but never a body: stray
        # bytes would be read as the start of the next response on a kept-alive connection.
        head = self.command == "HEAD"
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
