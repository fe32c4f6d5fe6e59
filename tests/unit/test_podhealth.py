"""Table tests: what a rollout's new pods did since the patch (``core.podhealth``), and how
that and the settling window turn a Deployment's conditions into a verdict.

The pod shapes are the kubelet's, as the real node in the e2e tests reports them: a
container with no readiness probe that exits 1 at start shows ``restartCount`` and a
``lastState.terminated`` with ``exitCode: 1, reason: Error`` while its pod keeps flipping
back to Ready; a container refused by ``runAsNonRoot`` waits in
``CreateContainerConfigError``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core.podhealth import PodHealth, pod_health
from imagedrift.core.rollout import Phase, progress

T0 = datetime(2026, 1, 1, 12, 0, 0, 400_000, tzinfo=UTC)  # the patch, mid-second
NEW = "reg.example/shop/web@sha256:" + "b" * 64
OLD = "reg.example/shop/web:1.0"


def at(seconds: float) -> str:
    moment = T0.replace(microsecond=0) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    image: str = NEW,
    *,
    created: float = 1,
    ready: bool = True,
    ready_at: float = 2,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": at(created)}
    if deleting:
        meta["deletionTimestamp"] = at(30)
    status: dict[str, Any] = {
        "name": "app",
        "image": image,
        "restartCount": restarts,
        "state": state or {"running": {"startedAt": at(1)}},
    }
    if last is not None:
        status["lastState"] = {"terminated": last}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": at(ready_at),
                }
            ],
            "containerStatuses": [status],
        },
    }


CRASH = {"exitCode": 1, "reason": "Error", "finishedAt": at(3), "startedAt": at(2)}
CASES: list[tuple[str, list[dict[str, Any]], str, str, int]] = [
    # label, pods, failed contains, waiting contains, pods counted
    ("healthy new pods", [pod("a"), pod("b")], "", "", 2),
    ("no pod runs the target yet", [pod("old", OLD)], "", "", 0),
    (
        "crash-looping with no probe: Ready again, restarted",
        [pod("a", restarts=2, last=CRASH)],
        "pod a container app crashed: restarted 2 times, last exit code 1 (Error)",
        "",
        1,
    ),
    (
        "a crash shows in the patch's own second (the kubelet writes whole seconds)",
        [pod("a", restarts=1, last={**CRASH, "finishedAt": at(0)})],
        "restarted once",
        "",
        1,
    ),
    (
        "an old pod's crash before the patch says nothing",
        [pod("a", restarts=4, last={**CRASH, "finishedAt": at(-60)}, created=-120)],
        "",
        "",
        1,
    ),
    (
        "a stopped container (exit 0) took the service down",
        [
            pod(
                "a",
                state={"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": at(4)}},
            )
        ],
        "stopped: exit code 0 (Completed)",
        "",
        1,
    ),
    (
        "refused to run as root",
        [
            pod(
                "a",
                ready=False,
                state={
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": "container has runAsNonRoot and image will run as root",
                    }
                },
            )
        ],
        "pod a container app cannot start: CreateContainerConfigError: container has "
        "runAsNonRoot and image will run as root",
        "",
        1,
    ),
    (
        "an image still pulling waits, it does not fail",
        [pod("a", ready=False, state={"waiting": {"reason": "ImagePullBackOff", "message": "x"}})],
        "",
        "pod a container app: ImagePullBackOff: x",
        1,
    ),
    (
        "a terminating pod is not judged",
        [pod("a", restarts=1, last=CRASH, deleting=True)],
        "",
        "",
        0,
    ),
    (
        "one crash among healthy pods is enough",
        [pod("a"), pod("b", restarts=1, last=CRASH)],
        "pod b container app crashed",
        "",
        2,
    ),
]


@pytest.mark.parametrize(
    ("label", "pods", "failed", "waiting", "count"), CASES, ids=[c[0] for c in CASES]
)
def test_pod_health(
    label: str, pods: list[dict[str, Any]], failed: str, waiting: str, count: int
) -> None:
    health = pod_health(pods, {"app": NEW}, T0)
    assert (failed in health.failed) if failed else health.failed == "", health
    assert (waiting in health.waiting) if waiting else health.waiting == "", health
    assert health.pods == count


def test_ready_since_is_the_latest_ready_transition_and_none_while_one_is_not_ready() -> None:
    assert pod_health(
        [pod("a", ready_at=2), pod("b", ready_at=5)], {"app": NEW}, T0
    ).ready_since == T0.replace(microsecond=0) + timedelta(seconds=5)
    assert pod_health([pod("a"), pod("b", ready=False)], {"app": NEW}, T0).ready_since is None
    assert pod_health([], {"app": NEW}, T0) == PodHealth()


def test_a_long_runtime_message_keeps_its_cause() -> None:
    message = (
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        "failed: runc create failed: unable to start container process: exec: "
        '"/app/smoke": stat /app/smoke: no such file or directory: unknown'
    )
    ended = {"exitCode": 128, "reason": "StartError", "message": message, "finishedAt": at(3)}
    failed = pod_health([pod("a", state={"terminated": ended})], {"app": NEW}, T0).failed
    assert failed.endswith(
        'exec: "/app/smoke": stat /app/smoke: no such file or directory: unknown'
    )
    assert "exit code 128 (StartError): …" in failed


def test_the_template_matches_after_normalising() -> None:
    short = "nginx:1.25"
    assert pod_health([pod("a", "docker.io/library/nginx:1.25")], {"app": short}, T0).pods == 1


def available(replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "updatedReplicas": replicas,
            "replicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


VERDICTS: list[tuple[str, PodHealth | None, float, float, Phase, str, float | None]] = [
    # label, pods, settle, now (s after patch), phase, reason contains, again_in
    ("no pods read: the conditions alone", None, 30, 5, Phase.COMPLETE, "2 of 2", None),
    ("no window asked", PodHealth(ready_since=seconds(2), pods=2), 0, 3, Phase.COMPLETE, "", None),
    (
        "inside the window: still going, look again when it ends",
        PodHealth(ready_since=seconds(2), pods=2),
        30,
        12,
        Phase.PROGRESSING,
        "settling: the new pods must stay up 30s",
        20,
    ),
    (
        "the window passed",
        PodHealth(ready_since=seconds(2), pods=2),
        30,
        33,
        Phase.COMPLETE,
        "2 of 2 replicas updated and available",
        None,
    ),
    (
        "a crash inside the window fails the rollout the conditions call complete",
        PodHealth(failed="pod a container app crashed: restarted once", pods=2),
        30,
        12,
        Phase.FAILED,
        "crashed",
        None,
    ),
    (
        "a pod not Ready though the conditions are",
        PodHealth(pods=2),
        30,
        12,
        Phase.PROGRESSING,
        "not every new pod is Ready",
        1,
    ),
    (
        "a window that outlasts the verify timeout still ends in a failure, never a hang",
        PodHealth(ready_since=seconds(599), pods=2),
        30,
        601,
        Phase.FAILED,
        "not available within 600s",
        None,
    ),
]


@pytest.mark.parametrize(
    ("label", "health", "settle", "now", "phase", "reason", "again"),
    VERDICTS,
    ids=[v[0] for v in VERDICTS],
)
def test_settling_window(
    label: str,
    health: PodHealth | None,
    settle: float,
    now: float,
    phase: Phase,
    reason: str,
    again: float | None,
) -> None:
    result = progress("Deployment", available(), T0, seconds(now), 600, health, settle)
    assert result.phase is phase, result
    assert reason in result.reason
    assert result.again_in == again


def test_a_crash_and_a_missed_deadline_say_both() -> None:
    obj = available()
    obj["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "web-1" has timed out progressing.',
            "lastUpdateTime": at(40),
        }
    ]
    result = progress(
        "Deployment", obj, T0, seconds(41), 600, PodHealth(failed="pod a crashed"), 30
    )
    assert result.phase is Phase.FAILED
    assert result.reason.startswith("pod a crashed (ProgressDeadlineExceeded")
