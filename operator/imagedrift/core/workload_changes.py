"""Which changes to a workload can alter a decision; the others queue no check.

A watch event comes with every change to a workload: a new resourceVersion, the status of
a workload that is not rolling out. ``relevant`` is what of a workload its decision reads,
so two bodies with the same ``relevant`` need no second look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagedrift.core.workloads import WorkloadState, containers, followed


def relevant(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a workload its decision reads: the whole status while a rollout runs;
    otherwise only whether its pods have settled, because pods that were replaced (a
    restart, an eviction) may have pulled a re-pushed tag, and the check that reads them
    again (``engine.pulls``) should run once they are up, not at some later change."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    record = WorkloadState.decode(body).rollout
    rolling = followed(record)
    return (
        meta.get("labels"),
        annotations,
        meta.get("generation"),
        body.get("spec"),
        body.get("status") if rolling else (_settled(body) if _pulls_tags(body) else None),
    )


def _pulls_tags(body: Mapping[str, Any]) -> bool:
    """Does the workload run pods from a tag (a reference without a digest)? Only then can
    replaced pods have pulled something new; a workload scaled to zero, or pinned by
    digest, queues nothing when its status moves (a fleet of new Deployments settling
    would otherwise queue every policy again)."""
    spec = body.get("spec") or {}
    if "replicas" in spec and not int(spec.get("replicas") or 0):
        return False
    return any("@" not in image for image in containers(body).values())


def _settled(body: Mapping[str, Any]) -> bool:
    """Are all of the workload's pods updated and available (for any kind's status)?"""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    want = status.get("replicas", status.get("desiredNumberScheduled"))
    counts = [
        status.get(key)
        for key in ("updatedReplicas", "availableReplicas", "readyReplicas")
        if key in status
    ] + [
        status.get(key)
        for key in ("updatedNumberScheduled", "numberAvailable", "numberReady")
        if key in status
    ]
    return all(count == want for count in counts)
