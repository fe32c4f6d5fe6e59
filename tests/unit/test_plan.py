"""Scenario tests of one check's plan (imagedrift.core.plan) and of what stands once its
writes were made (``settle``): the sequencing no single decision shows."""

from __future__ import annotations

from datetime import UTC, datetime

from imagedrift.core.decide import (
    Action,
    CandidateView,
    ContainerObservation,
    State,
    WorkloadObservation,
)
from imagedrift.core.memory import Memory, recall, remembered
from imagedrift.core.plan import Applied, WorkloadFacts, WriteResult, plan, settle
from imagedrift.core.rollout import Phase, Progress
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.core.workloads import STATE_ANNOTATION, RolloutRecord, WorkloadRef, WorkloadState

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BASE_V1, BASE_V2 = "sha256:" + "b1" * 32, "sha256:" + "b2" * 32
A1, A2 = "sha256:" + "a1" * 32, "sha256:" + "a2" * 32
OLD = "reg.example/app:1.0.0"
NEW = f"reg.example/app:1.0.1@{A2}"
CANDIDATE = CandidateView(NEW, A2, "1.0.1", True, False, ("lineage: on the new base",))


def policy(**rollout: object) -> PolicySpec:
    return parse_policy(
        "p", {"base": {"image": "reg.example/base", "tag": "1"}, "rollout": dict(rollout)}
    )


def drifted(name: str) -> WorkloadFacts:
    """A workload on the old base with a validated candidate: ``decide`` says ROLL."""
    container = ContainerObservation(
        "app", OLD, A1, False, "built on an old base", BASE_V1, CANDIDATE
    )
    ref = WorkloadRef("Deployment", "shop", name)
    observation = WorkloadObservation(str(ref), (container,), images={"app": OLD})
    return WorkloadFacts(ref, "7", WorkloadState(), observation, {"app": OLD})


def rolling(name: str, phase: Phase) -> WorkloadFacts:
    """A workload imagedrift patched to the candidate, its rollout now at ``phase``."""
    ref = WorkloadRef("Deployment", "shop", name)
    record = RolloutRecord(
        id=f"{BASE_V2}|{A2}",
        base_digest=BASE_V2,
        target={"app": NEW},
        previous={"app": OLD},
        tags={"app": "1.0.1"},
        started_at="2026-12-07T11:58:00Z",
        phase=Phase.PROGRESSING.value,
        previous_digests={"app": A1},
    )
    state = WorkloadState({"app": "1.0.1"}, record)
    observation = WorkloadObservation(
        str(ref), (), state, progress=Progress(phase, f"rollout {phase}"), images={"app": NEW}
    )
    return WorkloadFacts(ref, "9", state, observation)


def test_a_canary_that_fails_rejects_the_candidate_before_anything_else_starts() -> None:
    spec = policy(waves=[{"count": 1}, {"percent": 100}])
    facts = [rolling("a-canary", Phase.FAILED), drifted("b"), drifted("c")]
    planned = plan(spec, BASE_V2, Memory(), facts, [], NOW)
    canary, b, c = planned.steps
    assert canary.decision.action is Action.ROLL_BACK and canary.patch is not None
    assert set(planned.rejected) == {A2}
    for step in (b, c):
        # Decided again against the rejection: nothing starts on the failed candidate.
        assert step.decision.action is Action.NONE
        assert step.decision.state is State.DRIFTED
        assert "candidate rejected for this base" in step.decision.reason
        assert step.patch is None or "spec" not in step.patch
    assert [n.reason for n in planned.notices] == ["CandidateRejected"]


def test_without_a_failure_the_planner_starts_the_first_wave_only() -> None:
    spec = policy(waves=[{"count": 1}, {"percent": 100}])
    planned = plan(spec, BASE_V2, Memory(), [drifted("a"), drifted("b")], [], NOW)
    a, b = planned.steps
    assert a.decision.action is Action.ROLL and a.patch is not None and "spec" in a.patch
    assert b.decision.state is State.WAITING and b.patch is not None and "spec" not in b.patch


def test_a_409_on_the_outcome_keeps_the_workload_rolling_out() -> None:
    facts = [rolling("a", Phase.COMPLETE)]
    planned = plan(policy(), BASE_V2, Memory(), facts, [], NOW)
    assert planned.steps[0].decision.action is Action.FINISH
    outcome = settle(planned, {"deployment/shop/a": WriteResult(Applied.CONFLICTED)}, BASE_V2)
    step = outcome.steps[0]
    assert step.decision.state is State.ROLLING_OUT
    assert step.state.rollout is not None and step.state.rollout.phase == "Progressing"
    assert outcome.notices == ()  # RolloutComplete is posted once it is recorded
    # The lineage still says Progressing: never half-recorded.
    assert [r.result for e in outcome.history for r in e.rollouts] == ["Progressing"]


def test_a_409_on_the_rollout_patch_starts_nothing() -> None:
    planned = plan(policy(), BASE_V2, Memory(), [drifted("a")], [], NOW)
    outcome = settle(planned, {"deployment/shop/a": WriteResult(Applied.CONFLICTED)}, BASE_V2)
    assert outcome.steps[0].state.rollout is None
    assert all(not e.rollouts for e in outcome.history)
    assert outcome.notices == ()


