"""What the engine needs from the outside, as protocols the adapters (and tests) implement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from imagedrift.core.sandbox import Sandbox
from imagedrift.core.spec import BaseSpec
from imagedrift.core.workloads import WorkloadRef
from imagedrift.registry.base import RegistryClient


class KubePort(Protocol):
    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        """The workload as a dict, or None when it no longer exists."""
        ...

    def patch_workload(self, ref: WorkloadRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Strategic-merge patch with imagedrift's field manager; KubeConflict on 409."""
        ...


class RegistryPort(Protocol):
    def client_for(self, host: str, base: BaseSpec) -> RegistryClient:
        """The client for ``host`` with the credentials ``base`` names for it."""
        ...


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on ``target`` (an object body with apiVersion/kind/metadata)."""

    target: Mapping[str, Any]
    type: str  # Normal | Warning
    reason: str
    message: str


@runtime_checkable
class PodReader(Protocol):
    """Optional: read a workload's pods, for the digest their nodes pulled."""

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods in ``namespace`` matching label ``selector`` (a bounded first page)."""
        ...


@runtime_checkable
class ValidationKube(Protocol):
    """Optional Kubernetes abilities the validation gates use (``KubeAdapter`` has them).

    A ``KubePort`` without them still works; the gates that need them then reject the
    candidate, naming what is missing.
    """

    namespace: str  # the operator's own namespace
    sandbox: Sandbox  # the smoke-test sandbox (namespace and service account)

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a batch/v1 Job; KubeConflict when one of that name exists."""
        ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None when it does not exist."""
        ...

    def list_vulnerability_reports(self, digest: str) -> list[dict[str, Any]]:
        """Trivy Operator VulnerabilityReports (all namespaces) whose artifact digest is
        ``digest``; [] when the resource type is not installed."""
        ...


@runtime_checkable
class GitOpsReader(Protocol):
    """Optional: the GitOps controllers' objects and the git credentials (write-back)."""

    def get_gitops_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Flux ``Kustomization`` or ``GitRepository``, or an Argo CD ``Application``;
        None when it (or its resource type) does not exist. Raises KubeError."""
        ...

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        """A Secret of the operator's namespace, by name (key -> bytes); None when absent.
        Raises KubeError."""
        ...
