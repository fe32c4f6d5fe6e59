"""pytest fixtures for GitOps tests (loaded by ``tests/conftest.py``).

- ``git_server`` (session): a ``GitServer`` (git http-backend, smart HTTP, basic auth) on
  127.0.0.1, started on first use; see ``tests/harness/git_server.py``.
- ``git_repo`` (function): a repository name no other test uses.
- ``flux`` (module): Flux's source-controller and kustomize-controller on the session's
  control plane, started for the first test of a module that asks and stopped after its
  last, so no other module shares the cluster with them; see ``tests/harness/flux.py``.

The terminal summary reports Flux's start-up time and memory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.flux import Flux
from tests.harness.git_server import GitServer
from tests.harness.procs import proc_status

_stats: dict[str, str] = {}


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """The session's git server; its repositories live in a temporary directory."""
    with GitServer(tmp_path_factory.mktemp("git")) as server:
        yield server


@pytest.fixture
def git_repo(request: pytest.FixtureRequest) -> str:
    """``<test-name>-<random>``: a repository name unique to this test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'repo'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def flux(controlplane: ControlPlane) -> Iterator[Flux]:
    """Flux's controllers, running for this module's tests."""
    controllers = Flux(controlplane).start()
    rss = {name: _rss_mib(proc.pid) for name, proc in controllers.processes.items()}
    _stats[f"start {len(_stats)}"] = (
        f"ready in {controllers.startup_seconds or 0:.1f}s; RSS "
        + ", ".join(f"{name} {size:.0f} MiB" for name, size in rss.items())
    )
    try:
        yield controllers
    finally:
        trouble = controllers.stop()
        assert not trouble, f"{'; '.join(trouble)} (logs in {controllers.workdir})"


def _rss_mib(pid: int) -> float:
    try:
        return proc_status(pid, "VmRSS") / 1024
    except Exception:
        return 0.0


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _stats:
        terminalreporter.section("flux")
        for line in _stats.values():
            terminalreporter.write_line(line)
