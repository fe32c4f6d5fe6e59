"""pytest fixtures for the real OCI registry (loaded for every test by tests/conftest.py).

- ``registry``: one distribution server for the whole session (started on first use).
- ``registry_factory``: private registries for tests that must not disturb the shared one.
- ``registry_repo``: a repository name no other test uses.
- ``registry_client``: an ``OciRegistryClient`` for ``registry``, closed after the test.
- ``registry_proxy``: a ``RegistryProxy`` in front of ``registry``, for auth and faults.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagedrift.registry.oci import OciRegistryClient
from tests.harness.registry import Registry
from tests.harness.registry_proxy import RegistryProxy

_session_registry: list[Registry] = []


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The session's registry on ``127.0.0.1:<port>``; stopped after the last test."""
    server = Registry(tmp_path_factory.mktemp("registry"))
    server.start()
    _session_registry.append(server)
    try:
        yield server
    finally:
        _session_registry.remove(server)
        server.close()


@pytest.fixture(autouse=True)
def _registry_back_up() -> Iterator[None]:
    """A test that stopped the shared registry and failed before restarting it must not
    take every later test down with it."""
    yield
    for server in _session_registry:
        if not server.running:
            server.start()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[[], Registry]]:
    """Start private registries (e.g. to stop one); all are stopped after the test."""
    started: list[Registry] = []

    def start() -> Registry:
        server = Registry(tmp_path / f"registry-{len(started)}")
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def registry_repo(request: pytest.FixtureRequest) -> str:
    """``t/<test-name>-<random>``: valid as a repository name and unique per test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t/{slug or 'test'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry_client(registry: Registry) -> Iterator[OciRegistryClient]:
    client = registry.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def registry_proxy(registry: Registry) -> Iterator[RegistryProxy]:
    """A fresh proxy in front of the session registry; open until a test configures it."""
    proxy = RegistryProxy(registry.url)
    try:
        yield proxy
    finally:
        proxy.close()
