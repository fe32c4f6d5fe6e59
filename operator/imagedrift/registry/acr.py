"""The Azure Container Registry backend: ``azure-containerregistry`` with cached ACR tokens.

Used as shipped, the SDK authenticates every operation from scratch: the request goes out
without a token, gets 401, the challenge policy trades the Entra ID token for an ACR
refresh token (``/oauth2/exchange``) and that for an access token (``/oauth2/token``), and
the request is sent again -- four requests per lookup, which an operator polling many tags
turns into throttling. This backend replaces the SDK's challenge policy with
``AcrTokenPolicy``: refresh tokens and per-scope access tokens are cached until shortly
before they expire and sent proactively, so a steady-state lookup is ONE request. A 401
still works as a challenge (the token is renewed once and the request resent).

Which endpoint does what, and why:

- ``resolve_digest``: ``HEAD /v2/<repo>/manifests/<tag>``. The ``pull`` scope is the one
  every identity allowed to pull has (anonymous pull included), and the same token then
  serves manifests, blobs and tag lists of that repository.
- ``get_manifest``: ``GET /v2/...`` through the SDK's own pipeline (same cached token,
  retries and error mapping). The SDK's ``get_manifest`` returns re-parsed JSON, not the
  bytes the digest was computed over, so it cannot give what the protocol promises.
- ``get_blob``: one ``GET /v2/.../blobs/<digest>`` through the same pipeline, streamed
  within the blob limit and digest-verified. (The SDK's ``download_blob`` reads each 4 MiB
  range whole, whatever a registry that ignores ``Range`` sends.)
- ``list_tags``: ``/acr/v1`` tag list ordered by last update, newest first, when the
  identity can read metadata; the ``/v2`` tag list for anonymous pull. Both read raw, page
  by page, since the SDK's pager reads each page whole.
- ``tag_info``: ``/acr/v1`` tag and manifest properties read raw, since the SDK's models
  drop ``signed`` and ``quarantineState``.

The SDK serves as a pipeline (policies, retries, transport); every body is read here,
streamed within ``ReadLimits`` as in the OCI backend: manifests, blobs, tag lists, tag and
manifest properties, token answers. The
SDK's redirect policy drops ``Authorization`` on every redirect and ``AcrTokenPolicy`` puts
a token back only for this registry's own https origin, so a blob GET redirected to
storage reaches it without one; a redirect to plain http is refused.

Identity per policy is a small plain dict (see ``AcrIdentity.from_spec``); secrets are
handed in separately. Errors become ``imagedrift.errors``; a 429 surfaces at once as
``RegistryThrottled`` (azure-core would otherwise sleep and retry up to ten times).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from io import SEEK_SET
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote, unquote, urlsplit

from azure.containerregistry import ContainerRegistryClient
from azure.containerregistry._anonymous_exchange_client import AnonymousAccessCredential
from azure.containerregistry._generated import ContainerRegistry as GeneratedContainerRegistry
from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy, RetryPolicy, UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.core.rest import HttpRequest, HttpResponse
from urllib3.exceptions import HTTPError as Urllib3Error

from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.errors import (
    InvalidSpec,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryThrottled,
    RegistryUnavailable,
)
from imagedrift.registry.base import TagInfo
from imagedrift.registry.budget import RequestBudget
from imagedrift.registry.limits import DEFAULT_LIMITS, SETTINGS, ReadLimits, ReadRefused, read_body
from imagedrift.registry.manifests import parse_json, resolve_image
from imagedrift.registry.oci import (
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    RequestHook,
    parse_challenge,
    parse_retry_after,
    verify_digest,
)

DEFAULT_AUDIENCE: Final = "https://containerregistry.azure.net"
API_VERSION: Final = "2021-07-01"
USER_AGENT: Final = "imagedrift-acr"
IDENTITY_TYPES: Final = (
    "workloadIdentity",
    "managedIdentity",
    "servicePrincipal",
    "anonymous",
    "default",
)
# Renew a token this long before it expires (capped at a quarter of its lifetime).
DEFAULT_REFRESH_MARGIN: Final = 300.0
# A token that is not a JWT carries no expiry; trust it this long.
OPAQUE_TOKEN_LIFETIME: Final = 300.0
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


# -- identities ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AcrIdentity:
    """Who the backend authenticates as. Built from the policy's plain ``identity`` dict.

    ``type`` is one of ``IDENTITY_TYPES``; ``client_id``/``tenant_id`` may stay empty for
    workload identity (the webhook-injected ``AZURE_*`` variables fill them) and for a
    system-assigned managed identity. ``authority_host`` points azure-identity at a
    non-public-cloud (or test) Entra ID endpoint.
    """

    type: str = "default"
    client_id: str = ""
    tenant_id: str = ""
    token_file: str = ""
    authority_host: str = ""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> AcrIdentity:
        """``{"identity": "workloadIdentity", "clientId": .., "tenantId": .., "tokenFile": ..,
        "authorityHost": ..}`` (the policy's ``base.azure``); absent or empty is ``default``.
        Unknown keys (``secretRef``) are ignored. Raises InvalidSpec."""
        spec = spec or {}
        # The CRD calls the kind ``identity``; ``type`` is accepted as well.
        kind = str(spec.get("identity") or spec.get("type") or "default")
        if kind not in IDENTITY_TYPES:
            raise InvalidSpec(f"identity type {kind!r} is not one of {', '.join(IDENTITY_TYPES)}")
        identity = cls(
            type=kind,
            client_id=str(spec.get("clientId") or ""),
            tenant_id=str(spec.get("tenantId") or ""),
            token_file=str(spec.get("tokenFile") or ""),
            authority_host=str(spec.get("authorityHost") or ""),
        )
        if kind == "servicePrincipal" and not (identity.client_id and identity.tenant_id):
            raise InvalidSpec("a servicePrincipal identity needs clientId and tenantId")
        return identity

    @property
    def description(self) -> str:
        """What error messages call this identity, e.g. ``workload identity (client id X)``."""
        if self.type == "workloadIdentity":
            client = self.client_id or os.environ.get("AZURE_CLIENT_ID", "") or "unset"
            return f"workload identity (client id {client})"
        if self.type == "managedIdentity":
            return (
                f"managed identity (client id {self.client_id})"
                if self.client_id
                else "managed identity (system-assigned)"
            )
        if self.type == "servicePrincipal":
            return f"service principal (client id {self.client_id}, tenant {self.tenant_id})"
        if self.type == "anonymous":
            return "anonymous"
        return "DefaultAzureCredential"


def build_credential(
    spec: Mapping[str, Any] | AcrIdentity | None,
    secret: str = "",
    *,
    connection_verify: bool | str = True,
) -> TokenCredential | None:
    """The azure-identity credential for ``spec`` (``None`` for anonymous).

    ``secret`` is the service principal's client secret value (read by the caller from a
    Kubernetes Secret). ``connection_verify`` is a CA bundle path (or bool) for Entra ID.
    """
    from azure.identity import (
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    identity = spec if isinstance(spec, AcrIdentity) else AcrIdentity.from_spec(spec)
    common: dict[str, Any] = {"connection_verify": connection_verify}
    if identity.authority_host:
        common["authority"] = identity.authority_host
    if identity.type == "anonymous":
        return None
    if identity.type == "servicePrincipal":
        if not secret:
            raise InvalidSpec(f"{identity.description}: no client secret was provided")
        if identity.authority_host or os.environ.get("AZURE_AUTHORITY_HOST"):
            # Instance discovery asks the public cloud about the authority; a private or
            # sovereign authority is what the user (or AZURE_AUTHORITY_HOST) named: trust it.
            common["disable_instance_discovery"] = True
        return ClientSecretCredential(identity.tenant_id, identity.client_id, secret, **common)
    if identity.type == "workloadIdentity":
        kwargs: dict[str, Any] = dict(common)
        if identity.client_id:
            kwargs["client_id"] = identity.client_id
        if identity.tenant_id:
            kwargs["tenant_id"] = identity.tenant_id
        if identity.token_file:
            kwargs["token_file_path"] = identity.token_file
        try:
            return WorkloadIdentityCredential(**kwargs)
        except ValueError as exc:  # a missing AZURE_* variable
            raise InvalidSpec(f"{identity.description}: {exc}") from None
    if identity.type == "managedIdentity":
        common.pop("authority", None)
        # ManagedIdentityCredential turns into workload identity whenever the pod has the
        # AZURE_FEDERATED_TOKEN_FILE variables; the policy asked for the managed identity.
        common["_exclude_workload_identity_credential"] = True
        if identity.client_id:
            return ManagedIdentityCredential(client_id=identity.client_id, **common)
        return ManagedIdentityCredential(**common)
    return DefaultAzureCredential(**common)


# -- tokens -------------------------------------------------------------------------------


def acr_scope(method: str, path: str) -> str:
    """The ACR token scope a request needs, or ``""`` when it cannot be told from the path.

    ``/acr/v1/<repo>/..``: ``metadata_read`` (GET), ``metadata_write`` (PATCH),
    ``delete``; ``/v2/<repo>/..``: ``pull`` (GET/HEAD), ``push,pull`` (writes), ``delete``;
    catalogs: ``registry:catalog:*``. Repository names may arrive percent-encoded.
    """
    method = method.upper()
    if path in ("/acr/v1/_catalog", "/v2/_catalog"):
        return "registry:catalog:*"
    if path.startswith("/acr/v1/"):
        segments = path.removeprefix("/acr/v1/").split("/")
        cut = next((i for i, s in enumerate(segments) if i and s.startswith("_")), len(segments))
        repository = unquote("/".join(segments[:cut]))
        if not repository:
            return ""
        action = {"PATCH": "metadata_write", "PUT": "metadata_write", "DELETE": "delete"}.get(
            method, "metadata_read"
        )
        return f"repository:{repository}:{action}"
    if path.startswith("/v2/"):
        rest = path.removeprefix("/v2/")
        cut = max(rest.rfind(marker) for marker in ("/manifests/", "/blobs/", "/tags/"))
        if cut <= 0:
            return ""
        repository = unquote(rest[:cut])
        if method in ("GET", "HEAD"):
            return f"repository:{repository}:pull"
        if method == "DELETE":
            return f"repository:{repository}:delete"
        return f"repository:{repository}:push,pull"
    return ""


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (epoch seconds), or None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
        return float(claims["exp"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


@dataclass
class _Cached:
    value: str
    renew_at: float


@dataclass
class TokenStats:
    """How many token round trips the cache made (for metrics and tests)."""

    aad_tokens: int = 0
    exchanges: int = 0
    access_tokens: int = 0


class AcrTokenCache:
    """ACR refresh and per-scope access tokens for one registry and one identity.

    Thread-safe. ``credential=None`` is anonymous pull (no exchange; ``grant_type=password``).
    Tokens are renewed ``refresh_margin`` seconds before their ``exp`` (at most a quarter of
    their lifetime early), so a caller never presents a token the registry would refuse.
    """

    def __init__(
        self,
        endpoint: str,
        service: str,
        credential: TokenCredential | None,
        *,
        identity: str,
        pipeline: PipelineClient[HttpRequest, HttpResponse],
        aad_scope: str = DEFAULT_AUDIENCE + "/.default",
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        clock: Callable[[], float] = time.time,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.service = service
        self.identity = identity
        self.stats = TokenStats()
        self._credential = credential
        self._pipeline = pipeline
        self._aad_scope = aad_scope
        self._margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._refresh: _Cached | None = None
        self._access: dict[str, _Cached] = {}

    def access_token(self, scope: str, *, renew: bool = False) -> str:
        """A valid access token for ``scope``; ``renew`` discards the cached one first."""
        with self._lock:
            cached = self._access.get(scope)
            now = self._clock()
            if cached is not None and not renew and now < cached.renew_at:
                return cached.value
            token = self._fetch_access_token(scope)
            self._access[scope] = _Cached(token, self._renew_at(token, now))
            return token

    def clear(self) -> None:
        with self._lock:
            self._refresh = None
            self._access.clear()

    def _renew_at(self, token: str, now: float) -> float:
        expiry = token_expiry(token)
        if expiry is None:
            return now + OPAQUE_TOKEN_LIFETIME
        lifetime = max(0.0, expiry - now)
        return expiry - min(self._margin, lifetime / 4)

    def _fetch_access_token(self, scope: str) -> str:
        form = {"service": self.service, "scope": scope}
        if self._credential is None:
            form["grant_type"] = "password"
            return self._token_request(form, what=f"an anonymous token for {scope}")
        for attempt in range(2):
            refresh = self._refresh_token(renew=attempt > 0)
            try:
                return self._token_request(
                    {**form, "grant_type": "refresh_token", "refresh_token": refresh},
                    what=f"a token for {scope}",
                )
            except RegistryAuthError:
                if attempt:
                    raise
                # The refresh token may have been revoked or expired early: exchange anew once.
        raise AssertionError("unreachable")  # pragma: no cover

    def _refresh_token(self, *, renew: bool) -> str:
        now = self._clock()
        if self._refresh is not None and not renew and now < self._refresh.renew_at:
            return self._refresh.value
        assert self._credential is not None
        try:
            aad = self._credential.get_token(self._aad_scope).token
        except ClientAuthenticationError as exc:
            raise RegistryAuthError(
                f"{self.service}: {self.identity} could not get an Entra ID token: "
                f"{_first_line(exc.message)}",
                registry=self.service,
                identity=self.identity,
            ) from None
        self.stats.aad_tokens += 1
        body = self._post(
            "/oauth2/exchange",
            {"grant_type": "access_token", "service": self.service, "access_token": aad},
            what="an ACR refresh token",
        )
        token = str(body.get("refresh_token") or "")
        if not token:
            raise RegistryError(
                f"{self.service}: token exchange returned no refresh token", registry=self.service
            )
        self.stats.exchanges += 1
        self._refresh = _Cached(token, self._renew_at(token, now))
        return token

    def _token_request(self, form: dict[str, str], *, what: str) -> str:
        body = self._post("/oauth2/token", form, what=what)
        token = str(body.get("access_token") or "")
        if not token:
            raise RegistryError(
                f"{self.service}: /oauth2/token returned no access token", registry=self.service
            )
        self.stats.access_tokens += 1
        return token

    def _post(self, path: str, form: dict[str, str], *, what: str) -> dict[str, Any]:
        request = HttpRequest(
            "POST",
            f"{self.endpoint}{path}",
            params={"api-version": API_VERSION},
            data=form,
            headers={"Accept-Encoding": "identity"},
        )
        cap = (self.limits.document_bytes, SETTINGS["document_bytes"])
        answer = _send_bounded(
            self._pipeline,
            request,
            self.service,
            self.identity,
            f"getting {what}",
            cap,
            self.limits.body_seconds,
        )
        try:
            body = json.loads(answer.content)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise RegistryError(
                f"{self.service}: {path} did not answer JSON", registry=self.service
            )
        return body


class AcrTokenPolicy(HTTPPolicy[HttpRequest, HttpResponse]):
    """Replaces the SDK's challenge policy: sends the cached token for the request's scope
    up front, and on a 401 challenge renews it once and resends."""

    def __init__(self, tokens: AcrTokenCache) -> None:
        super().__init__()
        self._tokens = tokens
        self._origin = urlsplit(tokens.endpoint).netloc.lower()

    def send(
        self, request: PipelineRequest[HttpRequest]
    ) -> PipelineResponse[HttpRequest, HttpResponse]:
        http_request = request.http_request
        url = urlsplit(http_request.url)
        ours = url.scheme == "https" and url.netloc.lower() == self._origin
        if url.scheme != "https":
            # Every request starts at the https endpoint: plain http here is a redirect's
            # doing, refused as the OCI backend refuses it.
            raise RegistryError(
                f"{self._tokens.service}: {http_request.method} {url.path}: redirect to "
                f"{url.scheme}://{url.netloc} refused (only https)",
                registry=self._tokens.service,
            )
        scope = acr_scope(http_request.method, url.path) if ours else ""
        if scope:
            http_request.headers["Authorization"] = "Bearer " + self._tokens.access_token(scope)
        response = self.next.send(request)
        if not ours or response.http_response.status_code != 401:
            return response
        challenge = parse_challenge(response.http_response.headers.get("WWW-Authenticate", ""))
        if challenge is None or challenge.scheme != "bearer" or not (challenge.scope or scope):
            return response
        body = http_request.body
        if body is not None and hasattr(body, "seek"):
            try:
                body.seek(0, SEEK_SET)
            except (OSError, ValueError):
                return response
        token = self._tokens.access_token(challenge.scope or scope, renew=True)
        http_request.headers["Authorization"] = "Bearer " + token
        return self.next.send(request)

    def __enter__(self) -> AcrTokenPolicy:
        return self

    def __exit__(self, *_: object) -> None:
        pass


class _FailFastRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retries for connection errors and bare 5xx only.

    Anything with ``Retry-After`` (429 above all) is handed back at once: the caller
    schedules the retry, instead of a worker thread sleeping up to ten times in here.
    """

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        http_response = response.http_response
        if http_response.status_code < 500 or _retry_after(http_response) is not None:
            return False
        return bool(super().is_retry(settings, response))


