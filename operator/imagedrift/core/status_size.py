"""Keep an ImagePolicy's status under a byte budget, whatever the fleet size.

The status carries counts, the current base, a bounded list of workloads needing
attention and the bounded lineage; per-workload detail lives on the workloads. ``fit``
trims what can be trimmed, oldest and least important first, until the JSON fits:
rollouts per lineage entry, then lineage entries, then the attention list, then reasons.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any


def size(status: Mapping[str, Any]) -> int:
    """Bytes of ``status`` as JSON (what the API server stores, near enough)."""
    return len(json.dumps(status, separators=(",", ":")).encode())


def _trim_rollouts(status: dict[str, Any], keep: int) -> None:
    for entry in status.get("lineage") or []:
        rollouts = entry.get("rollouts") or []
        if len(rollouts) > keep:
            entry["rolloutsOmitted"] = int(entry.get("rolloutsOmitted") or 0) + len(rollouts) - keep
            entry["rollouts"] = rollouts[-keep:] if keep else []


def fit(status: Mapping[str, Any], budget: int) -> dict[str, Any]:
    """A copy of ``status`` whose JSON is at most ``budget`` bytes (best effort: the
    counts, base and conditions are never dropped)."""
    out = copy.deepcopy(dict(status))
    if size(out) <= budget:
        return out
    for keep in (50, 20, 5, 1, 0):
        _trim_rollouts(out, keep)
        if size(out) <= budget:
            return out
    lineage = out.get("lineage") or []
    while len(lineage) > 1 and size(out) > budget:
        lineage.pop()
    workloads = out.get("workloads") or {}
    items = workloads.get("items") or []
    while items and size(out) > budget:
        items.pop()
        workloads["unlisted"] = int(workloads.get("unlisted") or 0) + 1
    for item in items:
        item["reason"] = str(item.get("reason", ""))[:80]
    return out
