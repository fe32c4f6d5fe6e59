"""Is a workload's rollout finished, still going, or failed? Pure reads of its status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    reason: str


def _int(status: Mapping[str, Any], key: str) -> int:
    return int(status.get(key) or 0)


def _deployment(obj: Mapping[str, Any]) -> Progress:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Progress(
                Phase.FAILED, f"ProgressDeadlineExceeded: {cond.get('message', '')}".strip()
            )
    want = int(spec.get("replicas", 1))
    if _int(status, "observedGeneration") < int((obj.get("metadata") or {}).get("generation") or 0):
        return Progress(Phase.PROGRESSING, "waiting for the controller to observe the new spec")
    updated, total, available = (
        _int(status, k) for k in ("updatedReplicas", "replicas", "availableReplicas")
    )
    if updated < want:
        return Progress(Phase.PROGRESSING, f"{updated} of {want} replicas updated")
    if total > updated:
        return Progress(Phase.PROGRESSING, f"{total - updated} old replicas pending termination")
    if available < want:
        return Progress(Phase.PROGRESSING, f"{available} of {want} updated replicas available")
    return Progress(Phase.COMPLETE, f"{want} of {want} replicas updated and available")


def _statefulset(obj: Mapping[str, Any]) -> Progress:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    if _int(status, "observedGeneration") < int((obj.get("metadata") or {}).get("generation") or 0):
        return Progress(Phase.PROGRESSING, "waiting for the controller to observe the new spec")
    updated, ready = _int(status, "updatedReplicas"), _int(status, "readyReplicas")
    if status.get("updateRevision") and status.get("currentRevision") != status.get(
        "updateRevision"
    ):
        return Progress(Phase.PROGRESSING, f"{updated} of {want} replicas on the new revision")
    if updated < want or ready < want:
        return Progress(Phase.PROGRESSING, f"{updated} of {want} updated, {ready} ready")
    return Progress(Phase.COMPLETE, f"{want} of {want} replicas updated and ready")


def _daemonset(obj: Mapping[str, Any]) -> Progress:
    status = obj.get("status") or {}
    if _int(status, "observedGeneration") < int((obj.get("metadata") or {}).get("generation") or 0):
        return Progress(Phase.PROGRESSING, "waiting for the controller to observe the new spec")
    want = _int(status, "desiredNumberScheduled")
    updated, available = _int(status, "updatedNumberScheduled"), _int(status, "numberAvailable")
    if updated < want or available < want:
        return Progress(
            Phase.PROGRESSING, f"{updated} of {want} nodes updated, {available} available"
        )
    return Progress(Phase.COMPLETE, f"{want} of {want} nodes updated and available")


def progress(
    kind: str, obj: Mapping[str, Any], started_at: datetime, now: datetime, timeout: float
) -> Progress:
    """Where the rollout of ``obj`` (just patched at ``started_at``) stands at ``now``.

    A rollout still progressing after ``timeout`` seconds is failed: kwok-style clusters and
    readiness gates that never pass would otherwise hold it forever.
    """
    if kind == "CronJob":  # the new image takes effect at the next scheduled Job
        return Progress(Phase.COMPLETE, "next scheduled Job uses the new image")
    reader = {"Deployment": _deployment, "StatefulSet": _statefulset, "DaemonSet": _daemonset}[kind]
    result = reader(obj)
    if result.phase is Phase.PROGRESSING and (now - started_at).total_seconds() > timeout:
        return Progress(Phase.FAILED, f"not available within {timeout:g}s: {result.reason}")
    return result
