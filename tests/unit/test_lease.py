"""Leader election: the pure decisions (``core.lease``) as a table, and the elector
(``engine.leadership``) over an in-memory Lease with two replicas, a crash and a flaky API.

The semantics are client-go's ``tools/leaderelection``: expiry is judged on the observer's
own clock from when it saw the record change, the leader gives up after the renew deadline,
a clean stop releases the lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core.lease import (
    Action,
    LeaseSettings,
    Record,
    Seen,
    next_step,
    observe,
    released,
    still_leading,
)
from imagedrift.engine.leadership import Elector
from imagedrift.errors import KubeConflict, KubeError

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
S = LeaseSettings()  # 15 s / 10 s / 2 s
OTHER = Record("b_2", 15, NOW, NOW, 3)


@pytest.mark.parametrize(
    ("seen", "clock", "action", "holder", "transitions", "why"),
    [
        (None, 0, Action.CREATE, "a_1", 0, "no lease"),
        (Seen(OTHER, 100), 100, Action.WAIT, None, None, "held by b_2"),
        (Seen(OTHER, 100), 114.9, Action.WAIT, None, None, "held by b_2"),
        (Seen(OTHER, 100), 115, Action.TAKE, "a_1", 4, "did not renew for 15s"),
        (Seen(Record("b_2", 40, NOW, NOW), 100), 130, Action.WAIT, None, None, "held by"),
        (Seen(Record("b_2", 0, NOW, NOW), 100), 116, Action.TAKE, "a_1", 1, "lease 15s"),
        (Seen(Record("", 1, NOW, NOW, 3), 100), 100, Action.TAKE, "a_1", 3, "released"),
        (Seen(Record("a_1", 15, NOW, NOW, 3), 100), 200, Action.RENEW, "a_1", 3, "ours"),
    ],
)
def test_next_step(
    seen: Seen | None,
    clock: float,
    action: Action,
    holder: str | None,
    transitions: int | None,
    why: str,
) -> None:
    step = next_step(seen, "a_1", NOW + timedelta(seconds=5), clock, S)
    assert step.action is action and why in step.reason
    if holder is None:
        assert step.write is None
    else:
        assert step.write is not None
        assert (step.write.holder, step.write.transitions) == (holder, transitions)
        assert step.write.renewed == NOW + timedelta(seconds=5)


def test_a_renewal_keeps_the_acquire_time_and_a_take_over_sets_it() -> None:
    ours = Record("a_1", 15, NOW, NOW, 2)
    renew = next_step(Seen(ours, 0), "a_1", NOW + timedelta(seconds=4), 4, S).write
    assert renew is not None and renew.acquired == NOW
    take = next_step(Seen(OTHER, 0), "a_1", NOW + timedelta(seconds=20), 20, S).write
    assert take is not None and take.acquired == NOW + timedelta(seconds=20)


def test_the_stopwatch_restarts_only_when_the_record_changes() -> None:
    first = observe(None, OTHER, 10)
    assert observe(first, OTHER, 50) is first, "an unchanged record keeps ageing"
    renewed = Record("b_2", 15, NOW, NOW + timedelta(seconds=2), 3)
    assert observe(first, renewed, 50).since == 50


def test_a_leader_works_only_within_its_renew_deadline() -> None:
    assert still_leading(100, 109.9, S)
    assert not still_leading(100, 110, S)
    assert not still_leading(None, 0, S)


def test_the_spec_round_trips_as_the_api_stores_it() -> None:
    record = Record("a_1", 15, NOW, NOW + timedelta(microseconds=5), 2)
    spec = record.to_spec()
    assert spec["renewTime"] == "2026-12-03T12:00:00.000005Z"
    assert Record.from_spec(spec) == record
    gone = released(record, NOW)
    assert gone.to_spec()["holderIdentity"] is None and gone.to_spec()["leaseDurationSeconds"] == 1
    assert Record.from_spec(gone.to_spec()).holder == ""


def test_settings_must_leave_room_between_renewal_and_take_over() -> None:
    assert LeaseSettings.from_duration(15) == LeaseSettings(15, 10, 2)
    with pytest.raises(ValueError, match="renew_deadline < duration"):
        LeaseSettings(10, 10, 2)


# -- the elector over an in-memory Lease ------------------------------------------------------


class FakeLeases:
    """One Lease with resourceVersion preconditions, as the API server keeps it."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.writes: list[str | None] = []

    def read_lease(self, name: str, timeout: float) -> tuple[dict[str, Any], str] | None:
        if self.down:
            raise KubeError("reading lease: timed out")
        return None if self.spec is None else (dict(self.spec), str(self.version))

    def write_lease(
        self, name: str, spec: Mapping[str, Any], resource_version: str | None, timeout: float
    ) -> str:
        if self.down:
            raise KubeError("writing lease: timed out")
        if (resource_version is None) != (self.spec is None) or (
            resource_version is not None and resource_version != str(self.version)
        ):
            raise KubeConflict("changed since it was read")
        self.spec, self.version = dict(spec), self.version + 1
        self.writes.append(spec.get("holderIdentity"))
        return str(self.version)


