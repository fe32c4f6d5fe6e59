"""A local stand-in for Entra ID (Azure AD) that the real ``azure-identity`` code talks to.

It speaks three flows over HTTPS, each as azure-identity sends it:

- client secret: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` then
  ``POST /{tenant}/oauth2/v2.0/token`` with ``client_secret`` (ClientSecretCredential, MSAL);
- federated client assertion: the same token endpoint with ``client_assertion`` set to the
  contents of the projected service account token file (WorkloadIdentityCredential);
- managed identity, IMDS form: ``GET /metadata/identity/oauth2/token?resource=..`` with
  ``Metadata: true`` (ManagedIdentityCredential with ``AZURE_POD_IDENTITY_AUTHORITY_HOST``).

Every access token it issues is recorded with the flow and client id that obtained it, so
the fake ACR can validate tokens and tests can assert which identity was used.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.harness import leaks
from tests.harness.tlsca import QuietHandler, TestCA, TlsServer

ACR_AUDIENCE = "https://containerregistry.azure.net"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SYSTEM_ASSIGNED = "system-assigned"


@dataclass(frozen=True)
class IssuedToken:
    """One AAD access token the fake handed out."""

    token: str
    flow: str  # "client_secret" | "federated" | "managed_identity"
    client_id: str
    audience: str
    expires_at: float


class FakeEntra:
    """Entra ID token endpoints for registered test identities; thread-safe."""

    def __init__(
        self, ca: TestCA, *, tenant: str = "imagedrift-tenant", lifetime: int = 3600
    ) -> None:
        self.tenant = tenant
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._assertions: dict[str, str] = {}
        self._managed: set[str] = set()
        self._tokens: dict[str, IssuedToken] = {}
        self.issued: list[IssuedToken] = []
        self.requests: list[str] = []
        self._server = TlsServer(_make_handler(self), ca, name="fake-entra")

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The authority host, e.g. ``https://127.0.0.1:port``."""
        return self._server.url

    def start(self) -> FakeEntra:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # -- identities --------------------------------------------------------------------
    def add_client_secret(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._secrets[client_id] = secret

    def add_federated(self, client_id: str, assertion: str) -> None:
        """Accept ``assertion`` (a service account token's text) for ``client_id``."""
        with self._lock:
            self._assertions[client_id] = assertion

    def add_managed_identity(self, client_id: str = SYSTEM_ASSIGNED) -> None:
        """A managed identity on this "VM"; ``SYSTEM_ASSIGNED`` answers requests without one."""
        with self._lock:
            self._managed.add(client_id)

    # -- what happened -----------------------------------------------------------------
    def validate(self, token: str, audience: str = ACR_AUDIENCE) -> IssuedToken | None:
        """The record of ``token`` when it was issued here for ``audience`` and is unexpired."""
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued.audience.rstrip("/") != audience.rstrip("/"):
            return None
        if issued.expires_at <= time.time():
            return None
        return issued

    def flows(self) -> list[str]:
        with self._lock:
            return [t.flow for t in self.issued]

    def reset(self) -> None:
        with self._lock:
            self.issued.clear()
            self.requests.clear()

    # -- internals ---------------------------------------------------------------------
    def _issue(self, flow: str, client_id: str, audience: str) -> IssuedToken:
        token = IssuedToken(
            token="aad." + secrets.token_hex(24),
            flow=flow,
            client_id=client_id,
            audience=audience,
            expires_at=time.time() + self.lifetime,
        )
        leaks.remember(token.token, f"Entra ID access token ({flow})")
        with self._lock:
            self._tokens[token.token] = token
            self.issued.append(token)
        return token

    def _note(self, what: str) -> None:
        with self._lock:
            self.requests.append(what)

    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        scope = form.get("scope", "")
        audience = scope.split()[0].removesuffix("/.default") if scope else ""
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return 400, _aad_error(
                "unsupported_grant_type", "AADSTS70003", "grant type not supported"
            )
        if "client_assertion" in form:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return 400, _aad_error("invalid_request", "AADSTS50027", "bad assertion type")
            with self._lock:
                expected = self._assertions.get(client_id)
            if expected is None or expected != form["client_assertion"]:
                return 401, _aad_error(
                    "invalid_client", "AADSTS700213", f"no federated credential for {client_id}"
                )
            flow = "federated"
        elif "client_secret" in form:
            with self._lock:
                expected = self._secrets.get(client_id)
            if expected is None or expected != form["client_secret"]:
                return 401, _aad_error(
                    "invalid_client", "AADSTS7000215", "Invalid client secret provided."
                )
            flow = "client_secret"
        else:
            return 400, _aad_error("invalid_request", "AADSTS900144", "no client credential")
        if not audience:
            return 400, _aad_error("invalid_scope", "AADSTS70011", "scope is required")
        token = self._issue(flow, client_id, audience)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token.token,
        }

    def imds_endpoint(self, query: dict[str, str]) -> tuple[int, dict[str, object]]:
        resource = query.get("resource", "")
        client_id = query.get("client_id", "") or SYSTEM_ASSIGNED
        with self._lock:
            known = client_id in self._managed
        if not known:
            return 400, {
                "error": "invalid_request",
                "error_description": f"Identity not found: {client_id}",
            }
        if not resource:
            return 400, {"error": "invalid_request", "error_description": "resource required"}
        token = self._issue("managed_identity", client_id, resource)
        return 200, {
            "access_token": token.token,
            "client_id": client_id,
            "expires_in": str(self.lifetime),
            "expires_on": str(int(token.expires_at)),
            "ext_expires_in": str(self.lifetime),
            "not_before": str(int(time.time())),
            "resource": resource,
            "token_type": "Bearer",
        }

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        base = f"{self.url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "issuer": f"{base}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "WW",
        }


def _aad_error(error: str, code: str, description: str) -> dict[str, object]:
    return {
        "error": error,
        "error_description": f"{code}: {description}",
        "error_codes": [int(code.removeprefix("AADSTS"))],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": secrets.token_hex(8),
        "correlation_id": secrets.token_hex(8),
    }


def _make_handler(entra: FakeEntra) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            segments = [s for s in parts.path.split("/") if s]
            if parts.path == "/metadata/identity/oauth2/token":
                entra._note("imds")
                if self.headers.get("Metadata", "").lower() != "true":
                    self.send_json(
                        400,
                        {
                            "error": "invalid_request",
                            "error_description": "Metadata header missing",
                        },
                    )
                    return
                status, payload = entra.imds_endpoint(query)
                self.send_json(status, payload)
                return
            if segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                entra._note("openid-configuration")
                if segments[0] != entra.tenant:
                    self.send_json(
                        400, _aad_error("invalid_tenant", "AADSTS90002", "tenant not found")
                    )
                    return
                self.send_json(200, entra.openid_configuration(segments[0]))
                return
            self.send_json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            segments = [s for s in urlsplit(self.path).path.split("/") if s]
            form = self.read_form()
            if segments[1:] == ["oauth2", "v2.0", "token"]:
                entra._note("token")
                if segments[0] != entra.tenant:
                    self.send_json(
                        400, _aad_error("invalid_tenant", "AADSTS90002", "tenant not found")
                    )
                    return
                status, payload = entra.token_endpoint(form)
                self.send_json(status, payload)
                return
            self.send_json(404, {"error": "not_found"})

    return Handler
