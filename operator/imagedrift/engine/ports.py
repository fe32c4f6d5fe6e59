"""What the engine needs from the outside, as protocols the adapters (and tests) implement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