class Replica:
    def __init__(self, leases: FakeLeases, name: str, clock: list[float]) -> None:
        self.log: list[str] = []
        self.elector = Elector(
            leases,
            "imagedrift",
            name,
            S,
            on_lead=lambda: self.log.append("lead"),
            on_unlead=lambda: self.log.append("unlead"),
            clock=lambda: clock[0],
            now=lambda: NOW + timedelta(seconds=clock[0]),
        )


def test_one_of_two_replicas_leads_and_the_standby_takes_over_after_a_crash() -> None:
    leases, clock = FakeLeases(), [0.0]
    a, b = Replica(leases, "a", clock), Replica(leases, "b", clock)
    a.elector.tick()
    b.elector.tick()
    assert (
        a.log == ["lead"] and b.log == [] and leases.spec and leases.spec["holderIdentity"] == "a"
    )
    for _ in range(5):  # a renews, b keeps waiting
        clock[0] += 2
        a.elector.tick()
        b.elector.tick()
    assert b.log == [] and a.elector.leading
    # a is SIGKILLed: it renews no more. b waits out a whole lease from the last renewal it saw.
    waited = 0.0
    while not b.elector.leading and waited < 60:
        clock[0] += 2
        waited += 2
        b.elector.tick()
    assert b.log == ["lead"] and 14 <= waited <= 18
    assert leases.spec["holderIdentity"] == "b" and leases.spec["leaseTransitions"] == 1


def test_a_leader_that_cannot_renew_stops_before_anyone_may_take_over() -> None:
    leases, clock = FakeLeases(), [0.0]
    a = Replica(leases, "a", clock)
    a.elector.tick()
    leases.down = True
    stopped_at = None
    for _ in range(10):
        clock[0] += 2
        a.elector.tick()
        if not a.elector.leading and stopped_at is None:
            stopped_at = clock[0]
    assert a.log == ["lead", "unlead"]
    assert stopped_at is not None and stopped_at <= S.renew_deadline < S.duration
    leases.down = False
    a.elector.tick()
    assert a.log == ["lead", "unlead", "lead"], "it campaigns again once the API is back"


def test_a_clean_stop_releases_the_lease_so_the_standby_need_not_wait() -> None:
    leases, clock = FakeLeases(), [0.0]
    a, b = Replica(leases, "a", clock), Replica(leases, "b", clock)
    a.elector.tick()
    b.elector.tick()
    a.elector.stop()
    assert a.log == ["lead", "unlead"] and leases.spec and leases.spec["holderIdentity"] is None
    clock[0] += 2
    b.elector.tick()
    assert b.log == ["lead"]


class StaleReads(FakeLeases):
    """b's view: its read raced a's create and saw no Lease."""

    def __init__(self, real: FakeLeases) -> None:
        self.real = real

    def read_lease(self, name: str, timeout: float) -> tuple[dict[str, Any], str] | None:
        return None

    def write_lease(
        self, name: str, spec: Mapping[str, Any], resource_version: str | None, timeout: float
    ) -> str:
        return self.real.write_lease(name, spec, resource_version, timeout)


def test_losing_a_race_to_write_is_not_leading() -> None:
    leases, clock = FakeLeases(), [0.0]
    a = Replica(leases, "a", clock)
    b = Replica(StaleReads(leases), "b", clock)
    a.elector.tick()
    b.elector.tick()  # tries to create it too: 409
    assert (a.elector.leading, b.elector.leading) == (True, False)
    assert b.log == [] and leases.writes == ["a"]
