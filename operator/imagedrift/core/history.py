"""The lineage in ``status.lineage``: base digest -> app digest -> verdict -> rollouts.

Entries are frozen values (``LineageEntry`` with its ``RolloutRow``s), newest first; every
function returns a new lineage. ``from_status`` and ``to_status`` translate the status's
list of dicts, whose shape is the API. Bounded: at most ``limit`` entries and
``MAX_ROLLOUTS`` rollouts each, so status never outgrows etcd's object size however long a
policy lives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from imagedrift.core.records import CandidateStatus
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase
from imagedrift.core.workloads import RolloutRecord

MAX_ROLLOUTS = 100
RESTORED = "restored from the workload's rollout record"


@dataclass(frozen=True)
class RolloutRow:
    """One rollout of the entry's app digest on one workload's container."""

    workload: str
    container: str
    previous_image: str
    result: str  # a core.rollout.Phase value, or Overridden / RolledBack
    reason: str
    started_at: str
    finished_at: str = ""
    rollback: str = ""  # a RolledBack rollout's rollback: its phase
    commit: str = ""  # a rollout by commit: the commit that set the image (GitOps write-back)
    rollback_commit: str = ""  # ... and the commit that restored the previous one
    pull_request: str = ""  # the pull request that proposed it (its web URL)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.workload, self.container, self.started_at

    @property
    def outcome(self) -> tuple[str, ...]:
        """What a later record of the same rollout may change."""
        return self.result, self.rollback, self.commit, self.rollback_commit, self.pull_request

    @classmethod
    def from_status(cls, row: Mapping[str, Any]) -> RolloutRow:
        return cls(
            str(row.get("workload", "")),
            str(row.get("container", "")),
            str(row.get("previousImage", "")),
            str(row.get("result", "")),
            str(row.get("reason", "")),
            str(row.get("startedAt", "")),
            str(row.get("finishedAt", "")),
            str(row.get("rollback", "")),
            str(row.get("commit", "")),
            str(row.get("rollbackCommit", "")),
            str(row.get("pullRequest", "")),
        )

    def to_status(self) -> dict[str, str]:
        row = {
            "workload": self.workload,
            "container": self.container,
            "previousImage": self.previous_image,
            "result": self.result,
            "reason": self.reason,
            "startedAt": self.started_at,
        }
        if self.finished_at:
            row["finishedAt"] = self.finished_at
        if self.rollback:
            row["rollback"] = self.rollback
        if self.commit:
            row["commit"] = self.commit
        if self.rollback_commit:
            row["rollbackCommit"] = self.rollback_commit
        if self.pull_request:
            row["pullRequest"] = self.pull_request
        return row


@dataclass(frozen=True)
class LineageEntry:
    """A candidate app digest on a base digest: how it was judged, where it was rolled."""

    base_digest: str
    app: str
    app_digest: str
    tag: str
    verdict: str  # Passed | Rejected | Pending
    reasons: tuple[str, ...]
    validated_at: str
    rollouts: tuple[RolloutRow, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.base_digest, self.app_digest

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> LineageEntry:
        return cls(
            str(entry.get("baseDigest", "")),
            str(entry.get("app", "")),
            str(entry.get("appDigest", "")),
            str(entry.get("tag", "")),
            str(entry.get("verdict", "")),
            tuple(str(r) for r in entry.get("reasons") or ()),
            str(entry.get("validatedAt", "")),
            tuple(RolloutRow.from_status(r) for r in entry.get("rollouts") or ()),
        )

    def to_status(self) -> dict[str, Any]:
        return {
            "baseDigest": self.base_digest,
            "app": self.app,
            "appDigest": self.app_digest,
            "tag": self.tag,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "validatedAt": self.validated_at,
            "rollouts": [r.to_status() for r in self.rollouts],
        }


Lineage = tuple[LineageEntry, ...]


def verdict_word(passed: bool, pending: bool) -> str:
    """A candidate's verdict as the lineage, ``status.candidate`` and ``plan`` say it."""
    if pending:
        return "Pending"
    return "Passed" if passed else "Rejected"


def from_status(entries: Sequence[Mapping[str, Any]]) -> Lineage:
    return tuple(LineageEntry.from_status(e) for e in entries)


def to_status(lineage: Sequence[LineageEntry]) -> list[dict[str, Any]]:
    return [e.to_status() for e in lineage]