class _CachedTokenContainerRegistryClient(ContainerRegistryClient):
    """The SDK client with ``AcrTokenPolicy`` in place of its challenge policy."""

    def __init__(
        self, endpoint: str, policy: AcrTokenPolicy, *, audience: str, **kwargs: Any
    ) -> None:
        # The base class builds the SDK's challenge policy and pipeline; both are replaced
        # before any request is sent (building them opens no connection).
        super().__init__(endpoint, None, audience=audience)
        self._auth_policy = policy  # type: ignore[assignment]
        self.generated = GeneratedContainerRegistry(
            credential=AnonymousAccessCredential(),
            url=self._endpoint,
            sdk_moniker=USER_AGENT,
            authentication_policy=policy,
            **kwargs,
        )
        self._client = self.generated


# -- the backend --------------------------------------------------------------------------


class AcrRegistryClient:
    """``RegistryClient`` for one Azure Container Registry (``<name>.azurecr.io``).

    ``identity`` is the policy's plain identity dict (or an ``AcrIdentity``); ``secret`` the
    service principal's client secret. ``credential`` overrides both (tests, or a caller
    sharing one credential). ``connection_verify`` is a CA bundle path for the registry and
    Entra ID. Thread-safe. ``token_stats`` counts token round trips.
    """

    def __init__(
        self,
        host: str,
        identity: Mapping[str, Any] | AcrIdentity | None = None,
        *,
        secret: str = "",
        credential: TokenCredential | None = None,
        connection_verify: bool | str = True,
        audience: str = DEFAULT_AUDIENCE,
        retry_total: int = 2,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        page_size: int = 100,
        max_pages: int = 100,
        on_request: RequestHook | None = None,
        budget: RequestBudget | None = None,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        self.host = host
        self.limits = limits
        self.identity = (
            identity if isinstance(identity, AcrIdentity) else AcrIdentity.from_spec(identity)
        )
        if credential is None and self.identity.type != "anonymous":
            credential = build_credential(
                self.identity, secret, connection_verify=connection_verify
            )
        self.endpoint = f"https://{host}"
        self._page_size = page_size
        self._max_pages = max_pages
        self._anonymous = credential is None
        self._transport = RequestsTransport(
            connection_verify=connection_verify,
            connection_timeout=connect_timeout,
            read_timeout=timeout,
        )
        self._credential = credential
        retry = {"retry_total": retry_total, "retry_backoff_factor": 0.5, "retry_backoff_max": 4}
        token_pipeline: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            base_url=self.endpoint,
            policies=[UserAgentPolicy(sdk_moniker=USER_AGENT), _FailFastRetryPolicy(**retry)],
            transport=_SharedTransport(self._transport, host, on_request, budget),
        )
        self.tokens = AcrTokenCache(
            self.endpoint,
            host,
            credential,
            identity=self.identity.description,
            pipeline=token_pipeline,
            aad_scope=audience.rstrip("/") + "/.default",
            refresh_margin=refresh_margin,
            limits=limits,
        )
        self._sdk = _CachedTokenContainerRegistryClient(
            self.endpoint,
            AcrTokenPolicy(self.tokens),
            audience=audience,
            retry_policy=_FailFastRetryPolicy(**retry),
            transport=_SharedTransport(self._transport, host, on_request, budget),
        )

    @property
    def token_stats(self) -> TokenStats:
        return self.tokens.stats

    # -- RegistryClient ------------------------------------------------------------------

    def resolve_digest(self, ref: ImageRef) -> str:
        """``HEAD`` the manifest: one request with a cached token (GET if no digest header)."""
        response = self._v2("HEAD", f"/v2/{ref.repository}/manifests/{ref.reference}", ref)
        digest = response.headers.get("Docker-Content-Digest", "")
        if digest:
            return digest
        _, _, digest = self.get_manifest(ref)
        return digest

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        """Raw bytes, media type and digest, verified against the digest asked for or the
        one the registry reports."""
        response = self._v2(
            "GET", f"/v2/{ref.repository}/manifests/{ref.reference}", ref, "manifest_bytes"
        )
        data = response.content
        digest = ref.digest or response.headers.get("Docker-Content-Digest", "")
        if not digest:
            raise RegistryError(
                f"{self.host}: no Docker-Content-Digest for {ref}", registry=self.host
            )
        verify_digest(data, digest, registry=self.host)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in INDEX_TYPES | IMAGE_MANIFEST_TYPES:
            media_type = str(self._json(data, f"manifest {ref}").get("mediaType") or media_type)
        return data, media_type, digest

    def get_blob(self, ref: ImageRef, digest: str) -> bytes:
        """One streamed GET within the ``blob_bytes`` limit, digest-verified."""
        return self._get_blob(ref, digest, "blob_bytes")

    def _get_blob(self, ref: ImageRef, digest: str, limit: str) -> bytes:
        data = self._v2("GET", f"/v2/{ref.repository}/blobs/{digest}", ref, limit).content
        verify_digest(data, digest, registry=self.host)
        return data

    def get_image(self, ref: ImageRef) -> ResolvedImage:
        """The manifest or index at ``ref``, each platform's manifest and config labels.

        Attestations (platform ``unknown/unknown``) and non-image entries are left out.
        """
        return resolve_image(
            ref,
            get_manifest=self.get_manifest,
            get_config=lambda r, digest: self._get_blob(r, digest, "config_bytes"),
            host=self.host,
            max_children=self.limits.index_children,
        )

    def list_tags(self, ref: ImageRef) -> list[str]:
        """Every tag; newest first (ACR's last-update order) unless the identity is
        anonymous, which may only pull and so gets the ``/v2`` list in name order."""
        if self._anonymous:
            return self._v2_tags(ref)
        return [info.name for info in self.list_tag_infos(ref)]

    def list_tag_infos(self, ref: ImageRef, *, newest_first: bool = True) -> list[TagInfo]:
        """Every tag with digest and last update time, ordered by that time.

        The ``/acr/v1`` tag list read raw, page by page (``Link: rel="next"``), each page
        streamed within the ``document_bytes`` limit: the SDK's pager reads pages whole.
        More than ``max_pages`` pages raises RegistryError.
        """
        order = "timedesc" if newest_first else "timeasc"
        path = f"/acr/v1/{quote(ref.repository, safe='/')}/_tags?orderby={order}"
        path += f"&n={self._page_size}"
        infos: list[TagInfo] = []
        for _ in range(self._max_pages):
            response = self._v2("GET", path, ref)
            body = self._json(response.content, f"tag list of {ref.name}")
            infos.extend(
                TagInfo(
                    name=str(tag.get("name") or ""),
                    digest=str(tag.get("digest") or ""),
                    last_updated=str(tag.get("lastUpdateTime") or ""),
                )
                for tag in body.get("tags") or []
                if isinstance(tag, dict)
            )
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            if not match:
                return infos
            path = match.group(1)
        raise RegistryError(
            f"{self.host}: {ref.name} has more than {self._max_pages} pages of tags",
            registry=self.host,
        )

    def tag_info(self, ref: ImageRef) -> TagInfo:
        """ACR's facts about ``ref``'s tag: digest, last update, signed, quarantine state.

        Two metadata requests (tag, then its manifest), read raw because the SDK's models
        drop ``signed`` and ``quarantineState``.
        """
        tag = ref.tag or "latest"
        if self._anonymous:
            # Anonymous tokens never carry metadata_read: refuse without a doomed request.
            raise RegistryAuthError(
                f"{self.host}: anonymous pull cannot read tag metadata of {ref.name}:{tag}",
                registry=self.host,
                identity=self.identity.description,
            )
        repository = quote(ref.repository, safe="/")
        tag_doc = self._json(
            self._v2("GET", f"/acr/v1/{repository}/_tags/{quote(tag)}", ref).content,
            f"tag properties of {ref.name}:{tag}",
        )
        attributes = tag_doc.get("tag") or {}
        digest = str(attributes.get("digest") or "")
        manifest_doc = self._json(
            self._v2("GET", f"/acr/v1/{repository}/_manifests/{digest}", ref).content,
            f"manifest properties of {ref.name}@{digest}",
        )
        manifest = manifest_doc.get("manifest") or {}
        changeable = manifest.get("changeableAttributes") or {}
        signed = attributes.get("signed")
        return TagInfo(
            name=str(attributes.get("name") or tag),
            digest=digest,
            last_updated=str(attributes.get("lastUpdateTime") or ""),
            signed=bool(signed) if signed is not None else None,
            quarantine_state=str(changeable.get("quarantineState") or ""),
        )

    def close(self) -> None:
        self._sdk.close()
        self._transport.close()
        closer = getattr(self._credential, "close", None)
        if callable(closer):
            closer()

    def __enter__(self) -> AcrRegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _v2(self, method: str, path: str, ref: ImageRef, limit: str = "document_bytes") -> _Answer:
        """One raw request through the SDK's pipeline (cached token, retries), its body
        streamed within the ``limit`` field of ``ReadLimits`` and ``body_seconds``."""
        headers = {"Accept-Encoding": "identity"}
        if "/v2/" in path and "/manifests/" in path:
            headers["Accept"] = MANIFEST_ACCEPT
        what = (
            f"{method} {ref.name}@{ref.reference}" if "/manifests/" in path else f"{method} {path}"
        )
        return _send_bounded(
            self._sdk.generated,
            HttpRequest(method, path, headers=headers),
            self.host,
            self.identity.description,
            what,
            (getattr(self.limits, limit), SETTINGS[limit]),
            self.limits.body_seconds,
        )

    def _v2_tags(self, ref: ImageRef) -> list[str]:
        tags: list[str] = []
        path = f"/v2/{ref.repository}/tags/list?n={self._page_size}"
        for _ in range(self._max_pages):
            response = self._v2("GET", path, ref)
            body = self._json(response.content, f"tag list of {ref.name}")
            tags.extend(str(tag) for tag in body.get("tags") or [])
            match = _LINK_NEXT.search(response.headers.get("Link", ""))
            if not match:
                return tags
            path = match.group(1)
        raise RegistryError(
            f"{self.host}: {ref.name} has more than {self._max_pages} pages of tags",
            registry=self.host,
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        with _translated(self.host, self.identity.description, what):
            yield

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        return parse_json(data, what, self.host)


def client_from_spec(
    host: str,
    spec: Mapping[str, Any] | None,
    *,
    client_secret: str | None = None,
    verify: bool | str | Path = True,
    on_request: RequestHook | None = None,
    **options: Any,
) -> AcrRegistryClient:
    """The backend for a policy's ``base.azure`` dict (``identity``, ``clientId``,
    ``tenantId``, optional ``tokenFile``/``authorityHost``) and the service principal's
    secret value. ``verify`` is a CA bundle for the registry and Entra ID, or a bool."""
    return AcrRegistryClient(
        host,
        AcrIdentity.from_spec(spec),
        secret=client_secret or "",
        connection_verify=str(verify) if isinstance(verify, Path) else verify,
        on_request=on_request,
        **options,
    )


class _SharedTransport(HttpTransport[Any, Any]):
    """One connection pool for the SDK and token pipelines (closed by its owner only),
    reporting every HTTP exchange to ``on_request``."""

    def __init__(
        self,
        inner: RequestsTransport,
        host: str,
        on_request: RequestHook | None,
        budget: RequestBudget | None = None,
    ) -> None:
        self._inner = inner
        self._host = host
        self._on_request = on_request
        self._budget = budget

    def send(self, request: Any, **kwargs: Any) -> Any:
        if self._budget is not None:
            self._budget.spend(self._host)  # refused before anything is sent
        status = 0
        try:
            response = self._inner.send(request, **kwargs)
            status = int(response.status_code)
            return response
        finally:
            if self._on_request is not None:
                self._on_request(self._host, request.method, urlsplit(request.url).path, status)

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        pass

    def __enter__(self) -> _SharedTransport:
        return self

    def __exit__(self, *_: object) -> None:
        pass


# -- bounded reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """A response whose body was read within the limits."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class _Sender(Protocol):
    def send_request(self, request: HttpRequest, *, stream: bool = ...) -> HttpResponse: ...


def _chunks(response: HttpResponse) -> Iterator[bytes]:
    """The body as it arrives. azure-core's ``iter_raw`` waits for whole 4 KiB blocks, so a
    body trickling in would stall inside one block past any deadline; urllib3's ``read1``
    returns what each receive gave."""
    raw = getattr(getattr(response, "internal_response", None), "raw", None)
    if raw is None or not hasattr(raw, "read1"):
        yield from response.iter_raw()
        return
    while chunk := raw.read1(64 * 1024, decode_content=False):
        yield chunk


def _send_bounded(
    pipeline: _Sender,
    request: HttpRequest,
    registry: str,
    identity: str,
    what: str,
    cap: tuple[int, str],
    seconds: float,
) -> _Answer:
    """Send ``request`` streamed, read its body within ``cap`` and ``seconds``, and map a
    failure status to ``imagedrift.errors``."""
    with _translated(registry, identity, what):
        response = pipeline.send_request(request, stream=True)
        try:
            data = b""
            # A HEAD answer has no body; its Content-Length is the GET's, not a limit.
            if request.method != "HEAD":
                data = read_body(
                    _chunks(response),
                    headers=response.headers,
                    success=200 <= response.status_code < 300,
                    cap=cap,
                    seconds=seconds,
                    clock=time.monotonic,
                )
        except ReadRefused as exc:
            raise RegistryError(f"{registry}: {what}: {exc}", registry=registry) from None
        except Urllib3Error as exc:
            raise RegistryUnavailable(
                f"{registry}: reading {what} failed: {exc}", registry=registry
            ) from None
        finally:
            response.close()
    answer = _Answer(response.status_code, response.headers, data)
    if not 200 <= answer.status_code < 300:
        raise _status_error(answer.status_code, answer, registry, identity, what)
    return answer


# -- error mapping --------------------------------------------------------------------------


def _retry_after(response: Any) -> float | None:
    headers = response.headers
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass
    return parse_retry_after(headers.get("Retry-After"))


def _detail(response: Any) -> str:
    try:
        body = json.loads(response.content) if isinstance(response, _Answer) else response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and isinstance(errors, list) and isinstance(errors[0], dict):
            return f"{errors[0].get('code', '')}: {errors[0].get('message', '')}".strip(": ")
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass
    return str(getattr(response, "reason", "") or "")


def _first_line(text: object) -> str:
    return str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""


def _status_error(
    status: int, response: Any, registry: str, identity: str, what: str
) -> RegistryError:
    detail = _detail(response)
    suffix = f": {detail}" if detail else ""
    if status == 429:
        retry_after = _retry_after(response)
        return RegistryThrottled(
            f"{registry}: throttled (429) {what}{suffix}",
            registry=registry,
            retry_after=retry_after if retry_after is not None else 0.0,
        )
    if status in (401, 403):
        return RegistryAuthError(
            f"{registry}: {identity} was refused ({status}) {what}{suffix}",
            registry=registry,
            identity=identity,
        )
    if status == 404:
        return NotFound(f"{registry}: not found: {what}{suffix}", registry=registry)
    if status >= 500:
        return RegistryUnavailable(f"{registry}: {status} {what}{suffix}", registry=registry)
    return RegistryError(f"{registry}: unexpected {status} {what}{suffix}", registry=registry)


@contextmanager
def _translated(registry: str, identity: str, what: str) -> Iterator[None]:
    """Turn azure-core / azure-identity failures into ``imagedrift.errors``."""
    try:
        yield
    except RegistryError:
        raise
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise RegistryUnavailable(
            f"{registry}: cannot reach the registry {what}: {_first_line(exc.message)}",
            registry=registry,
        ) from None
    except HttpResponseError as exc:
        if exc.response is None or exc.status_code is None:
            # azure-identity: no token could be had at all.
            if isinstance(exc, ClientAuthenticationError):
                raise RegistryAuthError(
                    f"{registry}: {identity} could not authenticate {what}: "
                    f"{_first_line(exc.message)}",
                    registry=registry,
                    identity=identity,
                ) from None
            raise RegistryError(
                f"{registry}: {what}: {_first_line(exc.message)}", registry=registry
            ) from None
        if isinstance(exc, ResourceNotFoundError) and exc.status_code != 404:
            raise NotFound(f"{registry}: not found: {what}", registry=registry) from None
        raise _status_error(int(exc.status_code), exc.response, registry, identity, what) from None
    except AzureError as exc:
        raise RegistryError(
            f"{registry}: {what}: {_first_line(exc.message)}", registry=registry
        ) from None


__all__ = [
    "DEFAULT_AUDIENCE",
    "IDENTITY_TYPES",
    "AcrIdentity",
    "AcrRegistryClient",
    "AcrTokenCache",
    "AcrTokenPolicy",
    "TokenStats",
    "acr_scope",
    "build_credential",
    "client_from_spec",
    "token_expiry",
]
