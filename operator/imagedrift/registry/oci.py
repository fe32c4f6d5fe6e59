"""The generic OCI distribution backend: any registry that speaks the distribution API.

Authentication follows what Docker clients do, so MCR, Docker Hub, GHCR, Harbor, ACR and
the CNCF distribution server all work:

- anonymous, when the registry asks for nothing;
- HTTP basic, when the registry answers 401 with a ``Basic`` challenge;
- the bearer-token flow, when it answers 401 with ``Bearer realm=..,service=..,scope=..``:
  GET the realm with ``service`` and ``scope`` (basic credentials when we have them) and
  send the returned ``token`` / ``access_token``. Tokens are cached per
  (realm, service, scope) until shortly before ``expires_in``, and once a host's realm is
  known they are sent proactively, so a steady-state lookup costs one request.

Every failure becomes an ``imagedrift.errors`` exception. Transient ones (connection errors,
timeouts, 5xx) are retried a bounded number of times with exponential backoff and jitter;
429 is retried while the registry's ``Retry-After`` stays under a cap and then surfaces as
``RegistryThrottled`` so the caller can wait longer (throttling never fails a policy).

Every body is streamed and bounded by ``ReadLimits`` (bytes and wall time), whatever the
registry declares; ``identity`` is the only content coding asked for or accepted, so the
bytes counted are the bytes kept. Redirects are followed here, not by httpx, so the rule is
ours: ``Authorization`` goes only to the origin it was written for (a blob GET redirected
to storage arrives there without it), and never from https down to http.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import json
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.errors import (
    InvalidSpec,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryThrottled,
    RegistryUnavailable,
    RequestBudgetSpent,
)
from imagedrift.registry.base import ANONYMOUS, Credentials
from imagedrift.registry.budget import RequestBudget
from imagedrift.registry.limits import (
    DEFAULT_LIMITS,
    MAX_REDIRECTS,
    SETTINGS,
    ReadLimits,
    ReadRefused,
    read_body,
)
from imagedrift.registry.manifests import (
    DOCKER_CONFIG as DOCKER_CONFIG,
)
from imagedrift.registry.manifests import (
    DOCKER_MANIFEST as DOCKER_MANIFEST,
)
from imagedrift.registry.manifests import (
    DOCKER_MANIFEST_LIST as DOCKER_MANIFEST_LIST,
)
from imagedrift.registry.manifests import (
    IMAGE_CONFIG_TYPES as IMAGE_CONFIG_TYPES,
)
from imagedrift.registry.manifests import (
    IMAGE_MANIFEST_TYPES as IMAGE_MANIFEST_TYPES,
)
from imagedrift.registry.manifests import (
    INDEX_TYPES as INDEX_TYPES,
)
from imagedrift.registry.manifests import (
    MANIFEST_ACCEPT as MANIFEST_ACCEPT,
)
from imagedrift.registry.manifests import (
    OCI_CONFIG as OCI_CONFIG,
)
from imagedrift.registry.manifests import (
    OCI_INDEX as OCI_INDEX,
)
from imagedrift.registry.manifests import (
    OCI_MANIFEST as OCI_MANIFEST,
)
from imagedrift.registry.manifests import (
    parse_json,
    resolve_image,
)

RequestHook = Callable[[str, str, str, int], None]
"""``on_request(host, method, path, status)``; status 0 when no response arrived."""

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: ``scheme`` is ``bearer`` or ``basic``."""

    scheme: str
    realm: str = ""
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> Challenge | None:
    """Parse a ``WWW-Authenticate`` value; None when it names neither Bearer nor Basic."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
        params[match.group(1).lower()] = value
    return Challenge(
        scheme, params.get("realm", ""), params.get("service", ""), params.get("scope", "")
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    None when absent or unparseable; never negative.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def verify_digest(data: bytes, digest: str, *, registry: str = "") -> None:
    """Raise RegistryError unless ``data`` hashes to ``digest`` (sha256 or sha512)."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise RegistryError(f"unsupported digest algorithm in {digest!r}", registry=registry)
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise RegistryError(
            f"content does not match its digest: expected {digest}, got {algorithm}:{actual}",
            registry=registry,
        )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _normalise_registry_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``host:5000/`` -> ``host:5000``."""
    key = key.strip().lower()
    if "://" in key:
        key = key.split("://", 1)[1]
    key = key.split("/", 1)[0]
    if key in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return "docker.io"
    return key


def credentials_from_docker_config(
    config: str | bytes | Mapping[str, Any], host: str, *, identity: str
) -> Credentials | None:
    """Credentials for ``host`` from a docker config (a ``.dockerconfigjson`` Secret value).

    Reads ``auths.<host>.auth`` (base64 ``user:password``) or its ``username`` /
    ``password`` fields (the legacy ``.dockercfg`` form without ``auths`` too); keys may
    carry a scheme or path (``https://index.docker.io/v1/``).
    Returns None when the config has no entry for ``host``. ``identity`` is what error
    messages will name (e.g. ``secret ns/name``). A config that does not parse raises
    InvalidSpec: the user has to fix the Secret.
    """
    if isinstance(config, str | bytes):
        try:
            document = json.loads(config)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidSpec(f"{identity}: docker config is not JSON: {exc}") from None
    else:
        document = config
    if not isinstance(document, Mapping):
        raise InvalidSpec(f"{identity}: docker config is not a JSON object")
    # ``.dockerconfigjson`` nests hosts under "auths"; the legacy ``.dockercfg`` is the map.
    auths = document.get("auths", {}) if "auths" in document else document
    if not isinstance(auths, Mapping):
        raise InvalidSpec(f"{identity}: docker config 'auths' is not an object")
    wanted = _normalise_registry_key(host)
    for key, entry in auths.items():
        if _normalise_registry_key(str(key)) != wanted:
            continue
        if not isinstance(entry, Mapping):
            raise InvalidSpec(f"{identity}: docker config entry for {key!r} is not an object")
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if encoded:
            try:
                decoded = base64.b64decode(str(encoded), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidSpec(
                    f"{identity}: 'auth' for {key!r} is not base64 user:password"
                ) from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidSpec(
                    f"{identity}: 'auth' for {key!r} has no ':' between user and password"
                )
        return Credentials(username=username, password=password, identity=identity)
    return None


@dataclass
class _Token:
    value: str
    refresh_at: float


def _error_detail(response: httpx.Response) -> str:
    """The registry's own words from a distribution error body, when it sent some."""
    try:
        body = response.json()
        errors = body.get("errors") or []
        if errors:
            first = errors[0]
            return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return response.reason_phrase


def _ssl_context(verify: bool | str | Path) -> ssl.SSLContext | bool:
    """httpx wants an SSLContext for a private CA bundle (a path is deprecated there). The
    bundle is trusted in addition to the system roots, never instead of them."""
    if isinstance(verify, bool):
        return verify
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(verify))
    return context


