"""pytest fixtures for the operator's own image (loaded by ``tests/conftest.py``).

- ``operator_image_ref`` (session): the image built from the repository's Dockerfile with
  buildah on a Python base made from Debian packages (cached by its inputs, see
  ``tests/harness/operator_image.py``), pushed to the session's loopback registry; the
  reference by digest. Afterwards no buildah container or mount may be left.

The terminal summary reports the build (cold, or found in the cache) and the push.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.harness import operator_image
from tests.harness.registry import Registry

_stats: dict[str, str] = {}


@pytest.fixture(scope="session")
def operator_image_ref(registry: Registry) -> Iterator[str]:
    """``127.0.0.1:PORT/imagedrift/operator@sha256:...`` in the session's registry."""
    image = operator_image.build_operator_image()
    if image.built:
        base = (
            f"base built in {image.base_seconds:.0f}s"
            if image.base_built
            else "base from the cache"
        )
        _stats["build"] = (
            f"built from the Dockerfile in {image.build_seconds:.0f}s ({base}): {image.name}"
        )
    else:
        _stats["build"] = f"found in the cache in {image.build_seconds:.1f}s: {image.name}"
    started = time.monotonic()
    ref = operator_image.push_operator_image(image, registry.host)
    _stats["push"] = f"pushed to the loopback registry in {time.monotonic() - started:.1f}s"
    yield ref
    left = operator_image.leftovers()
    assert not left, f"the image build left behind: {left}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _stats:
        terminalreporter.section("operator image")
        for line in _stats.values():
            terminalreporter.write_line(line)
