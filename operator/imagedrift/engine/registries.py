"""Registry clients per (host, credentials), built from the policy's base spec.

Clients are kept and reused: they hold the token caches that make a steady-state lookup one
request. The base's provider and credentials apply to the base's host; app images on other
hosts use the same docker-config Secret's entry for that host, or go anonymous. Plain HTTP
is used only for a host the policy names (``BaseSpec.plain_http``), never for every host a
policy happens to touch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from imagedrift.core.spec import BaseSpec
from imagedrift.registry.base import ANONYMOUS, Credentials, RegistryClient
from imagedrift.registry.budget import RequestBudget
from imagedrift.registry.limits import DEFAULT_LIMITS, ReadLimits
from imagedrift.registry.oci import OciRegistryClient, RequestHook, credentials_from_docker_config

SECRET_TTL = 60.0  # seconds a Secret's content is reused before it is read again


class SecretReader(Protocol):
    def read_secret(self, name: str) -> dict[str, bytes] | None:
        """The data of Secret ``name`` in the operator's namespace, or None if absent."""
        ...


class RegistryPool:
    def __init__(
        self,
        secrets: SecretReader,
        *,
        namespace: str,
        verify: bool | str | Path = True,
        on_request: RequestHook | None = None,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        self._budget = budget
        self._limits = limits  # shared: one bucket per host across all clients of that host
        self._secrets = secrets
        self._namespace = namespace
        self._verify = verify
        self._on_request = on_request
        self._clock = clock
        self._clients: dict[tuple[str, ...], RegistryClient] = {}
        self._secret_cache: dict[str, tuple[float, dict[str, bytes] | None]] = {}
        self._lock = threading.Lock()

    def _secret(self, name: str) -> dict[str, bytes] | None:
        now = self._clock()
        cached = self._secret_cache.get(name)
        if cached and now - cached[0] < SECRET_TTL:
            return cached[1]
        data = self._secrets.read_secret(name)
        self._secret_cache[name] = (now, data)
        return data

    def _credentials(self, host: str, base: BaseSpec) -> Credentials:
        if not base.secret_name:
            return ANONYMOUS
        identity = f"secret {self._namespace}/{base.secret_name}"
        data = self._secret(base.secret_name)
        if data is None:
            from imagedrift.errors import RegistryAuthError

            raise RegistryAuthError(f"{identity} does not exist", registry=host, identity=identity)
        config = data.get(".dockerconfigjson") or data.get(".dockercfg") or b"{}"
        return credentials_from_docker_config(config, host, identity=identity) or ANONYMOUS

    def client_for(self, host: str, base: BaseSpec) -> RegistryClient:
        azure = base.provider == "azure" and host == base.image.registry
        if azure:
            key: tuple[str, ...] = (
                "azure",
                host,
                *sorted(f"{k}={v}" for k, v in base.azure.items()),
            )
        else:
            credentials = self._credentials(host, base)
            plain = base.plain_http(host)
            key = ("oci", host, credentials.username, credentials.password, str(plain))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = (
                    self._make_azure(host, base)
                    if azure
                    else OciRegistryClient(
                        host,
                        credentials,
                        scheme="http" if plain else "https",
                        verify=self._verify,
                        on_request=self._on_request,
                        budget=self._budget,
                        limits=self._limits,
                    )
                )
                self._clients[key] = client
            return client

    def _make_azure(self, host: str, base: BaseSpec) -> RegistryClient:
        from imagedrift.registry.acr import client_from_spec

        secret_name = base.azure.get("secretName", "")
        secret = self._secret(secret_name) if secret_name else None
        client_secret = (secret or {}).get("clientSecret", b"").decode() or None
        return client_from_spec(
            host,
            dict(base.azure),
            client_secret=client_secret,
            verify=self._verify,
            on_request=self._on_request,
            budget=self._budget,
            limits=self._limits,
        )

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
