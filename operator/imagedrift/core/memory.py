"""What a check recalls before it looks: rejections, imagedrift's rollouts, smoke tests.

The policy's status is one memory and the workloads' own records are the other; either
may have lost a write (the operator died, the API failed), so each is completed from the
other: a candidate that failed on this base stays rejected, and a rollout whose
annotation a ``kubectl rollout undo`` removed is still known from the lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagedrift.core.decide import State
from imagedrift.core.history import Lineage, LineageEntry, from_status
from imagedrift.core.records import Rejection, SmokeRecord
from imagedrift.core.rollout import Phase
from imagedrift.core.workloads import RolloutRecord, WorkloadState


@dataclass(frozen=True)
class Rolled:
    """What the lineage says imagedrift did to one workload: its newest standing rollout
    (as a record) and the candidates someone replaced after it."""

    record: RolloutRecord | None = None
    overridden: tuple[str, ...] = ()


@dataclass(frozen=True)
class Memory:
    lineage: Lineage = ()  # status.lineage, as values
    rejected: Mapping[str, Rejection] = field(default_factory=dict)  # app digest -> why
    rolled: Mapping[str, Rolled] = field(default_factory=dict)  # workload key -> from lineage
    smoke_tests: Mapping[str, SmokeRecord] = field(default_factory=dict)  # by digest


def rolled(lineage: Iterable[LineageEntry]) -> dict[str, Rolled]:
    """workload -> what the lineage remembers of imagedrift's rollouts on it."""
    newest: dict[str, tuple[str, RolloutRecord]] = {}
    overridden: dict[str, list[str]] = {}
    for entry in lineage:
        target = f"{entry.app}@{entry.app_digest}"
        for row in entry.rollouts:
            workload, started = row.workload, row.started_at
            if row.result == State.OVERRIDDEN.value:
                overridden.setdefault(workload, []).append(entry.app_digest)
            if row.result not in (Phase.COMPLETE.value, Phase.PROGRESSING.value):
                continue
            if workload in newest and newest[workload][0] >= started:
                continue
            record = RolloutRecord(
                id=f"{entry.base_digest}|{entry.app_digest}",
                base_digest=entry.base_digest,
                target={row.container: target},
                previous={row.container: row.previous_image},
                tags={row.container: entry.tag},
                started_at=started,
                phase=Phase.COMPLETE.value,  # only its target matters: what should be there
                reason=row.reason,
                finished_at=row.finished_at,
            )
            newest[workload] = (started, record)
    names = newest.keys() | overridden.keys()
    return {
        n: Rolled(newest[n][1] if n in newest else None, tuple(overridden.get(n, ())))
        for n in names
    }


def remembered(state: WorkloadState, rolled: Rolled | None) -> WorkloadState:
    """The workload's record, completed from the lineage when its annotation was lost."""
    if rolled is None:
        return state
    overridden = tuple(dict.fromkeys((*state.overridden, *rolled.overridden)))
    record = state.rollout
    if record is None or (rolled.record and rolled.record.started_at > record.started_at):
        record = rolled.record
    return WorkloadState(state.tags, record, state.rejected, overridden)


def recall(
    status: Mapping[str, Any],
    base_digest: str,
    records: Sequence[tuple[str, WorkloadState]],
) -> Memory:
    """What the policy's ``status`` and the workloads' own ``records`` (key, decoded state)
    remember for a check on ``base_digest``."""
    waves = status.get("waves") or {}
    rejected: dict[str, Rejection] = {}
    if waves.get("baseDigest") == base_digest:
        rejected = {
            str(r.get("digest")): Rejection.from_status(r) for r in waves.get("rejected") or []
        }
    # A lost status write must not be the only memory of a candidate that failed here.
    for key, state in records:
        record = state.rollout
        if record and record.phase == Phase.ROLLED_BACK.value and record.base_digest == base_digest:
            for container, digest in record.digests().items():
                rejected.setdefault(
                    digest,
                    Rejection(
                        digest,
                        record.target[container],
                        key,
                        f"rolled back on {key}: {record.reason}",
                        record.finished_at,
                    ),
                )
    smoke = {
        str(t.get("digest")): SmokeRecord.from_status(t)
        for t in status.get("smokeTests") or []
        if t.get("digest")
    }
    lineage = from_status(status.get("lineage") or [])
    return Memory(lineage, rejected, rolled(lineage), smoke)
