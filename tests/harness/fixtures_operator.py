"""Fixtures that run the operator against the session's control plane."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess


@pytest.fixture(scope="session")
def crds_installed(controlplane: ControlPlane) -> None:
    root = Path(__file__).resolve().parents[2]
    controlplane.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    controlplane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/imagepolicies.imagedrift.io"
    )
    controlplane.kubectl("create", "namespace", "imagedrift-system", check=False)


@pytest.fixture
def operator_factory(
    controlplane: ControlPlane, crds_installed: None, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(env: dict[str, str] | None = None, kubeconfig: Path | None = None) -> OperatorProcess:
        proc = OperatorProcess(
            kubeconfig or controlplane.kubeconfig, tmp_path / "operator", env=env
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
