"""The lineage record in ``status.lineage``: base digest -> app digest -> verdict -> rollouts.

Bounded: at most ``limit`` entries (newest first) and ``MAX_ROLLOUTS`` rollouts each, so
status never outgrows etcd's object size however long a policy lives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_ROLLOUTS = 100


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
                "reasons": ["restored from the workload's rollout record"],
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


def candidate_status(
    app: str, digest: str, tag: str, verdict: str, reasons: Sequence[str]
) -> dict[str, Any]:
    """``status.candidate``: the candidate ``app:tag`` (``digest``) and how it was judged."""
    return {
        "image": f"{app}:{tag}",
        "digest": digest,
        "tag": tag,
        "verdict": verdict,
        "reasons": list(reasons),
    }


def candidate_of(history: Sequence[Mapping[str, Any]], base_digest: str) -> dict[str, Any]:
    """``status.candidate`` as the lineage remembers it: the newest entry on ``base_digest``
    ({} when none). A check that searched for no candidate (every workload already on the
    base) still says which one was chosen and how it was judged, instead of emptying it."""
    for entry in history:
        if entry.get("baseDigest") == base_digest:
            return candidate_status(
                str(entry.get("app", "")),
                str(entry.get("appDigest", "")),
                str(entry.get("tag", "")),
                str(entry.get("verdict", "")),
                entry.get("reasons") or [],
            )
    return {}
