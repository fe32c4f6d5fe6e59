"""Leader election over one ``coordination.k8s.io/v1`` Lease, as client-go does it.

Pure: what the Lease says, what this replica saw of it and when, in; the one write to make
(or none) and whether this replica may work, out. The elector in ``engine.leadership`` reads
and writes the Lease and calls these.

Expiry is judged on this replica's own monotonic clock, from the moment it saw the record
last change, never by comparing the Lease's ``renewTime`` with the local wall clock: two
nodes' clocks may disagree by more than the lease, a local stopwatch cannot. A leader stops
working once it could not renew for ``renew_deadline`` (shorter than the lease), so it has
stopped before any standby may take over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from imagedrift.core.conditions import parse_timestamp


@dataclass(frozen=True)
class LeaseSettings:
    duration: float = 15.0  # a standby takes over after this long without a renewal seen
    renew_deadline: float = 10.0  # the leader steps down after this long without renewing
    retry: float = 2.0  # how often every replica looks at the Lease

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError("lease settings need 0 < retry < renew_deadline < duration")

    @classmethod
    def from_duration(cls, duration: float) -> LeaseSettings:
        """client-go's proportions (15 s / 10 s / 2 s) scaled to ``duration``."""
        return cls(duration, duration * 2 / 3, duration * 2 / 15)


@dataclass(frozen=True)
class Record:
    """The Lease's spec: who holds it, for how long, since when."""

    holder: str = ""  # "" = released, anyone may take it now
    duration: float = 0.0
    acquired: datetime | None = None
    renewed: datetime | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Record:
        def when(key: str) -> datetime | None:
            value = spec.get(key)
            return parse_timestamp(str(value)) if value else None

        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            acquired=when("acquireTime"),
            renewed=when("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "leaseTransitions": self.transitions,
        }
        for key, value in (("acquireTime", self.acquired), ("renewTime", self.renewed)):
            if value is not None:
                spec[key] = _micro_time(value)
        return spec


@dataclass(frozen=True)
class Seen:
    """The record as this replica last saw it, and when (monotonic seconds) it last changed."""

    record: Record
    since: float


def observe(before: Seen | None, record: Record, clock: float) -> Seen:
    """Restart the stopwatch only when the record changed (a renewal moves ``renewed``)."""
    if before is not None and before.record == record:
        return before
    return Seen(record, clock)


class Action(Enum):
    WAIT = "wait"  # someone else holds a live lease
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours: renew it
    TAKE = "take"  # released or expired: take it over


@dataclass(frozen=True)
class Step:
    action: Action
    write: Record | None
    reason: str


def next_step(
    seen: Seen | None, me: str, now: datetime, clock: float, settings: LeaseSettings
) -> Step:
    """The one write to make. ``seen`` is None when the Lease does not exist."""
    if seen is None:
        return Step(Action.CREATE, _held_by(me, now, settings, Record(), taking=True), "no lease")
    record = seen.record
    if record.holder == me:
        return Step(Action.RENEW, _held_by(me, now, settings, record, taking=False), "ours")
    if not record.holder:
        return Step(Action.TAKE, _held_by(me, now, settings, record, taking=True), "released")
    # The holder's own duration counts (it may run other settings); ours is the fallback.
    lasts = record.duration or settings.duration
    quiet = clock - seen.since
    if quiet < lasts:
        return Step(Action.WAIT, None, f"held by {record.holder} ({quiet:.0f}s since renewal)")
    reason = f"{record.holder} did not renew for {quiet:.0f}s (lease {lasts:.0f}s)"
    return Step(Action.TAKE, _held_by(me, now, settings, record, taking=True), reason)


def still_leading(renewed_at: float | None, clock: float, settings: LeaseSettings) -> bool:
    """A leader keeps working only while its last successful renewal is recent enough."""
    return renewed_at is not None and clock - renewed_at < settings.renew_deadline


def released(record: Record, now: datetime) -> Record:
    """What a leader writes when it stops cleanly, so a standby need not wait out the lease."""
    return replace(record, holder="", duration=1, renewed=now)


def _held_by(
    me: str, now: datetime, settings: LeaseSettings, before: Record, *, taking: bool
) -> Record:
    return Record(
        holder=me,
        duration=settings.duration,
        acquired=now if taking or before.acquired is None else before.acquired,
        renewed=now,
        transitions=before.transitions + (1 if taking and before.holder else 0),
    )


def _micro_time(value: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
