"""Registry clients per (host, credentials), built from the policy's base spec.

Clients are kept and reused: they hold the token caches that make a steady-state lookup one
request. The base's provider and credentials apply to the base's host; app images on other
hosts use the same docker-config Secret's entry for that host, or go anonymous. Plain HTTP
is used only for a host the policy names (``BaseSpec.plain_http``), never for every host a
policy happens to touch.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from imagedrift.core.mirrors import Mirror
from imagedrift.core.spec import BaseSpec
from imagedrift.registry.base import ANONYMOUS, Credentials, RegistryClient
from imagedrift.registry.budget import RequestBudget
from imagedrift.registry.limits import DEFAULT_LIMITS, ReadLimits
from imagedrift.registry.oci import OciRegistryClient, RequestHook, credentials_from_docker_config

SECRET_TTL = 60.0  # seconds a Secret's content is reused before it is read again (rotation)


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
        mirrors: Mapping[str, Mirror] | None = None,
        secret_ttl: float = SECRET_TTL,
        limits: ReadLimits = DEFAULT_LIMITS,
    ) -> None:
        self._budget = budget  # shared: one bucket per host across all clients of that host
        self._limits = limits
        self._mirrors = dict(mirrors or {})  # registry host -> the host actually contacted
        self._secrets = secrets
        self._namespace = namespace
        self._verify = verify
        self._on_request = on_request
        self._clock = clock
        self._clients: dict[tuple[str, ...], RegistryClient] = {}
        # (kind, host, where its credential comes from) -> the key of the client built last
        self._latest: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._secret_ttl = secret_ttl
        self._secret_cache: dict[str, tuple[float, dict[str, bytes] | None]] = {}
        self._lock = threading.Lock()

    def _secret(self, name: str) -> dict[str, bytes] | None:
        now = self._clock()
        cached = self._secret_cache.get(name)
        if cached and now - cached[0] < self._secret_ttl:
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
        """The client for ``host`` as ``base`` says to reach it. A credential read from a
        Secret is part of the client's identity: once the Secret changes (read again after
        ``secret_ttl``), the next call builds a client with the new credential and closes
        the one built from the old."""
        azure = base.provider == "azure" and host == base.image.registry
        if azure:
            client_secret = self._client_secret(base)
            key: tuple[str, ...] = (
                "azure",
                host,
                *sorted(f"{k}={v}" for k, v in base.azure.items()),
                hashlib.sha256((client_secret or "").encode()).hexdigest(),
            )
            lineage: tuple[str, ...] = key[:-1]
        else:
            mirror = self._mirrors.get(host)
            contacted = mirror.host if mirror else host
            plain = mirror.scheme == "http" if mirror else base.plain_http(host)
            scheme = "http" if plain else "https"
            credentials = self._credentials(contacted, base)
            key = ("oci", contacted, credentials.username, credentials.password, scheme)
            lineage = ("oci", contacted, base.secret_name, scheme)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                replaced = self._latest.get(lineage)
                if replaced is not None and replaced != key:
                    old = self._clients.pop(replaced, None)
                    if old is not None:
                        old.close()  # a request still in flight fails and is retried
                self._latest[lineage] = key
                client = (
                    self._make_azure(host, base, client_secret)
                    if azure
                    else OciRegistryClient(
                        contacted,
                        credentials,
                        scheme=scheme,
                        verify=self._verify,
                        on_request=self._on_request,
                        budget=self._budget,
                        limits=self._limits,
                    )
                )
                self._clients[key] = client
            return client

    def _client_secret(self, base: BaseSpec) -> str | None:
        secret_name = base.azure.get("secretName", "")
        secret = self._secret(secret_name) if secret_name else None
        return (secret or {}).get("clientSecret", b"").decode() or None

    def _make_azure(self, host: str, base: BaseSpec, client_secret: str | None) -> RegistryClient:
        from imagedrift.registry.acr import client_from_spec

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