class OciRegistryClient:
    """``RegistryClient`` for one OCI distribution host over HTTP(S).

    Thread-safe: the token cache is locked and ``httpx.Client`` may be shared. ``sleep``,
    ``clock`` and ``transport`` are injectable so unit tests neither sleep nor open sockets.
    ``on_request`` is called once per HTTP exchange (token requests included) and must
    not raise.
    """

    def __init__(
        self,
        host: str,
        credentials: Credentials = ANONYMOUS,
        *,
        scheme: str = "https",
        verify: bool | str | Path = True,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 10.0,
        on_request: RequestHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        page_size: int = 1000,
        max_pages: int = 100,
        budget: RequestBudget | None = None,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme must be https or http, not {scheme!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.host = host
        self.credentials = credentials
        self.limits = limits
        self._budget = budget
        # Docker Hub's name and its API host differ; every other registry serves both.
        api_host = "registry-1.docker.io" if host == "docker.io" else host
        self.base_url = f"{scheme}://{api_host}"
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._on_request = on_request
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        self._page_size = page_size
        self._max_pages = max_pages
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._bearer: tuple[str, str] | None = None  # (realm, service) once challenged
        self._basic = False  # the host asked for basic auth
        self._http = httpx.Client(
            verify=_ssl_context(verify),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,  # _send follows them, with our rule for credentials
            headers={"User-Agent": "imagedrift", "Accept-Encoding": "identity"},
        )

    # -- RegistryClient --------------------------------------------------------------

    def resolve_digest(self, ref: ImageRef) -> str:
        """The digest ``ref`` points at now: one HEAD request (GET only when the registry
        sends no ``Docker-Content-Digest``). A digest reference is checked to exist."""
        response = self.request(
            "HEAD",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            repository=ref.repository,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        digest = str(response.headers.get("Docker-Content-Digest", ""))
        if digest:
            return digest
        _, _, digest = self.get_manifest(ref)
        return digest

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        """Raw manifest bytes, media type and digest; the content is verified against the
        digest asked for, or against the ``Docker-Content-Digest`` the registry sent."""
        response = self.request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            repository=ref.repository,
            headers={"Accept": MANIFEST_ACCEPT},
            max_bytes=self.limits.manifest_bytes,
            setting=SETTINGS["manifest_bytes"],
        )
        data = response.content
        if ref.digest:
            digest = ref.digest
        else:
            digest = response.headers.get("Docker-Content-Digest", "") or sha256_digest(data)
        verify_digest(data, digest, registry=self.host)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in INDEX_TYPES | IMAGE_MANIFEST_TYPES:
            # Some registries answer application/json; the manifest names its own type.
            media_type = str(self._json(data, f"manifest {ref}").get("mediaType") or media_type)
        return data, media_type, digest

    def get_blob(self, ref: ImageRef, digest: str) -> bytes:
        """A blob of ``ref``'s repository, verified against ``digest``."""
        return self._get_blob(ref, digest, "blob_bytes")

    def get_image(self, ref: ImageRef) -> ResolvedImage:
        """The manifest or index at ``ref`` with each platform's manifest and config.

        Index entries for platform ``unknown/unknown`` (attestations) and entries that are
        not image manifests are left out. Everything fetched by digest is verified.
        """
        return resolve_image(
            ref,
            get_manifest=self.get_manifest,
            get_config=lambda r, digest: self._get_blob(r, digest, "config_bytes"),
            host=self.host,
            max_children=self.limits.index_children,
        )

    def list_tags(self, ref: ImageRef) -> list[str]:
        """Every tag of the repository, following ``Link: <..>; rel="next"`` pages.

        More than ``max_pages`` pages raises RegistryError rather than returning a silently
        truncated list (the newest tag could be on the missing page).
        """
        tags: list[str] = []
        url: str = f"/v2/{ref.repository}/tags/list"
        params: dict[str, str] | None = {"n": str(self._page_size)}
        for _ in range(self._max_pages):
            response = self.request("GET", url, repository=ref.repository, params=params)
            body = self._json(response.content, f"tag list of {ref.name}")
            tags.extend(str(tag) for tag in body.get("tags") or [])
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            if not match:
                return tags
            url, params = match.group(1), None  # the link carries n and last itself
        raise RegistryError(
            f"tag list of {ref.name} has more than {self._max_pages} pages", registry=self.host
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OciRegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the distribution API, with auth, retries and error mapping ----------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        repository: str | None,
        push: bool = False,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        ok: Collection[int] = (200, 201, 202, 204),
        max_bytes: int | None = None,
        setting: str = "",
    ) -> httpx.Response:
        """One distribution-API call, authenticated, retried and mapped to our errors.

        ``path`` is ``/v2/...`` or an absolute URL (an upload ``Location``); credentials
        are only ever sent to this registry's own origin. ``repository`` and ``push`` pick
        the token scope (``repository:<name>:pull[,push]``). A status in ``ok`` is returned;
        anything else raises: 404 NotFound, 401/403 RegistryAuthError, 429
        RegistryThrottled, 5xx and transport failures RegistryUnavailable (after retries),
        other statuses RegistryError. The body is read within ``max_bytes`` (default: the
        ``document_bytes`` limit; ``setting`` names the limit in the error) and the
        ``body_seconds`` limit; past either it raises RegistryError and is not retried.
        """
        if max_bytes is None:
            max_bytes, setting = self.limits.document_bytes, SETTINGS["document_bytes"]
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}" if repository else ""
        last: RegistryError | None = None
        for attempt in range(self._max_attempts):
            try:
                response = self._authenticated(
                    method, path, scope, headers, params, content, (max_bytes, setting)
                )
                return self._check(response, method, ok)
            except RequestBudgetSpent:
                raise  # our own budget: the engine reschedules; sleeping here holds a worker
            except RegistryThrottled as exc:
                last = exc
                if exc.retry_after > self._max_retry_after or attempt + 1 >= self._max_attempts:
                    raise
                self._sleep(exc.retry_after if exc.retry_after > 0 else self._delay(attempt))
            except RegistryUnavailable as exc:
                last = exc
                if attempt + 1 >= self._max_attempts:
                    raise
                self._sleep(self._delay(attempt))
        assert last is not None  # the loop either returned or raised
        raise last

    def _delay(self, attempt: int) -> float:
        # Exponential backoff with jitter, so many clients do not retry in lockstep.
        ceiling = min(self._max_backoff, self._backoff * (2.0**attempt))
        return ceiling * (0.5 + self._random.random() / 2)

    def _url(self, path: str) -> httpx.URL:
        # An upload Location may be relative to the registry or absolute.
        return httpx.URL(self.base_url).join(path)

    def _same_origin(self, url: httpx.URL) -> bool:
        return url.scheme + "://" + url.netloc.decode() == self.base_url

    def _exchange(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        cap: tuple[int, str],
    ) -> httpx.Response:
        """One HTTP exchange, redirects included, with its body read whole within ``cap``
        (bytes, the setting that sets them) and the ``body_seconds`` limit. Transport
        failures become RegistryUnavailable; a body past a limit, RegistryError."""
        if self._budget is not None:
            self._budget.spend(self.host)
        if params:
            # Merge, not replace: an upload Location carries its own state in the query.
            url = url.copy_merge_params(dict(params))
        request = self._http.build_request(method, url, headers=headers, content=content)
        where = f"{method} {url.path}"
        status = 0
        try:
            response = self._send(request)
            status = response.status_code
            try:
                # A HEAD answer has no body; its Content-Length is the GET's, not a limit.
                data = b"" if method == "HEAD" else self._body(response, where, cap)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise RegistryUnavailable(
                f"{self.host}: {where} timed out: {exc!r}", registry=self.host
            ) from exc
        except httpx.TransportError as exc:
            # Named like every other registry fault: the SRE reads which registry is down.
            raise RegistryUnavailable(
                f"{self.host}: {where} failed: {exc!r}", registry=self.host
            ) from exc
        finally:
            self._notify(url, method, status)
        # Errors name the registry's path even when the answer came from a redirect target.
        return httpx.Response(status, headers=response.headers, content=data, request=request)

    def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and follow up to MAX_REDIRECTS redirects; the answer's body is
        not read yet. Authorization is dropped for good at the first hop to another origin
        (scheme, host, port), and a hop from https to http is refused."""
        origin = _origin(request.url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._http.send(request, stream=True)
            if not response.has_redirect_location:
                return response
            response.close()  # a redirect's body is never read
            target = request.url.join(response.headers["Location"])
            if target.scheme not in ("http", "https") or (
                request.url.scheme == "https" and target.scheme != "https"
            ):
                raise RegistryError(
                    f"{self.host}: {request.method} {request.url.path}: redirect to "
                    f"{target.scheme}://{target.host} refused (only https, or http from http)",
                    registry=self.host,
                )
            method, content = request.method, request.content
            if (response.status_code == 303 and method != "HEAD") or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, content = "GET", b""  # what browsers and httpx do
            headers = httpx.Headers(request.headers)
            del headers["Host"]
            if _origin(target) != origin:
                headers.pop("Authorization", None)
                origin = ("", "", None)  # and it is not sent again, even on a hop back
            if not content:
                headers.pop("Content-Length", None)
                headers.pop("Content-Type", None)
            request = self._http.build_request(
                method, target, headers=headers, content=content or None
            )
        raise RegistryError(
            f"{self.host}: {request.method} {request.url.path}: more than {MAX_REDIRECTS} "
            "redirects",
            registry=self.host,
        )

    def _body(self, response: httpx.Response, where: str, cap: tuple[int, str]) -> bytes:
        """The body of a streamed ``response``, read within the limits (``read_body``)."""
        try:
            # iter_bytes, not iter_raw: read_body refuses any coding but identity before
            # it starts, and iter_bytes also serves a body a test transport read already.
            return read_body(
                response.iter_bytes(),
                headers=response.headers,
                success=response.is_success,
                cap=cap,
                seconds=self.limits.body_seconds,
                clock=self._clock,
            )
        except ReadRefused as exc:
            raise RegistryError(f"{self.host}: {where}: {exc}", registry=self.host) from None

    def _notify(self, url: httpx.URL, method: str, status: int) -> None:
        if self._on_request is not None:
            self._on_request(url.netloc.decode(), method, url.path, status)

    def _authenticated(
        self,
        method: str,
        path: str,
        scope: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: bytes | None,
        cap: tuple[int, str],
    ) -> httpx.Response:
        """Send with what auth we know; on a 401 challenge, authenticate and resend once."""
        url = self._url(path)
        if not self._same_origin(url):
            return self._exchange(
                method, url, headers=headers, params=params, content=content, cap=cap
            )
        sent = self._known_auth(scope)
        response = self._exchange(
            method,
            url,
            headers={**(headers or {}), **sent},
            params=params,
            content=content,
            cap=cap,
        )
        if response.status_code != 401:
            return response
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise self._auth_error(f"{method} {url.path} answered 401 without a usable challenge")
        if challenge.scheme == "basic":
            if self.credentials.anonymous:
                raise self._auth_error(f"{method} {url.path} needs credentials (basic auth)")
            if sent.get("Authorization", "").startswith("Basic "):
                raise self._auth_error(f"{method} {url.path}: basic credentials refused")
            self._basic = True
        else:
            if not challenge.realm:
                raise self._auth_error(f"{method} {url.path}: bearer challenge without a realm")
            with self._lock:
                self._bearer = (challenge.realm, challenge.service)
                # A token we sent was refused: it expired early or was revoked.
                for key, token in list(self._tokens.items()):
                    if sent.get("Authorization") == f"Bearer {token.value}":
                        del self._tokens[key]
            self._token(challenge.realm, challenge.service, challenge.scope or scope, alias=scope)
        retried = self._exchange(
            method,
            url,
            headers={**(headers or {}), **self._known_auth(scope)},
            params=params,
            content=content,
            cap=cap,
        )
        if retried.status_code == 401:
            raise self._auth_error(
                f"{method} {url.path}: credentials refused ({_error_detail(retried)})"
            )
        return retried

    def _basic_auth(self) -> dict[str, str]:
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def _known_auth(self, scope: str) -> dict[str, str]:
        """The Authorization header to send before being challenged, if we know one."""
        if self._basic and not self.credentials.anonymous:
            return self._basic_auth()
        with self._lock:
            bearer = self._bearer
        if bearer is None:
            return {}
        realm, service = bearer
        return {"Authorization": f"Bearer {self._token(realm, service, scope)}"}

    def _token(self, realm: str, service: str, scope: str, *, alias: str = "") -> str:
        """A token for (realm, service, scope): cached, or fetched from the realm."""
        key = (realm, service, scope)
        now = self._clock()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and now < cached.refresh_at:
                return cached.value
        params = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        # A header, not httpx auth, so that _send's redirect rule covers it as well.
        response = self._exchange(
            "GET",
            httpx.URL(realm),
            headers={} if self.credentials.anonymous else self._basic_auth(),
            params=params,
            cap=(self.limits.document_bytes, SETTINGS["document_bytes"]),
        )
        status = response.status_code
        if status != 200 and status != 429 and status < 500:
            # A 404 or 400 from the token service is a credential or setup problem, not
            # a missing image: callers must not read it as NotFound.
            raise self._auth_error(
                f"token service {realm} answered {status} ({_error_detail(response)})"
            )
        self._check(response, "GET", (200,))
        body = self._json(response.content, f"token from {realm}")
        value = str(body.get("token") or body.get("access_token") or "")
        if not value:
            raise self._auth_error(f"token service {realm} answered without a token")
        try:
            expires_in = float(body.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires_in = 60.0
        # Refresh a little early so a token never expires between cache check and use.
        token = _Token(value, now + expires_in - min(30.0, expires_in * 0.1))
        with self._lock:
            self._tokens[key] = token
            if alias and alias != scope:
                self._tokens[(realm, service, alias)] = token
        return value

    def _auth_error(self, message: str) -> RegistryAuthError:
        identity = self.credentials.identity
        return RegistryAuthError(
            f"{self.host}: {message} (as {identity})", registry=self.host, identity=identity
        )

    def _check(self, response: httpx.Response, method: str, ok: Collection[int]) -> httpx.Response:
        status = response.status_code
        where = f"{method} {response.request.url.path}"
        if status in ok:
            return response
        detail = _error_detail(response) if method != "HEAD" else response.reason_phrase
        if status == 404:
            raise NotFound(f"{self.host}: {where}: not found ({detail})", registry=self.host)
        if status in (401, 403):
            raise self._auth_error(f"{where} answered {status} ({detail})")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After")) or 0.0
            raise RegistryThrottled(
                f"{self.host}: {where} throttled (429), retry after {retry_after:.0f}s",
                registry=self.host,
                retry_after=retry_after,
            )
        if status >= 500:
            raise RegistryUnavailable(
                f"{self.host}: {where} answered {status} ({detail})", registry=self.host
            )
        raise RegistryError(
            f"{self.host}: {where} answered {status} ({detail})", registry=self.host
        )

    # -- parsing -------------------------------------------------------------------------

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        return parse_json(data, what, self.host)

    def _get_blob(self, ref: ImageRef, digest: str, limit: str) -> bytes:
        """The blob, read within the ``limit`` field of ``ReadLimits`` and verified."""
        response = self.request(
            "GET",
            f"/v2/{ref.repository}/blobs/{digest}",
            repository=ref.repository,
            max_bytes=getattr(self.limits, limit),
            setting=SETTINGS[limit],
        )
        verify_digest(response.content, digest, registry=self.host)
        return response.content
