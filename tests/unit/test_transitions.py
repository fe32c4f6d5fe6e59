"""Table tests of how a workload's record moves (imagedrift.core.transitions): every
transition as it lands, and every transition with a write that fails (409 or another fault)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from imagedrift.core import transitions
from imagedrift.core.decide import (
    Action,
    ContainerDecision,
    Decision,
    State,
    WorkloadObservation,
)
from imagedrift.core.rollout import Phase, Progress
from imagedrift.core.transitions import Subject, Transition
from imagedrift.core.workloads import RolloutRecord, WorkloadState

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
A1, A2 = "sha256:" + "a1" * 32, "sha256:" + "a2" * 32
BASE = "sha256:b2"
OLD = "reg.example/app:1.0.0"
NEW = f"reg.example/app:1.0.1@{A2}"
KEY = "deployment/shop/web"
RECORD = RolloutRecord(
    id=f"{BASE}|{A2}",
    base_digest=BASE,
    target={"app": NEW},
    previous={"app": OLD},
    tags={"app": "1.0.1"},
    started_at="2026-12-07T11:59:00Z",
    phase=Phase.PROGRESSING.value,
    previous_digests={"app": A1},
)
ROLLED_BACK = RolloutRecord(
    **{**RECORD.__dict__, "phase": Phase.ROLLED_BACK.value, "rollback": "Progressing"}
)


def subject(action: Action, progress: Phase | None = None, images: str = NEW) -> Subject:
    record = {
        Action.ROLL: None,
        Action.SETTLE: ROLLED_BACK,
    }.get(action, RECORD)
    rows = (ContainerDecision("app", State.DRIFTED, "on an old base"),)
    targets = {"app": NEW} if action is Action.ROLL else {}
    if action is Action.YIELD:
        targets = {"app": "reg.example/app:hotfix"}
    decision = Decision(State.DRIFTED, "why", action, rows, targets, {"app": "1.0.1"})
    observation = WorkloadObservation(
        KEY,
        (),
        WorkloadState({"app": "1.0.0"}, record),
        progress=Progress(progress, f"rollout {progress}") if progress else None,
        images={"app": images},
    )
    return Subject(KEY, observation.record, observation, decision, {"app": OLD})


CASES: list[tuple[str, Callable[[], Transition], str, dict[str, str], tuple[str, ...], int]] = [
    # label, transition, record phase it writes, images it patches, Notices, rejections
    (
        "start: patch the target, record Progressing",
        lambda: transitions.start(subject(Action.ROLL), "p", BASE, NOW),
        "Progressing",
        {"app": NEW},
        ("RolloutStarted",),
        0,
    ),
    (
        "conclude a complete rollout: record only",
        lambda: transitions.conclude(subject(Action.FINISH, Phase.COMPLETE), BASE, NOW),
        "Complete",
        {},
        ("RolloutComplete",),
        0,
    ),
    (
        "conclude a failed rollout: restore the digest that ran, reject the candidate",
        lambda: transitions.conclude(subject(Action.ROLL_BACK, Phase.FAILED), BASE, NOW),
        "RolledBack",
        {"app": f"reg.example/app@{A1}"},
        ("RolledBack",),
        1,
    ),
    (
        "conclude a failed rollout of an older base: restored, no policy-wide rejection",
        lambda: transitions.conclude(subject(Action.ROLL_BACK, Phase.FAILED), "sha256:b3", NOW),
        "RolledBack",
        {"app": f"reg.example/app@{A1}"},
        ("RolledBack",),
        0,
    ),
    (
        "conclude a failed rollout someone changed meanwhile: nothing restored",
        lambda: transitions.conclude(
            subject(Action.ROLL_BACK, Phase.FAILED, images="reg.example/app:mine"), BASE, NOW
        ),
        "RolledBack",
        {},
        ("RolledBack",),
        1,
    ),
    (
        "yield: someone replaced what we rolled",
        lambda: transitions.yield_(subject(Action.YIELD), NOW),
        "Overridden",
        {},
        ("Overridden",),
        0,
    ),
    (
        "settle a rollback that completed",
        lambda: transitions.settle(subject(Action.SETTLE, Phase.COMPLETE), NOW),
        "RolledBack",
        {},
        ("RollbackComplete",),
        0,
    ),
    (
        "settle a rollback that failed: a Warning, no third try",
        lambda: transitions.settle(subject(Action.SETTLE, Phase.FAILED), NOW),
        "RolledBack",
        {},
        ("RollbackFailed",),
        0,
    ),
]


@pytest.mark.parametrize(
    ("label", "make", "phase", "images", "notices", "rejections"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_transition_as_it_lands(
    label: str,
    make: Callable[[], Transition],
    phase: str,
    images: dict[str, str],
    notices: tuple[str, ...],
    rejections: int,
) -> None:
    t = make()
    assert t.state.rollout is not None and t.state.rollout.phase == phase
    assert dict(t.images) == images
    assert tuple(n.reason for n in t.landed) == notices
    assert all(n.workload == KEY for n in t.landed)  # paired: policy and workload
    assert len(t.rejections) == rejections


def test_a_failed_rollout_is_never_retried_on_that_workload() -> None:
    t = transitions.conclude(subject(Action.ROLL_BACK, Phase.FAILED), BASE, NOW)
    assert t.state.rejected == (A2,)
    assert t.rejections[0].reason == f"rolled back on {KEY}: rollout {Phase.FAILED}"
    assert t.state.rollout is not None and t.state.rollout.rollback == "Progressing"


def test_a_settled_rollback_is_not_followed_again() -> None:
    for phase in (Phase.COMPLETE, Phase.FAILED):
        t = transitions.settle(subject(Action.SETTLE, phase), NOW)
        assert t.state.rollout is not None and t.state.rollout.rollback == phase.value
        assert t.decision.state is State.ROLLED_BACK


# action of the decision whose write failed x how it failed -> what the workload is.
FAILED_WRITES = [
    (Action.ROLL, True, State.DRIFTED, Action.ROLL),  # decided again on its next event
    (Action.ROLL, False, State.ERROR, Action.NONE),
    (Action.FINISH, True, State.ROLLING_OUT, Action.NONE),  # outcome not recorded: still rolling
    (Action.FINISH, False, State.ERROR, Action.NONE),
    (Action.ROLL_BACK, True, State.ROLLING_OUT, Action.NONE),
    (Action.ROLL_BACK, False, State.ERROR, Action.NONE),
    (Action.YIELD, True, State.ROLLING_OUT, Action.NONE),
    (Action.YIELD, False, State.ERROR, Action.NONE),
    (Action.SETTLE, True, State.ROLLING_OUT, Action.NONE),
    (Action.SETTLE, False, State.ERROR, Action.NONE),
    (Action.NONE, True, State.DRIFTED, Action.NONE),  # only its note: written next check
    (Action.NONE, False, State.ERROR, Action.NONE),
]


@pytest.mark.parametrize(("action", "conflict", "state", "then"), FAILED_WRITES)
def test_a_write_that_fails(action: Action, conflict: bool, state: State, then: Action) -> None:
    before = Decision(
        State.DRIFTED, "why", action, (ContainerDecision("app", State.DRIFTED, "why"),)
    )
    after = transitions.patch_failed(before, "409 Conflict" if conflict else "500", conflict)
    assert (after.state, after.action) == (state, then)
    assert after.containers == before.containers
    if state is State.ROLLING_OUT:
        assert after.reason == "recording the outcome (why) again: 409 Conflict"


def test_hold_marks_only_the_targeted_containers_waiting() -> None:
    rows = (
        ContainerDecision("app", State.DRIFTED, "rolling"),
        ContainerDecision("side", State.UP_TO_DATE, "fine"),
    )
    held = transitions.hold(
        Decision(State.DRIFTED, "rolling", Action.ROLL, rows, {"app": NEW}), "wave 2 of 3"
    )
    assert held.action is Action.NONE and held.state is State.WAITING
    assert [(c.name, c.state) for c in held.containers] == [
        ("app", State.WAITING),
        ("side", State.UP_TO_DATE),
    ]
