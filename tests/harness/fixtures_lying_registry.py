"""pytest fixtures for the lying registry (loaded for every test by tests/conftest.py).

- ``lying_registry``: a ``LyingRegistry`` on 127.0.0.1, fresh per test.
- ``lying_storage``: a second one on 127.0.0.2, another host as a blob store would be; it
  records every ``Authorization`` header it is sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.lying_registry import LyingRegistry


@pytest.fixture
def lying_registry() -> Iterator[LyingRegistry]:
    server = LyingRegistry("127.0.0.1")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def lying_storage() -> Iterator[LyingRegistry]:
    server = LyingRegistry("127.0.0.2")
    try:
        yield server
    finally:
        server.close()
