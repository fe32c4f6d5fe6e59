"""pytest fixtures for a real node (loaded by ``tests/conftest.py``).

- ``real_node`` (session): a ``RealNode`` (kubelet + containerd + runc, node ``localhost``)
  joined to the session's control plane, started only when a test asks for it and torn
  down at the end of the session, asserting that it left nothing behind. See
  ``tests/harness/node.py``.

The terminal summary reports the node's start-up time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.node import RealNode
from tests.harness.registry import Registry

_stats: dict[str, str] = {}


@pytest.fixture(scope="session")
def real_node(controlplane: ControlPlane, registry: Registry) -> Iterator[RealNode]:
    """The session's real node; pods reach it with ``nodeSelector: {kubernetes.io/hostname:
    localhost}``."""
    if controlplane.external:
        pytest.skip("a real node joins only a control plane the harness started")
    node = RealNode(controlplane, registry).start()
    _stats["ready"] = f"kubelet + containerd Ready in {node.startup_seconds or 0:.1f}s"
    try:
        yield node
    finally:
        node.stop()
        _stats["stopped"] = "stopped; no mount, process, link, netns, cgroup or host path left"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _stats:
        terminalreporter.section("real node")
        for line in _stats.values():
            terminalreporter.write_line(line)
