"""The per-container rows a check reports, and when they are worth a write to the workload.

The same rows fill ``status.workloads.items`` and the workload's own
``imagedrift.io/status`` annotation (what ``kubectl`` and the CLI show on the workload).
Every annotation write bumps a Deployment's generation and is copied onto its
ReplicaSets, so the annotation is written only when something an SRE acts on changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imagedrift.core.decide import Decision, State, WorkloadObservation
from imagedrift.core.workloads import STATUS_ANNOTATION, RolloutRecord

MAX_REASON = 300


def workload_detail(policy: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the workload's ``imagedrift.io/status`` annotation says (the CLI reads it)."""
    return {"policy": policy, "containers": rows}


def rows(
    key: str, observation: WorkloadObservation, record: RolloutRecord | None, decision: Decision
) -> list[dict[str, Any]]:
    """The per-container rows of one workload (status items and its annotation)."""
    obs = {c.name: c for c in observation.containers}
    if not decision.containers and decision.state is not State.UP_TO_DATE:
        return [
            {
                "workload": key,
                "container": "",
                "image": "",
                "state": str(decision.state),
                "reason": decision.reason[:MAX_REASON],
            }
        ]
    out: list[dict[str, Any]] = []
    for row in decision.containers:
        seen = obs.get(row.name)
        target = record.target.get(row.name, "") if record else ""
        item: dict[str, Any] = {
            "workload": key,
            "container": row.name,
            "image": seen.image if seen else target,
            "state": str(row.state),
            "reason": row.reason[:MAX_REASON],
        }
        rolled = row.state is State.ROLLING_OUT or (row.state is State.UP_TO_DATE and not seen)
        if record and target and rolled:
            # What the rollout writes: the same row at the patch, while it is followed
            # and once it completed, so none of those checks rewrites the workload.
            item["image"] = target
            if row.state is State.UP_TO_DATE:
                item["digest"] = record.digests()[row.name]
            item["baseDigest"] = record.base_digest
        else:
            if seen and seen.digest:
                item["digest"] = seen.digest
            if seen and seen.base_digest:
                item["baseDigest"] = seen.base_digest
        out.append(item)
    return out


def gist(detail: Mapping[str, Any], moving: bool = False) -> Any:
    """What of a status note is worth a write: every field, except the reason of an
    up-to-date container (it only rewords why the container is fine), and, while a rollout
    is ``moving``, any reason (its progress)."""
    kept = [
        {
            k: v
            for k, v in r.items()
            if not (k == "reason" and (moving or r.get("state") == State.UP_TO_DATE))
        }
        for r in detail.get("containers") or []
    ]
    return (detail.get("policy"), kept)


def note(
    policy: str,
    mine: list[dict[str, Any]],
    decision: Decision,
    current: Mapping[str, Any],
    patching: bool,
    moving: bool,
    remember: bool,
) -> dict[str, str] | None:
    """The workload's annotations to write for its rows (``mine``), or None: nothing new.

    ``current``: the note it carries; ``patching``: the check writes it anyway (the note
    joins that patch); ``moving``: a rollout or its rollback is followed (its progress
    stays in the policy's status); ``remember``: a row carries a running digest that only
    this note keeps (a tag-referenced container whose pods could not say what they run).
    A workload always up to date carries no note at all (no write per workload at fleet
    scale); a fault or a Conflict is no news to record on it (two policies selecting one
    workload would replace each other's notes forever).
    """
    if decision.state in (State.ERROR, State.CONFLICT):
        return None
    rows_ = [{k: v for k, v in r.items() if k != "workload"} for r in mine]
    wanted = workload_detail(policy, rows_)
    if gist(current, moving and not patching) == gist(wanted, moving and not patching):
        return None
    quiet = all(r["state"] == State.UP_TO_DATE for r in rows_)
    if not current and quiet and not remember and not patching:
        return None
    return {STATUS_ANNOTATION: json.dumps(wanted, sort_keys=True, separators=(",", ":"))}
