"""A fake Azure Container Registry: the ACR wire protocol over TLS in front of a real registry.

What it speaks, as ``azure-containerregistry`` and ``azure-identity`` expect (see the
shared ACR protocol notes):

- ``POST /oauth2/exchange``: an AAD access token issued by ``FakeEntra`` for the ACR
  audience becomes an ACR refresh token (a JWT whose payload has no ``-``/``_``, because
  the SDK decodes it with standard base64);
- ``POST /oauth2/token``: a refresh token (or, for anonymous pull, ``grant_type=password``)
  becomes an access token for one scope; ``GET /oauth2/token`` with basic auth serves the
  admin user, which is how Docker-style clients (and the test push code) get tokens;
- ``/acr/v1/...``: tag, tag list (``Link`` pagination, ``orderby``), manifest (with
  ``references`` for an index and ``quarantineState``), manifest list, repository and
  catalog metadata, computed from the backing registry;
- ``/v2/...``: the distribution API, proxied verbatim to the backing CNCF registry.

Every request without a valid token for its scope gets ``401`` with the ACR challenge.
Counters per kind (``exchange``, ``token``, ``metadata``, ``v2``) can be read and reset,
and the log holds each request with the fake's own ``time.monotonic()`` of its receipt and
its answer (timing checks use those, not when the test looked); the next N requests can be
failed with 429 + ``Retry-After`` (or any status); lifetimes of issued tokens are settable
so tests can watch a refresh happen.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.harness import leaks
from tests.harness.entra import ACR_AUDIENCE, FakeEntra
from tests.harness.tlsca import QuietHandler, TestCA, TlsServer

KINDS = ("exchange", "token", "metadata", "v2")
API_VERSION = "2021-07-01"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_PROXIED_RESPONSE_HEADERS = (
    "Content-Type",
    "Docker-Content-Digest",
    "Docker-Upload-UUID",
    "Range",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "OCI-Subject",
)
_PROXIED_REQUEST_HEADERS = ("Accept", "Content-Type", "Range", "If-None-Match")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned-looking JWT whose payload the SDK's standard-base64 decoder can read.

    The SDK pads wrongly and does not accept the URL-safe alphabet, so the payload is
    salted until its encoding has neither ``-`` nor ``_`` and needs no padding.
    """
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "fake-acr"}).encode())
    for salt in range(10_000):
        payload = _b64url(json.dumps({**claims, "salt": salt}, separators=(",", ":")).encode())
        if len(payload) % 4 == 0 and "-" not in payload and "_" not in payload:
            signature = _b64url(hashlib.sha256(payload.encode()).digest())
            return f"{header}.{payload}.{signature}"
    raise RuntimeError("could not encode a token payload without - and _")  # pragma: no cover


def _iso(ts: float) -> str:
    """ISO-8601 with seven fractional digits and ``Z``, as ACR writes times."""
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


@dataclass
class TokenRecord:
    """An ACR token the fake issued: who it is for and what it allows."""

    subject: str  # AAD client id, "admin" or "anonymous"
    flow: str  # the Entra flow that authenticated the subject, "admin" or "anonymous"
    expires_at: float
    access: dict[str, set[str]] = field(default_factory=dict)  # "type:name" -> actions


@dataclass
class TagRecord:
    digest: str
    created: float
    updated: float


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    kind: str
    status: int
    subject: str
    # ``time.monotonic()`` (one clock for every process of the machine) when the request's
    # head was read and when its answer was about to be sent: timing checks measure these,
    # the fake's own moments, not when a test happened to look at the log.
    received: float = field(default=0.0, compare=False)
    answered: float = field(default=0.0, compare=False)


@dataclass
class _Injection:
    status: int
    remaining: int
    headers: dict[str, str]
    kinds: tuple[str, ...]
    body_size: int = 0  # > 0: a 200 with this many bytes, chunked, instead of an error
    trickle: bool = False  # the body one byte a second


