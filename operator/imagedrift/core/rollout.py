"""Is a workload's rollout finished, still going, or failed? Pure reads of its status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from imagedrift.core.conditions import parse_timestamp


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


def _deployment(obj: Mapping[str, Any], started_at: datetime | None = None) -> Progress:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            stamped = parse_timestamp(cond.get("lastUpdateTime") or cond.get("lastTransitionTime"))
            if started_at is not None and stamped is not None and stamped < started_at:
                # A deadline missed before our patch (by an earlier rollout) says nothing
                # of ours; the controller resets the condition once it sees the new spec.
                continue
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
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        # The controller never replaces a pod by itself: nothing to wait for, or to verify.
        return Progress(
            Phase.COMPLETE,
            "applied, not verified: updateStrategy OnDelete, pods take the new image "
            "when they are deleted",
        )
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    if partition > 0:
        # Only ordinals >= partition update; those must be updated and every pod ready.
        expected = max(want - partition, 0)
        if updated < expected or ready < want:
            return Progress(
                Phase.PROGRESSING,
                f"{updated} of {expected} replicas above partition {partition} updated, "
                f"{ready} of {want} ready",
            )
        return Progress(
            Phase.COMPLETE,
            f"{expected} of {want} replicas updated (partition {partition} holds the rest)",
        )
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
        return Progress(
            Phase.COMPLETE, "applied, not verified: the next Job the CronJob starts runs it"
        )
    if kind == "Deployment":
        result = _deployment(obj, started_at)
    else:
        result = {"StatefulSet": _statefulset, "DaemonSet": _daemonset}[kind](obj)
    if result.phase is Phase.PROGRESSING and (now - started_at).total_seconds() > timeout:
        return Progress(Phase.FAILED, f"not available within {timeout:g}s: {result.reason}")
    return result
