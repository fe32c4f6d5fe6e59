"""The lineage record in ``status.lineage``: base digest -> app digest -> verdict -> rollouts.

Bounded: at most ``limit`` entries (newest first) and ``MAX_ROLLOUTS`` rollouts each, so
status never outgrows etcd's object size however long a policy lives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase
from imagedrift.core.workloads import RolloutRecord

MAX_ROLLOUTS = 100
RESTORED = "restored from the workload's rollout record"


def _key(entry: Mapping[str, Any]) -> tuple[str, str]:
    return str(entry.get("baseDigest", "")), str(entry.get("appDigest", ""))


def record_verdict(
    history: Sequence[Mapping[str, Any]],
    *,
    base_digest: str,
    app: str,
    app_digest: str,
    tag: str,
    verdict: str,
    reasons: Sequence[str],
    at: str,
    limit: int,
) -> list[dict[str, Any]]:
    """Add or refresh the entry for (base_digest, app_digest); keeps its rollouts."""
    entries = [dict(e) for e in history]
    for entry in entries:
        if _key(entry) == (base_digest, app_digest):
            if entry.get("verdict") != verdict or list(entry.get("reasons") or []) != list(reasons):
                entry.update(verdict=verdict, reasons=list(reasons), validatedAt=at)
            return entries[:limit]
    entry = {
        "baseDigest": base_digest,
        "app": app,
        "appDigest": app_digest,
        "tag": tag,
        "verdict": verdict,
        "reasons": list(reasons),
        "validatedAt": at,
        "rollouts": [],
    }
    return [entry, *entries][:limit]


def record_rollout(
    history: Sequence[Mapping[str, Any]],
    *,
    base_digest: str,
    app_digest: str,
    workload: str,
    container: str,
    previous_image: str,
    result: str,
    reason: str,
    started_at: str,
    finished_at: str = "",
    app: str = "",
    tag: str = "",
    rollback: str = "",
) -> list[dict[str, Any]]:
    """Insert or update the rollout of ``workload``/``container`` under its lineage entry.

    When the entry is missing and ``app`` is given, it is restored from the workload's own
    rollout record: an operator that died after patching but before writing status must
    not leave the rollout out of the lineage. (A rolled-out candidate had passed its gates.)
    """
    entries = [dict(e) for e in history]
    if app and not any(_key(e) == (base_digest, app_digest) for e in entries):
        entries.insert(
            0,
            {
                "baseDigest": base_digest,
                "app": app,
                "appDigest": app_digest,
                "tag": tag,
                "verdict": "Passed",
                "reasons": [RESTORED],
                "validatedAt": started_at,
                "rollouts": [],
            },
        )
    for entry in entries:
        if _key(entry) != (base_digest, app_digest):
            continue
        rollouts = [dict(r) for r in entry.get("rollouts") or []]
        row = {
            "workload": workload,
            "container": container,
            "previousImage": previous_image,
            "result": result,
            "reason": reason,
            "startedAt": started_at,
        }
        if finished_at:
            row["finishedAt"] = finished_at
        if rollback:
            row["rollback"] = rollback  # the rolled-back rollout's rollback: its phase
        for i, existing in enumerate(rollouts):
            if (existing.get("workload"), existing.get("container"), existing.get("startedAt")) == (
                workload,
                container,
                started_at,
            ):
                rollouts[i] = row
                break
        else:
            rollouts.append(row)
        entry["rollouts"] = rollouts[-MAX_ROLLOUTS:]
        break
    return entries


def newly_rejected(history: Sequence[Mapping[str, Any]], base_digest: str, digest: str) -> bool:
    """Is no entry yet saying ``digest`` is rejected on ``base_digest`` (an Event goes once)?"""
    return not any(
        _key(e) == (base_digest, digest) and e.get("verdict") == "Rejected" for e in history
    )


def reject(
    history: Sequence[Mapping[str, Any]], base_digest: str, digest: str, why: str
) -> list[dict[str, Any]]:
    """The entry of a candidate whose rollout failed (``why``) says so."""
    entries = [dict(e) for e in history]
    for entry in entries:
        if _key(entry) == (base_digest, digest):
            entry["verdict"] = "Rejected"
            entry["reasons"] = [*(entry.get("reasons") or []), f"rollout: {why}"]
    return entries


def sync_rollout(
    history: Sequence[Mapping[str, Any]], workload: str, record: RolloutRecord, base_digest: str
) -> list[dict[str, Any]]:
    """The lineage says of ``workload``'s rollout what its own ``record`` says.

    The only way rollouts enter the lineage: after a check's patches landed, and after a
    lost status write, when the next check restores the rollout from the record (never
    half-recorded). An entry of an older base that the limit dropped is not brought back.
    """
    entries: Sequence[Mapping[str, Any]] = history
    for container, image in record.target.items():
        digest = image.rpartition("@")[2]
        key = (record.base_digest, digest)
        entry = next((e for e in entries if _key(e) == key), None)
        if entry is None and record.base_digest != base_digest:
            continue
        row: Mapping[str, Any] = next(
            (
                r
                for r in (entry or {}).get("rollouts") or []
                if (r.get("workload"), r.get("container"), r.get("startedAt"))
                == (workload, container, record.started_at)
            ),
            {},
        )
        if row.get("result") == record.phase and row.get("rollback", "") == record.rollback:
            continue
        entries = record_rollout(
            entries,
            base_digest=record.base_digest,
            app_digest=digest,
            workload=workload,
            container=container,
            previous_image=record.previous.get(container, ""),
            result=record.phase,
            reason=record.reason
            or ("patched" if record.phase == Phase.PROGRESSING.value else RESTORED),
            started_at=record.started_at,
            finished_at=record.finished_at,
            app=ImageRef.parse(image).name,
            tag=record.tags.get(container, ""),
            rollback=record.rollback,
        )
    return [dict(e) for e in entries]