def parse_scope(scope: str) -> tuple[str, str, set[str]]:
    """``repository:a/b:pull,push`` -> (``repository``, ``a/b``, {pull, push})."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, {a for a in actions.split(",") if a}


class FakeAcr:
    """The ACR protocol on a free 127.0.0.1 HTTPS port, backed by the registry at ``upstream``.

    ``upstream`` is ``http://127.0.0.1:<port>`` of a CNCF distribution server. Thread-safe.
    """

    def __init__(
        self,
        ca: TestCA,
        entra: FakeEntra,
        upstream: str,
        *,
        admin_user: tuple[str, str] = ("imagedrift-admin", "admin-password"),
    ) -> None:
        self.entra = entra
        self.upstream = upstream.rstrip("/")
        self.admin_user = admin_user
        leaks.remember(admin_user[1], "ACR admin password")
        self.access_token_lifetime = 3600.0
        self.refresh_token_lifetime = 3 * 3600.0
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: list[RequestRecord] = []
        self._tokens: dict[str, TokenRecord] = {}
        self._tags: dict[tuple[str, str], TagRecord] = {}
        self._quarantine: dict[str, str] = {}
        self._signed: set[tuple[str, str]] = set()
        self._anonymous: set[str] = set()
        self._denied: set[str] = set()
        self._injections: list[_Injection] = []
        self._server = TlsServer(_make_handler(self), ca, name="fake-acr")

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The login server, ``127.0.0.1:<port>`` (also the token ``service``)."""
        return f"127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeAcr:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # -- knobs for tests ---------------------------------------------------------------
    def reset(self) -> None:
        """Zero the counters and undo every knob (tokens and tag times are kept)."""
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._injections.clear()
            self._denied.clear()
            self._anonymous.clear()
        self.access_token_lifetime = 3600.0
        self.refresh_token_lifetime = 3 * 3600.0

    def set_anonymous_pull(self, repository: str, enabled: bool = True) -> None:
        """Allow (or stop allowing) anonymous pull of ``repository``; ``*`` means all."""
        with self._lock:
            (self._anonymous.add if enabled else self._anonymous.discard)(repository)

    def deny(self, subject: str, denied: bool = True) -> None:
        """Refuse (or allow again) every token request of ``subject`` (an AAD client id)."""
        with self._lock:
            (self._denied.add if denied else self._denied.discard)(subject)

    def revoke_tokens(self) -> None:
        """Forget every refresh and access token issued so far."""
        with self._lock:
            self._tokens.clear()

    def set_quarantine(self, digest: str, state: str) -> None:
        with self._lock:
            self._quarantine[digest] = state

    def set_signed(self, repository: str, tag: str, signed: bool = True) -> None:
        with self._lock:
            (self._signed.add if signed else self._signed.discard)((repository, tag))

    def set_tag_time(self, repository: str, tag: str, updated: float) -> None:
        """Pretend ``tag`` was last pushed at ``updated`` (epoch seconds)."""
        digest = self._upstream_digest(repository, tag)
        with self._lock:
            record = self._tags.get((repository, tag))
            created = min(record.created, updated) if record else updated
            self._tags[(repository, tag)] = TagRecord(digest or "", created, updated)

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        headers: dict[str, str] | None = None,
        kinds: tuple[str, ...] = ("metadata", "v2"),
    ) -> None:
        """Answer the next ``count`` requests of ``kinds`` with ``status``."""
        with self._lock:
            self._injections.append(_Injection(status, count, dict(headers or {}), kinds))

    def inject_body(
        self, size: int, *, trickle: bool = False, kinds: tuple[str, ...] = ("v2",)
    ) -> None:
        """Answer the next request of ``kinds`` with 200 and ``size`` bytes of junk, chunked
        with no Content-Length; ``trickle`` sends them one byte a second, length declared."""
        with self._lock:
            self._injections.append(_Injection(200, 1, {}, kinds, size, trickle))

    def throttle(
        self, count: int = 1, *, retry_after: int = 7, kinds: tuple[str, ...] = ("metadata", "v2")
    ) -> None:
        """The next ``count`` requests get 429 ``TOOMANYREQUESTS`` with ``Retry-After``."""
        self.inject(429, count, headers={"Retry-After": str(retry_after)}, kinds=kinds)

    # -- what happened -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Requests per kind since the last reset (every kind present, zero included)."""
        with self._lock:
            return {kind: self._counts[kind] for kind in KINDS}

    def registry_requests(self) -> int:
        """Metadata plus ``/v2`` requests: what an operation cost apart from tokens."""
        counts = self.counts()
        return counts["metadata"] + counts["v2"]

    def log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()

    # -- tokens ------------------------------------------------------------------------
    def _issue(self, record: TokenRecord, kind: str) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "jti": secrets.token_hex(8),
            "sub": record.subject,
            "nbf": int(now) - 1,
            "exp": int(record.expires_at),
            "iat": int(now),
            "iss": "Azure Container Registry",
            "aud": self.host,
            "version": "1.0",
            "grant_type": kind,
        }
        if kind == "access_token":
            claims["access"] = [
                {
                    "type": key.split(":", 1)[0],
                    "name": key.split(":", 1)[1],
                    "actions": sorted(acts),
                }
                for key, acts in record.access.items()
            ]
        token = make_jwt(claims)
        leaks.remember(token, f"ACR {kind.replace('_', ' ')}")
        with self._lock:
            self._tokens[token] = record
        return token

    def _lookup(self, token: str) -> TokenRecord | None:
        with self._lock:
            record = self._tokens.get(token)
        if record is None or record.expires_at <= time.time():
            return None
        return record

    def _granted(self, subject: str, kind: str, name: str, wanted: set[str]) -> set[str]:
        with self._lock:
            if subject in self._denied:
                return set()
            anonymous_ok = "*" in self._anonymous or name in self._anonymous
        if subject == "anonymous":
            return wanted & {"pull"} if kind == "repository" and anonymous_ok else set()
        return set(wanted)

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "access_token" or form.get("service") != self.host:
            return 400, _errors("UNSUPPORTED", "grant_type must be access_token for this service")
        aad = self.entra.validate(form.get("access_token", ""), ACR_AUDIENCE)
        if aad is None:
            return 401, _errors("UNAUTHORIZED", "the AAD access token is invalid or expired")
        record = TokenRecord(aad.client_id, aad.flow, time.time() + self.refresh_token_lifetime)
        return 200, {"refresh_token": self._issue(record, "refresh_token")}

    def token(self, form: dict[str, str], *, admin: bool = False) -> tuple[int, dict[str, Any]]:
        if form.get("service") != self.host:
            return 400, _errors("UNSUPPORTED", f"service must be {self.host}")
        if admin:
            subject, flow = "admin", "admin"
        elif form.get("grant_type") == "password" and not form.get("refresh_token"):
            subject, flow = "anonymous", "anonymous"
        elif form.get("grant_type") == "refresh_token":
            refresh = self._lookup(form.get("refresh_token", ""))
            if refresh is None:
                return 401, _errors("UNAUTHORIZED", "the refresh token is invalid or expired")
            subject, flow = refresh.subject, refresh.flow
        else:
            return 400, _errors("UNSUPPORTED", "unsupported grant_type")
        access: dict[str, set[str]] = {}
        for scope in form.get("scope", "").split():
            kind, name, wanted = parse_scope(scope)
            granted = self._granted(subject, kind, name, wanted)
            if granted:
                access.setdefault(f"{kind}:{name}", set()).update(granted)
        if not access:
            return 401, _errors(
                "UNAUTHORIZED", f"{subject} is not authorized for {form.get('scope', '')}"
            )
        record = TokenRecord(subject, flow, time.time() + self.access_token_lifetime, access)
        return 200, {"access_token": self._issue(record, "access_token")}

    def authorize(self, header: str, kind: str, name: str, action: str) -> TokenRecord | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        record = self._lookup(token.strip())
        if record is None:
            return None
        actions = record.access.get(f"{kind}:{name}", set())
        return record if action in actions or "*" in actions else None

    def challenge(self, scope: str) -> dict[str, str]:
        value = f'Bearer realm="{self.url}/oauth2/token",service="{self.host}"'
        if scope:
            value += f',scope="{scope}"'
        return {"WWW-Authenticate": value, "Docker-Distribution-Api-Version": "registry/2.0"}

    # -- bookkeeping -------------------------------------------------------------------
    def _record(
        self,
        method: str,
        path: str,
        kind: str,
        status: int,
        subject: str,
        *,
        received: float | None = None,
    ) -> None:
        """Count and log a request; called just before its answer is sent."""
        answered = time.monotonic()
        record = RequestRecord(
            method,
            path,
            kind,
            status,
            subject,
            received=answered if received is None else received,
            answered=answered,
        )
        with self._lock:
            self._counts[kind] += 1
            self._log.append(record)

    def _take_injection(self, kind: str) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if kind in injection.kinds and injection.remaining > 0:
                    injection.remaining -= 1
                    return injection
            self._injections = [i for i in self._injections if i.remaining > 0]
        return None

    # -- the backing registry ------------------------------------------------------------
    def upstream_request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(self.upstream)
        conn: http.client.HTTPConnection = http.client.HTTPConnection(parts.netloc, timeout=30)
        try:
            send_headers = dict(headers or {})
            if body or method in ("PUT", "POST", "PATCH"):
                send_headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=send_headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k: v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def _upstream_digest(self, repository: str, reference: str) -> str | None:
        status, headers, _ = self.upstream_request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", {"Accept": MANIFEST_ACCEPT}
        )
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def _upstream_json(self, path: str) -> tuple[int, Any, dict[str, str]]:
        status, headers, body = self.upstream_request("GET", path, {"Accept": MANIFEST_ACCEPT})
        if status != 200:
            return status, None, headers
        return status, json.loads(body), headers

    def _all_tags(self, repository: str) -> list[str] | None:
        status, body, _ = self._upstream_json(f"/v2/{repository}/tags/list?n=10000")
        if status != 200:
            return None
        return sorted(body.get("tags") or [])

    def tag_record(self, repository: str, tag: str) -> TagRecord | None:
        """The tag's digest and times; a tag first seen (or moved) now gets now."""
        digest = self._upstream_digest(repository, tag)
        if digest is None:
            return None
        now = time.time()
        with self._lock:
            record = self._tags.get((repository, tag))
            if record is None:
                record = self._tags[(repository, tag)] = TagRecord(digest, now, now)
            elif record.digest != digest:
                # Moved behind our back (pushed straight to the backing registry).
                record.digest = digest
                record.updated = max(now, record.updated)
            return TagRecord(record.digest, record.created, record.updated)

    def note_push(self, repository: str, tag: str, digest: str) -> None:
        now = time.time()
        with self._lock:
            record = self._tags.get((repository, tag))
            created = record.created if record else now
            self._tags[(repository, tag)] = TagRecord(digest, created, now)

    # -- metadata documents ----------------------------------------------------------------
    def tag_document(self, repository: str, tag: str, record: TagRecord) -> dict[str, Any]:
        with self._lock:
            signed = (repository, tag) in self._signed
        return {
            "name": tag,
            "digest": record.digest,
            "createdTime": _iso(record.created),
            "lastUpdateTime": _iso(record.updated),
            "signed": signed,
            "changeableAttributes": _attributes(),
        }

    def manifest_document(self, repository: str, digest: str) -> dict[str, Any] | None:
        status, headers, body = self.upstream_request(
            "GET", f"/v2/{repository}/manifests/{digest}", {"Accept": MANIFEST_ACCEPT}
        )
        if status != 200:
            return None
        document = json.loads(body)
        media_type = document.get("mediaType") or headers.get("Content-Type", "")
        tags = []
        times: list[float] = []
        for tag in self._all_tags(repository) or []:
            record = self.tag_record(repository, tag)
            if record and record.digest == digest:
                tags.append(tag)
                times.append(record.updated)
        now = time.time()
        with self._lock:
            quarantine = self._quarantine.get(digest)
        attributes = _attributes()
        if quarantine:
            attributes["quarantineState"] = quarantine
            attributes["quarantineDetails"] = json.dumps({"state": quarantine})
        out: dict[str, Any] = {
            "digest": digest,
            "imageSize": len(body),
            "createdTime": _iso(min(times, default=now)),
            "lastUpdateTime": _iso(max(times, default=now)),
            "mediaType": media_type,
            "tags": tags,
            "changeableAttributes": attributes,
        }
        if media_type in INDEX_TYPES or "manifests" in document:
            out["references"] = [
                {
                    "digest": entry.get("digest"),
                    "architecture": (entry.get("platform") or {}).get("architecture"),
                    "os": (entry.get("platform") or {}).get("os"),
                }
                for entry in document.get("manifests") or []
            ]
            out["imageSize"] = len(body) + sum(
                int(e.get("size") or 0) for e in document["manifests"]
            )
        else:
            config = document.get("config") or {}
            out["configMediaType"] = config.get("mediaType")
            out["imageSize"] = (
                len(body)
                + int(config.get("size") or 0)
                + sum(int(layer.get("size") or 0) for layer in document.get("layers") or [])
            )
            blob_status, _, blob = self.upstream_request(
                "GET", f"/v2/{repository}/blobs/{config.get('digest')}"
            )
            if blob_status == 200:
                try:
                    image_config = json.loads(blob)
                    out["architecture"] = image_config.get("architecture")
                    out["os"] = image_config.get("os")
                except ValueError:
                    pass
        return out


