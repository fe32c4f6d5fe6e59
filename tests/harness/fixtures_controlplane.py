"""pytest fixtures for the Kubernetes control plane (loaded by ``tests/conftest.py``).

- ``controlplane`` (session): one started ``ControlPlane`` for the whole session; see
  ``tests/harness/controlplane.py`` for ``IMAGEDRIFT_CONTROLPLANE_BIN`` and
  ``IMAGEDRIFT_KUBECONFIG``.
- ``kube`` (session): ``Kube`` with CoreV1Api, AppsV1Api, CustomObjectsApi, ... bound to
  the admin ApiClient.
- ``namespace`` (function): a fresh, uniquely named namespace whose ``default``
  ServiceAccount exists; deleted afterwards without waiting for finalization.

The terminal summary reports the control plane's start-up time and memory.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.procs import wait_for

NAMESPACE_LABEL = "imagedrift.test/namespace"

_stats: dict[str, str] = {}


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    """The session's control plane (started once, stopped at the end of the session)."""
    with ControlPlane.from_env() as cp:
        _stats["ready"] = _describe_start(cp)
        yield cp
        rss = cp.rss_bytes()
        if rss:
            _stats["end"] = f"RSS at session end {_mib(sum(rss.values()))} ({_per_process(rss)})"


@pytest.fixture(scope="session")
def kube(controlplane: ControlPlane) -> Iterator[Kube]:
    """Kubernetes client APIs bound to the admin ApiClient."""
    with controlplane.api_client() as api_client:
        yield Kube.from_api_client(api_client)


@pytest.fixture
def namespace(
    controlplane: ControlPlane, kube: Kube, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A new namespace for this test; its name is derived from the test's name."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    controlplane.check_alive()
    name = _namespace_name(request.node.name)
    kube.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={NAMESPACE_LABEL: "true"})
        )
    )
    try:
        # Pods are refused until the ServiceAccount controller has made `default`.
        wait_for(
            lambda: kube.core.read_namespaced_service_account("default", name),
            what=f"ServiceAccount {name}/default",
            timeout=30,
        )
        yield name
    finally:
        try:
            kube.core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    slug = slug.removeprefix("test-")[:48].rstrip("-") or "test"
    return f"t-{slug}-{secrets.token_hex(3)}"


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def _per_process(rss: dict[str, int]) -> str:
    return ", ".join(f"{name} {_mib(size)}" for name, size in rss.items())


def _describe_start(cp: ControlPlane) -> str:
    if cp.external:
        return f"existing cluster at {cp.server} reachable in {cp.startup_seconds or 0:.1f}s"
    steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cp.step_seconds.items())
    rss = cp.rss_bytes()
    return (
        f"started and node Ready in {cp.startup_seconds or 0:.1f}s ({steps}); "
        f"RSS {_mib(sum(rss.values()))} ({_per_process(rss)})"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _stats:
        terminalreporter.section("control plane")
        for line in _stats.values():
            terminalreporter.write_line(line)
