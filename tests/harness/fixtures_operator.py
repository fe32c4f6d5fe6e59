"""Fixtures that run the operator against the session's control plane.

- ``crds_installed`` (session): the ImagePolicy CRD and the ``imagedrift-system`` namespace.
- ``deploy_rbac`` (session): what ``deploy/`` renders to, minus the workloads: every CRD,
  the namespaces (the operator's and the smoke-test sandbox), ServiceAccounts, roles and
  bindings, and the sandbox's bounds. Applied server-side, so applying it again changes
  nothing.
  It never creates the operator Deployment: a second operator must not run during tests.
- ``operator_factory``: starts ``kopf run`` processes (see ``tests/harness/operator.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
OPERATOR_NAMESPACE = "imagedrift-system"
OPERATOR_SERVICE_ACCOUNT = "imagedrift"
# The kinds of deploy/ that give the operator its identity and rights (no workloads).
RBAC_KINDS = frozenset(
    {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        # The smoke-test sandbox's bounds (deploy/base/smoke-sandbox.yaml).
        "LimitRange",
        "ResourceQuota",
    }
)


@pytest.fixture(scope="session")
def crds_installed(controlplane: ControlPlane) -> None:
    root = Path(__file__).resolve().parents[2]
    controlplane.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    # kubectl wait fails at once (instead of waiting) when the CRD has no conditions yet.
    wait_for(
        lambda: (
            controlplane.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/imagepolicies.imagedrift.io",
                check=False,
            ).returncode
            == 0
        ),
        what="the ImagePolicy CRD Established",
        timeout=90,
    )
    controlplane.kubectl("create", "namespace", "imagedrift-system", check=False)


def render_kustomization(controlplane: ControlPlane, path: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize path`` renders, in order."""
    output = controlplane.kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def apply_objects(controlplane: ControlPlane, objects: Sequence[dict[str, Any]]) -> None:
    """Server-side apply (idempotent), as ``kubectl apply --server-side`` would."""
    controlplane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(list(objects), sort_keys=False),
    )


@pytest.fixture(scope="session")
def deploy_rbac(controlplane: ControlPlane, crds_installed: None) -> list[dict[str, Any]]:
    """Apply deploy/'s CRDs, then its namespaces, ServiceAccounts, RBAC and the sandbox's
    bounds; returns the objects applied."""
    rendered = render_kustomization(controlplane, DEPLOY_DIR)
    crds = [doc for doc in rendered if doc["kind"] == "CustomResourceDefinition"]
    apply_objects(controlplane, crds)
    controlplane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{crd['metadata']['name']}" for crd in crds),
    )
    rbac = [doc for doc in rendered if doc["kind"] in RBAC_KINDS]
    apply_objects(controlplane, rbac)
    return rbac


@pytest.fixture(scope="session")
def operator_kubeconfig(controlplane: ControlPlane, deploy_rbac: list[dict[str, Any]]) -> Path:
    """The operator's own identity: the ServiceAccount and RBAC from deploy/, never the
    admin, so every end-to-end test also proves the RBAC is enough."""
    return Path(
        controlplane.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
    )


@pytest.fixture
def operator_factory(
    operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(
        env: dict[str, str] | None = None, kubeconfig: Path | None = None, debug: bool = False
    ) -> OperatorProcess:
        proc = OperatorProcess(
            kubeconfig or operator_kubeconfig, tmp_path / "operator", env=env, debug=debug
        )
        started.append(proc)
        return proc.start()

    yield start
    # Every operator a test left running must stop as a pod does: promptly, exit code 0.
    troubles = [t for t in (proc.stop() for proc in started) if t]
    assert not troubles, troubles