def _attributes() -> dict[str, Any]:
    return {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}


def _errors(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return {"errors": [error]}


def _split_metadata_path(path: str) -> tuple[str, list[str]]:
    """``/acr/v1/a%2Fb/_tags/x`` (or with a literal ``/``) -> (``a/b``, [``_tags``, ``x``])."""
    segments = path.removeprefix("/acr/v1/").split("/")
    for i, segment in enumerate(segments):
        if segment.startswith("_") and i > 0:
            return unquote("/".join(segments[:i])), [unquote(s) for s in segments[i:]]
    return unquote("/".join(segments)), []


def _split_v2_path(path: str) -> tuple[str, str, str]:
    """``/v2/a/b/manifests/x`` -> (``a/b``, ``manifests``, ``x``); repository may be empty."""
    rest = path.removeprefix("/v2/")
    for marker in ("/manifests/", "/blobs/uploads/", "/blobs/", "/tags/", "/referrers/"):
        position = rest.rfind(marker)
        if position > 0:
            return (
                unquote(rest[:position]),
                marker.strip("/"),
                unquote(rest[position + len(marker) :]),
            )
    if rest.endswith("/blobs/uploads"):
        return unquote(rest.removesuffix("/blobs/uploads")), "blobs/uploads", ""
    return "", "", rest


def _make_handler(acr: FakeAcr) -> type[QuietHandler]:
    class Handler(QuietHandler):
        received = 0.0  # time.monotonic() when the current request's head was read

        def _dispatch(self) -> None:
            self.received = time.monotonic()
            parts = urlsplit(self.path)
            path = parts.path
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            if path.startswith("/oauth2/"):
                self._oauth(path, query)
            elif path.startswith("/acr/v1/"):
                self._metadata(path, query)
            elif path == "/v2" or path.startswith("/v2/"):
                self._v2(path, parts.query)
            else:
                self.read_body()
                self.send_json(404, _errors("NOT_FOUND", f"no route for {path}"))

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

        def _note(self, path: str, kind: str, status: int, subject: str) -> None:
            """Log the current request, with the moment its head was read."""
            acr._record(self.command, path, kind, status, subject, received=self.received)

        # -- /oauth2 -----------------------------------------------------------------
        def _oauth(self, path: str, query: dict[str, str]) -> None:
            kind = "exchange" if path.rstrip("/") == "/oauth2/exchange" else "token"
            if self.command == "POST":
                form = self.read_form()
            else:
                self.read_body()
                form = dict(query)
            injected = acr._take_injection(kind)
            if injected is not None:
                self._injected(injected, kind, path)
                return
            if kind == "exchange" and self.command == "POST":
                status, payload = acr.exchange(form)
            elif kind == "token" and self.command == "POST":
                status, payload = acr.token(form)
            elif kind == "token" and self.command == "GET":
                status, payload = self._basic_token(form)
            else:
                status, payload = 405, _errors("UNSUPPORTED", "method not allowed")
            self._note(path, kind, status, "")
            self.send_json(status, payload)

        def _basic_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
            scheme, _, value = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "basic":
                return 401, _errors("UNAUTHORIZED", "basic credentials required")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return 401, _errors("UNAUTHORIZED", "malformed basic credentials")
            if (user, password) != acr.admin_user:
                return 401, _errors("UNAUTHORIZED", "wrong admin user or password")
            status, payload = acr.token(form, admin=True)
            if status == 200:
                payload = {
                    **payload,
                    "token": payload["access_token"],
                    "expires_in": int(acr.access_token_lifetime),
                }
            return status, payload

        def _injected(self, injection: _Injection, kind: str, path: str) -> None:
            self._note(path, kind, injection.status, "")
            if injection.body_size:
                self._junk(injection.body_size, trickle=injection.trickle)
                return
            code = "TOOMANYREQUESTS" if injection.status == 429 else "INJECTED"
            body = json.dumps(_errors(code, f"injected {injection.status}")).encode()
            self.send_bytes(
                injection.status, body, headers=injection.headers, head_only=self.command == "HEAD"
            )

        def _junk(self, size: int, *, trickle: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            # A trickle declares its length: a reader waiting for whole blocks then stalls.
            if trickle:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * (1 if trickle else 64 * 1024)
            try:
                # Bounded by size; a client that left ends it sooner with a failed write.
                for _ in range(0, size, len(block)):
                    self.wfile.write(block if trickle else b"%x\r\n%s\r\n" % (len(block), block))
                    self.wfile.flush()
                    if trickle:
                        time.sleep(1.0)  # the pace of the lie, not a wait for an outcome
                if not trickle:
                    self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            self.close_connection = True

        def _deny(self, kind: str, path: str, scope: str, name: str, action: str) -> None:
            self._note(path, kind, 401, "")
            detail = [{"Type": scope.split(":", 1)[0], "Name": name, "Action": action}]
            body = json.dumps(
                _errors(
                    "UNAUTHORIZED",
                    "authentication required, visit https://aka.ms/acr/authorization "
                    "for more information.",
                    detail,
                )
            ).encode()
            self.send_bytes(
                401, body, headers=acr.challenge(scope), head_only=self.command == "HEAD"
            )

        # -- /acr/v1 -----------------------------------------------------------------
        def _metadata(self, path: str, query: dict[str, str]) -> None:
            self.read_body()
            repository, rest = _split_metadata_path(path)
            if repository == "_catalog":
                scope, kind_name, action = "registry:catalog:*", ("registry", "catalog"), "*"
            else:
                action = {
                    "GET": "metadata_read",
                    "PATCH": "metadata_write",
                    "DELETE": "delete",
                }.get(self.command, "metadata_read")
                scope, kind_name = f"repository:{repository}:{action}", ("repository", repository)
            injected = acr._take_injection("metadata")
            if injected is not None:
                self._injected(injected, "metadata", path)
                return
            record = acr.authorize(self.headers.get("Authorization", ""), *kind_name, action)
            if record is None:
                self._deny("metadata", path, scope, kind_name[1], action)
                return
            status, payload, headers = self._metadata_answer(repository, rest, query)
            self._note(path, "metadata", status, record.subject)
            self.send_json(status, payload, headers=headers)

        def _metadata_answer(
            self, repository: str, rest: list[str], query: dict[str, str]
        ) -> tuple[int, Any, dict[str, str]]:
            host = acr.host
            if self.command != "GET":
                return 405, _errors("UNSUPPORTED", "this fake ACR serves metadata reads only"), {}
            if repository == "_catalog":
                _, body, _ = acr._upstream_json("/v2/_catalog?n=10000")
                names = sorted((body or {}).get("repositories") or [])
                last = query.get("last", "")
                names = [n for n in names if n > last]
                n = int(query.get("n") or 100)
                headers = {}
                if len(names) > n:
                    headers["Link"] = (
                        f'</acr/v1/_catalog?last={quote(names[n - 1], safe="")}&n={n}>; rel="next"'
                    )
                return 200, {"repositories": names[:n]}, headers
            tags = acr._all_tags(repository)
            if tags is None:
                return (
                    404,
                    _errors(
                        "NAME_UNKNOWN",
                        "repository name not known to registry",
                        {"name": repository},
                    ),
                    {},
                )
            if not rest:
                return (
                    200,
                    {
                        "registry": host,
                        "imageName": repository,
                        "createdTime": _iso(
                            min(
                                (r.created for t in tags if (r := acr.tag_record(repository, t))),
                                default=time.time(),
                            )
                        ),
                        "lastUpdateTime": _iso(time.time()),
                        "manifestCount": len(
                            {r.digest for t in tags if (r := acr.tag_record(repository, t))}
                        ),
                        "tagCount": len(tags),
                        "changeableAttributes": {**_attributes(), "teleportEnabled": False},
                    },
                    {},
                )
            if rest[0] == "_tags" and len(rest) == 2:
                record = acr.tag_record(repository, rest[1])
                if record is None:
                    return (
                        404,
                        _errors("TAG_UNKNOWN", f"the specified tag does not exist: {rest[1]}"),
                        {},
                    )
                return (
                    200,
                    {
                        "registry": host,
                        "imageName": repository,
                        "tag": acr.tag_document(repository, rest[1], record),
                    },
                    {},
                )
            if rest[0] == "_tags" and len(rest) == 1:
                docs = []
                for tag in tags:
                    record = acr.tag_record(repository, tag)
                    if record is None:
                        continue
                    if query.get("digest") and record.digest != query["digest"]:
                        continue
                    docs.append((tag, record))
                orderby = query.get("orderby", "")
                if orderby == "timedesc":
                    docs.sort(key=lambda d: (-d[1].updated, d[0]))
                elif orderby == "timeasc":
                    docs.sort(key=lambda d: (d[1].updated, d[0]))
                last = query.get("last", "")
                if last:
                    names = [d[0] for d in docs]
                    if orderby in ("timedesc", "timeasc") and last in names:
                        docs = docs[names.index(last) + 1 :]
                    else:
                        docs = [d for d in docs if d[0] > last]
                n = int(query.get("n") or 100)
                headers = {}
                if len(docs) > n:
                    last_name = quote(docs[n - 1][0], safe="")
                    link = (
                        f"/acr/v1/{quote(repository, safe='')}/_tags"
                        f"?last={last_name}&n={n}&orderby={orderby}"
                    )
                    headers["Link"] = f'<{link}>; rel="next"'
                page = [acr.tag_document(repository, t, r) for t, r in docs[:n]]
                return 200, {"registry": host, "imageName": repository, "tags": page}, headers
            if rest[0] == "_manifests" and len(rest) == 2:
                document = acr.manifest_document(repository, rest[1])
                if document is None:
                    return (
                        404,
                        _errors(
                            "MANIFEST_UNKNOWN",
                            "manifest unknown",
                            {"Name": repository, "Revision": rest[1]},
                        ),
                        {},
                    )
                return 200, {"registry": host, "imageName": repository, "manifest": document}, {}
            if rest[0] == "_manifests" and len(rest) == 1:
                digests = sorted({r.digest for t in tags if (r := acr.tag_record(repository, t))})
                docs_m = [d for d in (acr.manifest_document(repository, x) for x in digests) if d]
                if query.get("orderby") == "timedesc":
                    docs_m.sort(key=lambda d: d["lastUpdateTime"], reverse=True)
                elif query.get("orderby") == "timeasc":
                    docs_m.sort(key=lambda d: d["lastUpdateTime"])
                n = int(query.get("n") or 100)
                return 200, {"registry": host, "imageName": repository, "manifests": docs_m[:n]}, {}
            return 404, _errors("NOT_FOUND", "unknown metadata path"), {}

        # -- /v2 (proxied) -----------------------------------------------------------
        def _v2(self, path: str, raw_query: str) -> None:
            body = self._read_any_body()
            repository, section, reference = _split_v2_path(path)
            if path.rstrip("/") in ("/v2", "/v2/_catalog"):
                scope, kind_name, action = "registry:catalog:*", ("registry", "catalog"), "*"
                if path.rstrip("/") == "/v2":
                    scope = ""
            else:
                write = self.command in ("PUT", "POST", "PATCH")
                action = "delete" if self.command == "DELETE" else ("push" if write else "pull")
                scope = f"repository:{repository}:{'push,pull' if write else action}"
                kind_name = ("repository", repository)
            injected = acr._take_injection("v2")
            if injected is not None:
                self._injected(injected, "v2", path)
                return
            header = self.headers.get("Authorization", "")
            if path.rstrip("/") == "/v2":
                record = acr._lookup(header.partition(" ")[2].strip()) if header else None
            else:
                record = acr.authorize(header, *kind_name, action)
            if record is None:
                self._deny("v2", path, scope, kind_name[1], action)
                return
            if path.rstrip("/") == "/v2":
                self._note(path, "v2", 200, record.subject)
                self.send_json(200, {})
                return
            if section == "tags" and reference == "list" and self.command == "GET":
                # Served here, as ACR does: sorted, with n/last pagination that the
                # backing distribution 2.8 gets wrong.
                self._v2_tags(repository, path, raw_query, record.subject)
                return
            upstream_path = path + (f"?{raw_query}" if raw_query else "")
            headers = {h: v for h in _PROXIED_REQUEST_HEADERS if (v := self.headers.get(h))}
            status, response_headers, data = acr.upstream_request(
                self.command, upstream_path, headers, body
            )
            out = {
                h: response_headers[h] for h in _PROXIED_RESPONSE_HEADERS if h in response_headers
            }
            if "Location" in response_headers:
                location = urlsplit(response_headers["Location"])
                out["Location"] = location.path + (f"?{location.query}" if location.query else "")
            if "Link" in response_headers:
                out["Link"] = response_headers["Link"].replace(acr.upstream, "")
            out["Docker-Distribution-Api-Version"] = "registry/2.0"
            if (
                self.command == "PUT"
                and section == "manifests"
                and status == 201
                and reference
                and not reference.startswith("sha256:")
            ):
                acr.note_push(
                    repository, reference, response_headers.get("Docker-Content-Digest", "")
                )
            self._note(path, "v2", status, record.subject)
            content_type = out.pop(
                "Content-Type", "application/octet-stream" if data else "application/json"
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            length = (
                response_headers.get("Content-Length", str(len(data)))
                if self.command == "HEAD"
                else str(len(data))
            )
            self.send_header("Content-Length", length)
            for key, value in out.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD" and data:
                self.wfile.write(data)

        def _v2_tags(self, repository: str, path: str, raw_query: str, subject: str) -> None:
            query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
            tags = acr._all_tags(repository)
            if tags is None:
                self._note(path, "v2", 404, subject)
                body = _errors("NAME_UNKNOWN", "repository name not known to registry")
                self.send_json(
                    404, body, headers={"Docker-Distribution-Api-Version": "registry/2.0"}
                )
                return
            last = query.get("last", "")
            tags = [t for t in tags if t > last]
            n = int(query.get("n") or 0) or len(tags) or 1
            headers = {"Docker-Distribution-Api-Version": "registry/2.0"}
            if len(tags) > n:
                headers["Link"] = f'<{path}?last={quote(tags[n - 1], safe="")}&n={n}>; rel="next"'
            self._note(path, "v2", 200, subject)
            self.send_json(200, {"name": repository, "tags": tags[:n]}, headers=headers)

        def _read_any_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                for _ in range(1_000_000):
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.read_body()

    return Handler
