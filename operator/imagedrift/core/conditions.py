"""kstatus conditions (Ready / Reconciling / Stalled) as plain dicts for ``status.conditions``.

``lastTransitionTime`` changes only when a condition's status flips, so `kubectl wait` and
GitOps health checks see stable objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: Any) -> datetime | None:
    """An RFC 3339 time as Kubernetes and registries write it (``Z`` or ``z`` or an offset;
    any number of fractional digits, as Go's RFC3339Nano writes), timezone-aware; None when
    it is not one. A time without a zone is none: it could not be compared with one."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def merge(
    previous: Sequence[Mapping[str, Any]],
    wanted: Sequence[Condition],
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The new condition list: ``wanted`` ones set, the kstatus ones not wanted removed
    (kstatus reads an absent Reconciling/Stalled as False), others kept."""
    old = {c.get("type"): c for c in previous}
    wanted_types = {c.type for c in wanted}
    out: list[dict[str, Any]] = []
    for cond in wanted:
        status = "True" if cond.status else "False"
        before = old.get(cond.type) or {}
        changed = before.get("status") != status
        out.append(
            {
                "type": cond.type,
                "status": status,
                "observedGeneration": generation,
                "reason": cond.reason,
                "message": cond.message[:1024],
                "lastTransitionTime": timestamp(now)
                if changed
                else before.get("lastTransitionTime", timestamp(now)),
            }
        )
    for kind, kept in old.items():
        if kind not in wanted_types and kind not in (READY, RECONCILING, STALLED):
            out.append(dict(kept))
    return out


def stalled(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, False, reason, message), Condition(STALLED, True, reason, message)]


def reconciling(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, False, reason, message), Condition(RECONCILING, True, reason, message)]


def ready(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, True, reason, message)]


def not_ready(reason: str, message: str) -> list[Condition]:
    """A fault we retry by ourselves (registry down, auth refused): not Stalled."""
    return [Condition(READY, False, reason, message)]
