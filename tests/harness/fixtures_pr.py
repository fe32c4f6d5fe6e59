"""pytest fixtures for the pull-request API servers (loaded by tests/conftest.py).

- ``pr_servers``: ``{"github", "gitlab", "azure"}`` -> a TLS server on 127.0.0.1 speaking
  that provider's pull-request API (``tests/harness/pr_servers.py``), its certificate from
  the session's test CA (``acr_tls``); started once per session, emptied around each test.
- ``pr_client``: ``make(provider, token=..., timeout=...)`` builds the operator's adapter
  (``imagedrift.git.pullrequests.for_repository``) for that server; closed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from imagedrift.git.pullrequests import PullRequests, for_repository
from tests.harness.pr_servers import PROVIDERS, PrServer
from tests.harness.tlsca import TestCA


@pytest.fixture(scope="session")
def _pr_session(acr_tls: TestCA) -> Iterator[dict[str, PrServer]]:
    servers: dict[str, PrServer] = {}
    try:
        for name, kind in PROVIDERS.items():
            servers[name] = kind(acr_tls).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def pr_servers(_pr_session: dict[str, PrServer]) -> Iterator[dict[str, PrServer]]:
    for server in _pr_session.values():
        server.reset()
    yield _pr_session
    for name, server in _pr_session.items():
        assert server.settle(), f"the {name} server is still answering a request"
        server.reset()


@pytest.fixture
def pr_client(
    pr_servers: dict[str, PrServer], acr_tls: TestCA
) -> Iterator[Callable[..., PullRequests]]:
    made: list[PullRequests] = []

    def make(provider: str, *, token: str | None = None, timeout: float = 5.0) -> PullRequests:
        server = pr_servers[provider]
        client = for_repository(
            server.repository_url,
            server.token if token is None else token,
            api_base=server.url,
            verify=acr_tls.ca_cert,
            timeout=timeout,
        )
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()
