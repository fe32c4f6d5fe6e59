"""Which drifted workloads may start rolling now: waves, pauses, windows, concurrency.

Everything is derived from what the workloads' own state records say about the current
base digest (done, rolling), so the plan survives operator restarts without extra state:

- Waves are cumulative sizes over the workloads to roll for this base digest
  (done + rolling + waiting): ``[{count: 1}, {percent: 50}, {percent: 100}]`` over 5 is
  1, 3, 5. A last wave short of everyone is followed by an implicit 100% wave.
- A wave starts only when every earlier rollout is done (healthy) and ``pause`` seconds
  have passed since the last of them finished.
- ``max_concurrent`` caps the rollouts in flight; maintenance windows gate starts (not
  the following of rollouts already started).
- Order is by workload key, so the canary is the first name and the choice is stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from imagedrift.core.spec import MaintenanceWindow, RolloutSpec, Wave


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...]  # keys that may start now
    held: dict[str, str] = field(default_factory=dict)  # key -> why it waits
    wave: int = 0  # 1-based index of the wave in progress (0 when nothing to roll)
    waves: int = 0  # how many waves in all
    message: str = ""
    retry_at: datetime | None = None  # when a held workload may start (pause end, window)


def wave_sizes(waves: Sequence[Wave], total: int) -> list[int]:
    """Cumulative target counts of each wave over ``total`` workloads (non-decreasing,
    the last one ``total``)."""
    if total <= 0:
        return []
    sizes: list[int] = []
    for wave in waves:
        size = wave.count if wave.count else math.ceil(total * wave.percent / 100)
        size = min(max(size, sizes[-1] if sizes else 1), total)
        if not sizes or size > sizes[-1]:
            sizes.append(size)
    if not sizes or sizes[-1] < total:
        sizes.append(total)
    return sizes


def _window_open(window: MaintenanceWindow, now: datetime) -> tuple[bool, datetime]:
    """(is ``now`` inside the window, when it opens or opened)."""
    zone = ZoneInfo(window.time_zone)
    local = now.astimezone(zone)
    # The latest start at or before now: is it still open?
    previous = croniter(window.schedule, local + timedelta(seconds=1)).get_prev(datetime)
    if local < previous + timedelta(seconds=window.duration):
        return True, previous
    upcoming = croniter(window.schedule, local).get_next(datetime)
    return False, upcoming


def in_window(
    windows: Sequence[MaintenanceWindow], now: datetime
) -> tuple[bool, str, datetime | None]:
    """Whether ``now`` falls in one of ``windows`` (always, when there are none), why,
    and when the next one opens (None when open)."""
    if not windows:
        return True, "no maintenance windows: any time", None
    opens: list[datetime] = []
    for window in windows:
        open_, when = _window_open(window, now)
        if open_:
            return (
                True,
                f"inside maintenance window {window.schedule!r} ({window.time_zone})",
                None,
            )
        opens.append(when)
    soonest = min(opens, key=lambda d: d.timestamp())
    return False, f"outside maintenance windows; next opens at {soonest.isoformat()}", soonest


def plan(
    waiting: Sequence[str],
    rolling: Sequence[str],
    done: Sequence[tuple[str, datetime]],
    spec: RolloutSpec,
    now: datetime,
) -> Plan:
    """Which of ``waiting`` may start at ``now``.

    ``rolling`` are in flight and ``done`` finished healthy (with when) for the current
    base digest; failed ones are not passed: a failed candidate is rejected before planning.
    """
    order = sorted(waiting)
    total = len(order) + len(rolling) + len(done)
    sizes = wave_sizes(spec.waves, total)
    started = len(rolling) + len(done)
    if not order:
        return Plan((), {}, len(sizes) if sizes else 0, len(sizes), "nothing waiting to roll")

    def hold(reason: str, wave: int, retry_at: datetime | None = None) -> Plan:
        return Plan((), dict.fromkeys(order, reason), wave, len(sizes), reason, retry_at)

    wave = next(i for i, size in enumerate(sizes) if size > started)  # exists: order nonempty
    label = f"wave {wave + 1} of {len(sizes)}"
    open_, why, opens = in_window(spec.maintenance_windows, now)
    if not open_:
        return hold(why, wave + 1, opens)
    if wave > 0 and started == sizes[wave - 1]:
        # At a wave boundary: the previous waves must be healthy, then the pause must pass.
        if rolling:
            return hold(
                f"{label} waits for {len(rolling)} rollout(s) of the previous wave to be healthy",
                wave + 1,
            )
        healthy_since = max(when for _, when in done)
        ready_at = healthy_since + timedelta(seconds=spec.pause_between_waves)
        if now < ready_at:
            return hold(
                f"{label} starts at {ready_at.isoformat()} "
                f"(pause of {spec.pause_between_waves:g}s after the previous wave)",
                wave + 1,
                ready_at,
            )
    room = sizes[wave] - started
    if spec.max_concurrent:
        room = min(room, spec.max_concurrent - len(rolling))
    chosen = tuple(order[: max(room, 0)])
    held: dict[str, str] = {}
    for key in order[len(chosen) :]:
        if spec.max_concurrent and len(rolling) + len(chosen) >= spec.max_concurrent:
            held[key] = f"maxConcurrent {spec.max_concurrent} rollouts in flight"
        else:
            held[key] = f"waits for a later wave ({label} is {sizes[wave]} workload(s))"
    return Plan(chosen, held, wave + 1, len(sizes), f"{label}: starting {len(chosen)}")
