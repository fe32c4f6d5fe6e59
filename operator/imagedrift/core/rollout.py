"""Is a workload's rollout finished, still going, or failed? Pure reads of its status and of
what its new pods did (``core.podhealth``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.podhealth import PodHealth


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    reason: str
    again_in: float | None = None  # look again this soon (seconds), e.g. when a window ends


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
    kind: str,
    obj: Mapping[str, Any],
    started_at: datetime,
    now: datetime,
    timeout: float,
    pods: PodHealth | None = None,
    settle: float = 0.0,
) -> Progress:
    """Where the rollout of ``obj`` (just patched at ``started_at``) stands at ``now``.

    ``pods``, when the workload's pods could be read, is what the pods running the target
    did since the patch: a crash or a container that cannot start fails the rollout whatever
    the workload's conditions say, and a rollout the conditions call complete is complete
    only once every new pod has stayed Ready for ``settle`` seconds (a crash inside that
    window still fails it). A rollout still progressing after ``timeout`` seconds is failed:
    kwok-style clusters and readiness gates that never pass would otherwise hold it forever.
    """
    if kind == "CronJob":  # the new image takes effect at the next scheduled Job
        return Progress(
            Phase.COMPLETE, "applied, not verified: the next Job the CronJob starts runs it"
        )
    if kind == "Deployment":
        result = _deployment(obj, started_at)
    else:
        result = {"StatefulSet": _statefulset, "DaemonSet": _daemonset}[kind](obj)
    if pods is not None and pods.failed:
        also = f" ({result.reason})" if result.phase is Phase.FAILED else ""
        return Progress(Phase.FAILED, pods.failed + also)
    if result.phase is Phase.COMPLETE and pods is not None and settle > 0 and pods.pods:
        result = _settling(result, pods, started_at, now, settle)
    elif result.phase is Phase.PROGRESSING and pods is not None and pods.waiting:
        result = Progress(result.phase, f"{result.reason}; {pods.waiting}")
    if result.phase is Phase.PROGRESSING and (now - started_at).total_seconds() > timeout:
        return Progress(Phase.FAILED, f"not available within {timeout:g}s: {result.reason}")
    return result


def _settling(
    done: Progress, pods: PodHealth, started_at: datetime, now: datetime, settle: float
) -> Progress:
    """Complete once the new pods stayed Ready for ``settle`` seconds; until then, going."""
    if pods.ready_since is None:
        return Progress(Phase.PROGRESSING, f"{done.reason}, but not every new pod is Ready", 1.0)
    up = (now - max(pods.ready_since, started_at)).total_seconds()
    if up < settle:
        # No elapsed count in the reason: it is written to the workload, and a text that
        # changed at every check would rewrite it at every check.
        return Progress(
            Phase.PROGRESSING,
            f"{done.reason}; settling: the new pods must stay up {settle:g}s",
            max(settle - up, 1.0),
        )
    return done
