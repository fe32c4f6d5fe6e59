"""Table tests of what a check reports (core.report): the condition ladder, when to look
again, the counts, and which containers a rebuild request names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core import waves
from imagedrift.core.decide import (
    DRIFTED_STATES,
    Action,
    ContainerDecision,
    Decision,
    State,
    WorkloadObservation,
)
from imagedrift.core.plan import PolicyOutcome, PolicyPlan, Step, WorkloadFacts
from imagedrift.core.report import VALIDATING_INTERVAL, compose
from imagedrift.core.spec import parse_policy
from imagedrift.core.workloads import WorkloadRef, WorkloadState
from imagedrift.errors import RegistryThrottled

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BASE = "sha256:" + "b" * 64
POLICY = parse_policy("p", {"base": {"image": "reg.example/base", "tag": "1", "interval": "5m"}})


def step(name: str, state: State, action: Action = Action.NONE) -> Step:
    ref = WorkloadRef("Deployment", "shop", name)
    row = {"workload": str(ref), "container": "app", "image": "x", "state": str(state)}
    decision = Decision(state, f"{state} here", action, (ContainerDecision("app", state, ""),))
    facts = WorkloadFacts(ref, "1", WorkloadState(), WorkloadObservation(str(ref), ()))
    return Step(facts, WorkloadState(), decision, [{**row, "reason": "", "baseDigest": "b0"}])


def report(
    *states: State,
    held: dict[str, str] | None = None,
    validating: frozenset[str] = frozenset(),
    wait: RegistryThrottled | None = None,
    retry_at: datetime | None = None,
) -> Any:
    steps = tuple(step(f"w{i}", s) for i, s in enumerate(states))
    plan = waves.Plan((), held or {}, retry_at=retry_at, message="wave 2 of 2 waits")
    planned = PolicyPlan(steps, plan, (), None, {}, validating, ())
    outcome = PolicyOutcome(steps, (), ())
    return compose(POLICY, BASE, {}, planned, outcome, [], 1, NOW, wait)


@pytest.mark.parametrize(
    ("label", "kwargs", "states", "ready", "reason"),
    [
        ("all up to date", {}, (State.UP_TO_DATE,), "True", "UpToDate"),
        ("drifted", {}, (State.UP_TO_DATE, State.DRIFTED), "True", "WaitingForRebuild"),
        ("validating", {"validating": frozenset({"d"})}, (State.WAITING,), "True", "Validating"),
        (
            "held by waves",
            {"held": {"w1": "later wave"}},
            (State.WAITING,),
            "True",
            "RolloutWaiting",
        ),
        ("rolling out", {}, (State.ROLLING_OUT, State.DRIFTED), None, "RolloutInProgress"),
        (
            "an error outranks progress",
            {},
            (State.ERROR, State.ROLLING_OUT),
            "False",
            "RegistryUnavailable",
        ),
        (
            "throttled outranks everything",
            {"wait": RegistryThrottled("429", retry_after=7)},
            (State.ERROR,),
            None,
            "Throttled",
        ),
    ],
)
def test_the_condition_ladder(
    label: str, kwargs: dict[str, Any], states: tuple[State, ...], ready: str | None, reason: str
) -> None:
    composed = report(*states, **kwargs)
    first = composed.conditions[0]
    assert first.reason == reason
    if ready is not None:
        assert (first.type, "True" if first.status else "False") == ("Ready", ready)


def test_when_to_look_again() -> None:
    assert report(State.UP_TO_DATE).next_check_in is None  # only a change brings it back
    assert report(State.DRIFTED).next_check_in == POLICY.base.interval
    validating = report(State.WAITING, validating=frozenset({"d"}))
    assert validating.next_check_in == VALIDATING_INTERVAL
    assert report(State.ROLLING_OUT).next_check_in == min(10.0, POLICY.rollout.verify_timeout)
    later = report(State.WAITING, held={"w0": "window"}, retry_at=NOW + timedelta(seconds=42))
    assert later.next_check_in == 42
    throttled = report(State.ERROR, wait=RegistryThrottled("429", retry_after=7))
    assert throttled.next_check_in == 7 and throttled.fault == ""
    assert report(State.ERROR).fault == "RegistryUnavailable"  # the controller backs off


def test_a_rebuild_request_names_every_container_still_on_an_old_base() -> None:
    """Every drifted state, not the few a shorter list once named (Waiting, Overridden and
    ManagedByGitOps were left out)."""
    composed = report(*State)
    named = sorted(d["workload"] for d in composed.drifted)
    expected = sorted(
        str(WorkloadRef("Deployment", "shop", f"w{i}"))
        for i, s in enumerate(State)
        if s in DRIFTED_STATES
    )
    assert named == expected
    assert {State.WAITING, State.OVERRIDDEN, State.MANAGED_BY_GITOPS} <= DRIFTED_STATES
    assert composed.counts["drifted"] == len(expected)


def test_items_list_the_most_pressing_first() -> None:
    composed = report(State.DRIFTED, State.ROLLED_BACK, State.CONFLICT, State.ERROR)
    states = [i["state"] for i in composed.status["workloads"]["items"]]
    assert states == ["Error", "Conflict", "Drifted", "RolledBack"]
