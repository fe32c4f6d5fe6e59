"""Table tests for rollout verification of each workload kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core.rollout import Phase, progress

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def deploy(
    gen: int,
    observed: int,
    replicas: int,
    updated: int,
    total: int,
    available: int,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"generation": gen},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "replicas": total,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def partitioned(updated: int) -> dict[str, Any]:
    """A 4-replica StatefulSet with partition 2 (ordinals 2 and 3 update), 4 ready."""
    return {
        "metadata": {"generation": 2},
        "spec": {
            "replicas": 4,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        },
        "status": {
            "observedGeneration": 2,
            "updatedReplicas": updated,
            "readyReplicas": 4,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }


DEADLINE = [
    {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "timed out",
    }
]

CASES = [
    ("not observed yet", "Deployment", deploy(2, 1, 3, 3, 3, 3), 5, Phase.PROGRESSING),
    ("partially updated", "Deployment", deploy(2, 2, 3, 1, 4, 3), 5, Phase.PROGRESSING),
    ("old pods terminating", "Deployment", deploy(2, 2, 3, 3, 4, 3), 5, Phase.PROGRESSING),
    ("not yet available", "Deployment", deploy(2, 2, 3, 3, 3, 2), 5, Phase.PROGRESSING),
    ("complete", "Deployment", deploy(2, 2, 3, 3, 3, 3), 5, Phase.COMPLETE),
    ("deadline exceeded", "Deployment", deploy(2, 2, 3, 1, 4, 3, DEADLINE), 5, Phase.FAILED),
    (
        "a deadline missed before our patch does not fail our rollout",
        "Deployment",
        deploy(2, 2, 3, 1, 4, 3, [{**DEADLINE[0], "lastUpdateTime": "2025-12-31T23:59:00Z"}]),
        5,
        Phase.PROGRESSING,
    ),
    (
        "a deadline missed after our patch fails it",
        "Deployment",
        deploy(2, 2, 3, 1, 4, 3, [{**DEADLINE[0], "lastUpdateTime": "2026-01-01T00:00:04Z"}]),
        5,
        Phase.FAILED,
    ),
    ("our own timeout", "Deployment", deploy(2, 2, 3, 3, 3, 2), 700, Phase.FAILED),
    (
        "statefulset rolling",
        "StatefulSet",
        {
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 2,
                "updatedReplicas": 1,
                "readyReplicas": 2,
                "currentRevision": "a",
                "updateRevision": "b",
            },
        },
        5,
        Phase.PROGRESSING,
    ),
    (
        "statefulset done",
        "StatefulSet",
        {
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "currentRevision": "b",
                "updateRevision": "b",
            },
        },
        5,
        Phase.COMPLETE,
    ),
    (
        "daemonset rolling",
        "DaemonSet",
        {
            "metadata": {"generation": 3},
            "status": {
                "observedGeneration": 3,
                "desiredNumberScheduled": 2,
                "updatedNumberScheduled": 1,
                "numberAvailable": 2,
            },
        },
        5,
        Phase.PROGRESSING,
    ),
    (
        "daemonset done",
        "DaemonSet",
        {
            "metadata": {"generation": 3},
            "status": {
                "observedGeneration": 3,
                "desiredNumberScheduled": 2,
                "updatedNumberScheduled": 2,
                "numberAvailable": 2,
            },
        },
        5,
        Phase.COMPLETE,
    ),
    ("cronjob", "CronJob", {}, 5, Phase.COMPLETE),
    (
        "statefulset OnDelete: applied, never waited for",
        "StatefulSet",
        {
            "metadata": {"generation": 2},
            "spec": {"replicas": 3, "updateStrategy": {"type": "OnDelete"}},
            "status": {"observedGeneration": 2, "updatedReplicas": 0, "readyReplicas": 3},
        },
        5,
        Phase.COMPLETE,
    ),
    (
        "statefulset partition: the ordinals above it updating",
        "StatefulSet",
        partitioned(updated=1),
        5,
        Phase.PROGRESSING,
    ),
    (
        "statefulset partition: the ordinals above it updated",
        "StatefulSet",
        partitioned(updated=2),
        5,
        Phase.COMPLETE,
    ),
]


@pytest.mark.parametrize(
    ("label", "kind", "obj", "after", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_progress(label: str, kind: str, obj: dict[str, Any], after: int, expected: Phase) -> None:
    result = progress(kind, obj, T0, T0 + timedelta(seconds=after), timeout=600)
    assert result.phase is expected, result.reason
    assert result.reason