def record_verdict(
    lineage: Sequence[LineageEntry],
    *,
    base_digest: str,
    app: str,
    app_digest: str,
    tag: str,
    verdict: str,
    reasons: Sequence[str],
    at: str,
    limit: int,
) -> Lineage:
    """Add or refresh the entry for (base_digest, app_digest); keeps its rollouts."""
    for i, entry in enumerate(lineage):
        if entry.key == (base_digest, app_digest):
            if entry.verdict != verdict or entry.reasons != tuple(reasons):
                entry = replace(entry, verdict=verdict, reasons=tuple(reasons), validated_at=at)
            return (*lineage[:i], entry, *lineage[i + 1 :])[:limit]
    added = LineageEntry(base_digest, app, app_digest, tag, verdict, tuple(reasons), at)
    return (added, *lineage)[:limit]


def record_rollout(
    lineage: Sequence[LineageEntry],
    *,
    base_digest: str,
    app_digest: str,
    row: RolloutRow,
    app: str = "",
    tag: str = "",
) -> Lineage:
    """Insert or update ``row`` (by workload, container and start) under its entry.

    When the entry is missing and ``app`` is given, it is restored from the workload's own
    rollout record: an operator that died after patching but before writing status must
    not leave the rollout out of the lineage. (A rolled-out candidate had passed its gates.)
    """
    entries = tuple(lineage)
    if app and not any(e.key == (base_digest, app_digest) for e in entries):
        restored = LineageEntry(
            base_digest, app, app_digest, tag, "Passed", (RESTORED,), row.started_at
        )
        entries = (restored, *entries)
    for i, entry in enumerate(entries):
        if entry.key != (base_digest, app_digest):
            continue
        rows = list(entry.rollouts)
        for j, existing in enumerate(rows):
            if existing.key == row.key:
                rows[j] = row
                break
        else:
            rows.append(row)
        entry = replace(entry, rollouts=tuple(rows[-MAX_ROLLOUTS:]))
        return (*entries[:i], entry, *entries[i + 1 :])
    return entries


def newly_rejected(lineage: Sequence[LineageEntry], base_digest: str, digest: str) -> bool:
    """Is no entry yet saying ``digest`` is rejected on ``base_digest`` (an Event goes once)?"""
    return not any(e.key == (base_digest, digest) and e.verdict == "Rejected" for e in lineage)


def reject(lineage: Sequence[LineageEntry], base_digest: str, digest: str, why: str) -> Lineage:
    """The entry of a candidate whose rollout failed (``why``) says so."""
    return tuple(
        replace(e, verdict="Rejected", reasons=(*e.reasons, f"rollout: {why}"))
        if e.key == (base_digest, digest)
        else e
        for e in lineage
    )


def sync_rollout(
    lineage: Sequence[LineageEntry], workload: str, record: RolloutRecord, base_digest: str
) -> Lineage:
    """The lineage says of ``workload``'s rollout what its own ``record`` says.

    The only way rollouts enter the lineage: after a check's patches landed, and after a
    lost status write, when the next check restores the rollout from the record (never
    half-recorded). An entry of an older base that the limit dropped is not brought back.
    """
    entries = tuple(lineage)
    digests = record.digests()
    for container, image in record.target.items():
        digest = digests[container]
        entry = next((e for e in entries if e.key == (record.base_digest, digest)), None)
        if entry is None and record.base_digest != base_digest:
            continue
        key = (workload, container, record.started_at)
        now = next((r for r in (entry.rollouts if entry else ()) if r.key == key), None)
        git = record.git
        commits = (git.commit, git.rollback_commit, git.pull_request) if git else ("", "", "")
        wanted = (record.phase, record.rollback, *commits)
        if now is not None and now.outcome == wanted:
            continue
        running = record.phase == Phase.PROGRESSING.value
        row = RolloutRow(
            workload,
            container,
            record.previous.get(container, ""),
            record.phase,
            record.reason or ("patched" if running else RESTORED),
            record.started_at,
            record.finished_at,
            record.rollback,
            *commits,
        )
        entries = record_rollout(
            entries,
            base_digest=record.base_digest,
            app_digest=digest,
            row=row,
            app=ImageRef.parse(image).name,
            tag=record.tags.get(container, ""),
        )
    return entries


def candidate_of(lineage: Sequence[LineageEntry], base_digest: str) -> CandidateStatus | None:
    """The candidate as the lineage remembers it: the newest entry on ``base_digest``. A check
    that searched for no candidate (every workload already on the base) still says which one
    was chosen and how it was judged, instead of emptying ``status.candidate``."""
    for e in lineage:
        if e.base_digest == base_digest:
            return CandidateStatus(e.app, e.app_digest, e.tag, e.verdict, e.reasons)
    return None