def test_a_landed_outcome_is_recorded_and_announced() -> None:
    planned = plan(policy(), BASE_V2, Memory(), [rolling("a", Phase.COMPLETE)], [], NOW)
    outcome = settle(planned, {"deployment/shop/a": WriteResult(Applied.LANDED)}, BASE_V2)
    assert [n.reason for n in outcome.notices] == ["RolloutComplete"]
    assert [r.result for e in outcome.history for r in e.rollouts] == ["Complete"]
    patch = planned.steps[0].patch
    assert patch is not None and STATE_ANNOTATION in patch["metadata"]["annotations"]


def test_a_lost_annotation_is_rebuilt_from_the_lineage() -> None:
    """``kubectl rollout undo`` restored the old template and with it removed imagedrift's
    record: the lineage still knows the rollout, so the workload is Overridden (not rolled
    to the same candidate again)."""
    lineage = [
        {
            "baseDigest": BASE_V2,
            "app": "reg.example/app",
            "appDigest": A2,
            "tag": "1.0.1",
            "verdict": "Passed",
            "reasons": [],
            "rollouts": [
                {
                    "workload": "deployment/shop/a",
                    "container": "app",
                    "previousImage": OLD,
                    "result": "Complete",
                    "startedAt": "2026-12-07T11:00:00Z",
                    "finishedAt": "2026-12-07T11:01:00Z",
                }
            ],
        }
    ]
    memory = recall({"lineage": lineage}, BASE_V2, [("deployment/shop/a", WorkloadState())])
    undone = drifted("a")
    state = remembered(WorkloadState(), memory.rolled.get("deployment/shop/a"))
    assert state.rollout is not None and state.rollout.target == {"app": f"reg.example/app@{A2}"}
    observation = WorkloadObservation(
        undone.key, undone.observation.containers, state, images={"app": OLD}
    )
    facts = [WorkloadFacts(undone.ref, "7", state, observation, {"app": OLD})]
    planned = plan(policy(), BASE_V2, memory, facts, memory.lineage, NOW)
    step = planned.steps[0]
    assert step.decision.action is Action.YIELD and step.decision.state is State.OVERRIDDEN
    assert step.patch is not None and "spec" not in step.patch  # the record only


def test_a_lost_status_write_is_restored_from_the_workloads_record() -> None:
    """The operator patched the workload and died before writing the policy's status: the
    next check puts the rollout into the lineage from the workload's own record."""
    planned = plan(policy(), BASE_V2, Memory(), [rolling("a", Phase.PROGRESSING)], [], NOW)
    outcome = settle(planned, {}, BASE_V2)
    (entry,) = outcome.history
    assert (entry.app_digest, entry.reasons) == (
        A2,
        ("restored from the workload's rollout record",),
    )
    assert [r.result for r in entry.rollouts] == ["Progressing"]


def test_a_rejection_recorded_on_a_workload_survives_a_lost_status() -> None:
    record = RolloutRecord(
        id="x",
        base_digest=BASE_V2,
        target={"app": NEW},
        previous={"app": OLD},
        tags={},
        started_at="2026-12-07T11:00:00Z",
        phase=Phase.ROLLED_BACK.value,
        reason="crashed",
        finished_at="2026-12-07T11:05:00Z",
    )
    memory = recall({}, BASE_V2, [("deployment/shop/a", WorkloadState({}, record))])
    assert memory.rejected[A2].reason == "rolled back on deployment/shop/a: crashed"
    planned = plan(policy(), BASE_V2, memory, [drifted("b")], [], NOW)
    assert planned.steps[0].decision.action is Action.NONE


def test_ten_workloads_waiting_on_one_smoke_test_are_one_candidate_validating() -> None:
    pending = CandidateView(NEW, A2, "1.0.1", False, True, ("smoke: Job running",))
    facts = []
    for i in range(10):
        f = drifted(f"w{i}")
        (c,) = f.observation.containers
        pending_c = ContainerObservation(
            c.name, c.image, c.digest, False, c.lineage_reason, c.base_digest, pending
        )
        obs = WorkloadObservation(f.key, (pending_c,), images={"app": OLD})
        facts.append(WorkloadFacts(f.ref, "7", WorkloadState(), obs, {"app": OLD}))
    planned = plan(policy(), BASE_V2, Memory(), facts, [], NOW)
    assert planned.validating == frozenset({A2})
    assert all(s.decision.state is State.WAITING for s in planned.steps)
    assert planned.candidate is not None and planned.candidate.verdict == "Pending"


def up_to_date(name: str, idle: bool) -> WorkloadFacts:
    """A tag-referenced workload on the current base (its digest resolved from the tag)."""
    container = ContainerObservation("app", OLD, A2, True, "on the current base", BASE_V2)
    ref = WorkloadRef("Deployment", "shop", name)
    observation = WorkloadObservation(str(ref), (container,), images={"app": OLD})
    return WorkloadFacts(ref, "7", WorkloadState(), observation, {"app": OLD}, idle=idle)


def test_a_running_digest_is_kept_only_where_pods_run_it() -> None:
    """Scaled to zero, nothing runs what the tag meant: no note, no write (a fleet of new
    Deployments at replicas 0 would otherwise be written once each at first sight)."""
    planned = plan(
        policy(), BASE_V2, Memory(), [up_to_date("idle", True), up_to_date("busy", False)], [], NOW
    )
    idle, busy = planned.steps
    assert idle.patch is None
    assert (
        busy.patch is not None and "imagedrift.io/status" in busy.patch["metadata"]["annotations"]
    )
