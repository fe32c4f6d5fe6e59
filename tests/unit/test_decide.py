"""Table test of the per-workload decision (imagedrift.core.decide): every state the README
lists, and the one action each leads to."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imagedrift.core.decide import (
    Action,
    CandidateView,
    ContainerObservation,
    PolicyView,
    State,
    WorkloadObservation,
    decide,
)
from imagedrift.core.rollout import Phase, Progress
from imagedrift.core.workloads import RolloutRecord, WorkloadState

BASE = "sha256:" + "b" * 64
APP = "sha256:" + "a" * 64
NEW = "sha256:" + "c" * 64
REF = f"r.io/app@{NEW}"

PASSED = CandidateView(REF, NEW, "1.0.1", True, False, ("lineage: on base",))
PENDING = CandidateView(REF, NEW, "1.0.1", False, True, ("smokeTest: job running",))
FAILED = CandidateView(REF, NEW, "1.0.1", False, False, ("signature: none attached",))


def on_old(candidate: CandidateView | None = None, **kw: object) -> ContainerObservation:
    return ContainerObservation(
        "app",
        "r.io/app:1.0.0",
        APP,
        False,
        "built on base digest sha256:old, not the current",
        "sha256:old",
        candidate,
        **kw,  # type: ignore[arg-type]
    )


UP = ContainerObservation("app", f"r.io/app@{APP}", APP, True, "on the current base", BASE)
RECORD = RolloutRecord(
    id=f"{BASE}|{NEW}",
    base_digest=BASE,
    target={"app": REF},
    previous={"app": "r.io/app:1.0.0"},
    tags={"app": "1.0.1"},
    started_at="2026-01-01T00:00:00Z",
    phase=Phase.PROGRESSING.value,
)
ROLLING = WorkloadState({"app": "1.0.1"}, RECORD)
DONE = WorkloadState(
    {"app": "1.0.1"},
    RolloutRecord(
        RECORD.id,
        BASE,
        RECORD.target,
        RECORD.previous,
        RECORD.tags,
        RECORD.started_at,
        Phase.COMPLETE.value,
        "3 of 3 available",
        "2026-01-01T00:01:00Z",
    ),
)
BACK = WorkloadState(
    {"app": "1.0.0"},
    dataclasses.replace(
        DONE.rollout,  # type: ignore[type-var]
        phase=Phase.ROLLED_BACK.value,
        reason="ProgressDeadlineExceeded",
        rollback=Phase.PROGRESSING.value,
    ),
    (NEW,),
)
SIDE = f"r.io/side@{APP}"
TWO_ROLLING = WorkloadState(
    {"app": "1.0.1", "side": "1.0.1"},
    dataclasses.replace(RECORD, target={"app": REF, "side": SIDE}),
)
OVERRIDDEN = WorkloadState({}, None, (), (NEW,))
REJECTED_HERE = WorkloadState({}, None, (NEW,))
VIEW = PolicyView(BASE)


def obs(*containers: ContainerObservation, **kw: object) -> WorkloadObservation:
    return WorkloadObservation("deployment/ns/web", tuple(containers), **kw)  # type: ignore[arg-type]


ROWS = [
    ("on the current base", obs(UP), VIEW, State.UP_TO_DATE, Action.NONE, "current base"),
    ("no governed containers", obs(), VIEW, State.UP_TO_DATE, Action.NONE, "no governed"),
    (
        "old base, nothing rebuilt",
        obs(on_old(search_notes=("1.0.1: built on base digest sha256:old",))),
        VIEW,
        State.DRIFTED,
        Action.NONE,
        "1.0.1: built on base digest",
    ),
    (
        "old base, no tags inspected",
        obs(on_old()),
        VIEW,
        State.DRIFTED,
        Action.NONE,
        "no rebuilt image yet",
    ),
    (
        "validated candidate: roll",
        obs(on_old(PASSED)),
        VIEW,
        State.DRIFTED,
        Action.ROLL,
        "rolling app=",
    ),
    (
        "candidate still validating",
        obs(on_old(PENDING)),
        VIEW,
        State.WAITING,
        Action.NONE,
        "validating 1.0.1",
    ),
    (
        "candidate failed a gate",
        obs(on_old(FAILED)),
        VIEW,
        State.DRIFTED,
        Action.NONE,
        "signature: none attached",
    ),
    (
        "candidate rolled back here before",
        obs(on_old(PASSED), record=REJECTED_HERE),
        VIEW,
        State.ROLLED_BACK,
        Action.NONE,
        "not retried",
    ),
    (
        "candidate rejected policy-wide (failed on another workload)",
        obs(on_old(PASSED)),
        PolicyView(BASE, rejected={NEW: "rolled back on deployment/ns/canary"}),
        State.DRIFTED,
        Action.NONE,
        "rejected for this base",
    ),
    (
        "policy suspended",
        obs(on_old(PASSED)),
        PolicyView(BASE, suspended=True),
        State.SUSPENDED,
        Action.NONE,
        "would roll to",
    ),
    (
        "workload paused",
        obs(on_old(PASSED), paused=True),
        VIEW,
        State.PAUSED,
        Action.NONE,
        "workload paused",
    ),
    (
        "rollout in progress",
        obs(record=ROLLING, progress=Progress(Phase.PROGRESSING, "1 of 3 replicas updated")),
        VIEW,
        State.ROLLING_OUT,
        Action.NONE,
        "1 of 3 replicas",
    ),
    (
        "rollout in progress, status not seen yet",
        obs(record=ROLLING),
        VIEW,
        State.ROLLING_OUT,
        Action.NONE,
        "waiting for the rollout status",
    ),
    (
        "rollout complete: record it",
        obs(record=ROLLING, progress=Progress(Phase.COMPLETE, "3 of 3 available")),
        VIEW,
        State.UP_TO_DATE,
        Action.FINISH,
        "3 of 3",
    ),
    (
        "rollout failed: roll back",
        obs(record=ROLLING, progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded")),
        VIEW,
        State.ROLLED_BACK,
        Action.ROLL_BACK,
        "ProgressDeadlineExceeded",
    ),
    (
        "the rollback is followed: nothing starts meanwhile",
        obs(on_old(PASSED), record=BACK, progress=Progress(Phase.PROGRESSING, "1 of 3 updated")),
        VIEW,
        State.ROLLED_BACK,
        Action.NONE,
        "rolling back: 1 of 3 updated",
    ),
    (
        "the rollback completed: record it",
        obs(record=BACK, progress=Progress(Phase.COMPLETE, "3 of 3 available")),
        VIEW,
        State.ROLLED_BACK,
        Action.SETTLE,
        "3 of 3 available",
    ),
    (
        "the rollback failed too: record it for a human",
        obs(record=BACK, progress=Progress(Phase.FAILED, "not available within 300s")),
        VIEW,
        State.ROLLED_BACK,
        Action.SETTLE,
        "not available within",
    ),
    (
        "a settled rollback: the candidate stays refused here",
        obs(
            on_old(PASSED),
            record=dataclasses.replace(
                BACK,
                rollout=dataclasses.replace(BACK.rollout, rollback=Phase.COMPLETE.value),  # type: ignore[type-var]
            ),
        ),
        VIEW,
        State.ROLLED_BACK,
        Action.NONE,
        "not retried",
    ),
    (
        "patched in place after the base changed, accepted, no rebuild yet",
        obs(
            dataclasses.replace(
                on_old(patched=True), lineage_reason="patched in place at t (Copa): accepted"
            )
        ),
        VIEW,
        State.PATCHED,
        Action.NONE,
        "patched in place",
    ),
    (
        "patched in place and accepted, but a real rebuild is there: roll to it",
        obs(on_old(PASSED, patched=True)),
        VIEW,
        State.DRIFTED,
        Action.ROLL,
        "rolling app=",
    ),
    (
        "registry fault on this container",
        obs(ContainerObservation("app", "r.io/app:1.0.0", error="registry r.io: 503")),
        VIEW,
        State.ERROR,
        Action.NONE,
        "registry r.io",
    ),
    (
        "the workload could not be read",
        obs(UP, error="reading deployment/ns/web: timeout"),
        VIEW,
        State.ERROR,
        Action.NONE,
        "timeout",
    ),
    (
        "unparsable image reference",
        obs(ContainerObservation("app", "NOT A REF", invalid="bad reference 'NOT A REF'")),
        VIEW,
        State.UNKNOWN,
        Action.NONE,
        "bad reference",
    ),
    (
        "the most pressing container names the workload",
        obs(UP, ContainerObservation("side", "r.io/side:1", error="registry r.io: 503")),
        VIEW,
        State.ERROR,
        Action.NONE,
        "503",
    ),
    (
        "another policy selects it too",
        obs(on_old(PASSED), conflict=("other-policy",)),
        VIEW,
        State.CONFLICT,
        Action.NONE,
        "also selected by policy other-policy",
    ),
    (
        "someone undid imagedrift's rollout",
        obs(
            on_old(PASSED),
            record=DONE,
            images={"app": "r.io/app:1.0.0"},
            writers={"app": "kubectl-rollout (Update, 2026-01-01T00:05:00Z)"},
        ),
        VIEW,
        State.OVERRIDDEN,
        Action.YIELD,
        "changed to r.io/app:1.0.0 by kubectl-rollout",
    ),
    (
        "someone changed the image mid-rollout",
        obs(
            record=ROLLING,
            images={"app": "r.io/app:9.9.9"},
            progress=Progress(Phase.PROGRESSING, "1 of 3 replicas updated"),
        ),
        VIEW,
        State.OVERRIDDEN,
        Action.YIELD,
        "changed to r.io/app:9.9.9 by someone",
    ),
    (
        "one of two containers changed mid-rollout: the rollout is still followed",
        obs(
            record=TWO_ROLLING,
            images={"app": REF, "side": "r.io/side:9.9.9"},
            writers={"side": "kubectl-set (Update, t)"},
            progress=Progress(Phase.PROGRESSING, "1 of 3 replicas updated"),
        ),
        VIEW,
        State.ROLLING_OUT,
        Action.NONE,
        "1 of 3 replicas",
    ),
    (
        "one of two containers changed mid-rollout, then it failed: roll back the rest",
        obs(
            record=TWO_ROLLING,
            images={"app": REF, "side": "r.io/side:9.9.9"},
            progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded"),
        ),
        VIEW,
        State.ROLLED_BACK,
        Action.ROLL_BACK,
        "ProgressDeadlineExceeded",
    ),
    (
        "both containers changed mid-rollout: nothing of ours is left to follow",
        obs(
            record=TWO_ROLLING,
            images={"app": "r.io/app:9", "side": "r.io/side:9.9.9"},
            progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded"),
        ),
        VIEW,
        State.OVERRIDDEN,
        Action.YIELD,
        "app was changed to r.io/app:9",
    ),
    (
        "imagedrift's rollout stands: nothing overridden",
        obs(UP, record=DONE, images={"app": REF}),
        VIEW,
        State.UP_TO_DATE,
        Action.NONE,
        "current base",
    ),
    (
        "a candidate that was overridden here is not rolled again",
        obs(
            on_old(PASSED),
            record=OVERRIDDEN,
            images={"app": "r.io/app:1.0.0"},
            writers={"app": "kubectl-rollout (Update, t)"},
        ),
        VIEW,
        State.OVERRIDDEN,
        Action.NONE,
        "r.io/app:1.0.0 was set by kubectl-rollout",
    ),
    (
        "managed by a GitOps controller: reported, not patched",
        obs(on_old(PASSED), gitops="Flux (field manager kustomize-controller)"),
        VIEW,
        State.MANAGED_BY_GITOPS,
        Action.NONE,
        "managed by Flux",
    ),
    (
        "managed by GitOps, and the policy allows patching",
        obs(on_old(PASSED), gitops="Flux (label kustomize.toolkit.fluxcd.io/name=apps)"),
        PolicyView(BASE, patch_gitops=True),
        State.DRIFTED,
        Action.ROLL,
        "rolling app=",
    ),
    (
        "one container rolls while another is up to date",
        obs(UP, ContainerObservation("side", "r.io/app:1.0.0", APP, candidate=PASSED)),
        VIEW,
        State.DRIFTED,
        Action.ROLL,
        "side=",
    ),
]


@pytest.mark.parametrize(("label", "observation", "view", "state", "action", "reason_has"), ROWS)
def test_decide(
    label: str,
    observation: WorkloadObservation,
    view: PolicyView,
    state: State,
    action: Action,
    reason_has: str,
) -> None:
    decision = decide(observation, view)
    assert (decision.state, decision.action) == (state, action), label
    assert reason_has in decision.reason, (label, decision.reason)


def test_roll_targets_only_the_drifted_containers() -> None:
    side = ContainerObservation("side", "r.io/app:1.0.0", APP, candidate=PASSED)
    decision = decide(obs(UP, side), VIEW)
    assert decision.targets == {"side": REF} and decision.tags == {"side": "1.0.1"}
    states = {c.name: c.state for c in decision.containers}
    assert states == {"app": State.UP_TO_DATE, "side": State.DRIFTED}


def test_every_state_and_action_is_reached_by_some_row() -> None:
    """Every workload state (the README lists them) and every action has a row above."""
    assert {row[3] for row in ROWS} == set(State)
    assert {row[4] for row in ROWS} == set(Action)


def test_every_state_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [s.value for s in State if f"`{s.value}`" not in readme]
    assert not missing, f"README does not list workload states {missing}"
