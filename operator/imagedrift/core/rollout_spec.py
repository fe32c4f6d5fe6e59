"""``spec.rollout``: which workloads a policy governs and how it rolls them, as frozen values.

``parse_rollout`` reads the dict; anything the schema let through but a rollout cannot
follow raises ``InvalidSpec`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imagedrift.core.durations import parse_duration
from imagedrift.errors import InvalidSpec

POLICY_LABEL = "imagedrift.io/policy"  # what a workload carries when no selector is given


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics (In, NotIn, Exists, DoesNotExist)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class Wave:
    """One wave: ``count`` workloads, or ``percent`` of the workloads to roll (cumulative)."""

    count: int = 0
    percent: int = 0


@dataclass(frozen=True)
class MaintenanceWindow:
    schedule: str  # cron expression of window starts
    duration: float  # seconds
    time_zone: str = "UTC"


@dataclass(frozen=True)
class RolloutSpec:
    selector: LabelSelector
    namespaces: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    suspend: bool = False
    verify_timeout: float = 600.0
    settle_time: float = 30.0  # new pods stay Ready this long before a rollout is complete
    waves: tuple[Wave, ...] = ()
    pause_between_waves: float = 0.0
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    max_concurrent: int = 0  # 0: unlimited
    patch_gitops_managed: bool = False  # patch workloads a GitOps controller manages?


def parse_rollout(raw: Mapping[str, Any], policy_name: str) -> RolloutSpec:
    """Read ``spec.rollout`` of the policy ``policy_name``; raise InvalidSpec naming the
    field that cannot be used."""
    rollout = RolloutSpec(
        selector=_selector(raw.get("selector"), policy_name),
        namespaces=tuple(raw.get("namespaces") or ()),
        containers=tuple(raw.get("containers") or ()),
        suspend=bool(raw.get("suspend", False)),
        verify_timeout=parse_duration(str(raw.get("verifyTimeout") or "10m")),
        settle_time=parse_duration(str(raw.get("settleTime") or "30s")),
        waves=_waves(raw.get("waves") or ()),
        pause_between_waves=parse_duration(str(raw.get("pauseBetweenWaves") or "0s")),
        maintenance_windows=_windows(raw.get("maintenanceWindows") or ()),
        patch_gitops_managed=bool(raw.get("patchGitOpsManaged", False)),
        max_concurrent=int(raw.get("maxConcurrent") or 0),
    )
    if rollout.settle_time >= rollout.verify_timeout:
        raise InvalidSpec(
            f"spec.rollout.settleTime ({rollout.settle_time:g}s) must be shorter than "
            f"spec.rollout.verifyTimeout ({rollout.verify_timeout:g}s): a rollout could "
            "never be complete in time"
        )
    return rollout


def _selector(raw: Mapping[str, Any] | None, policy_name: str) -> LabelSelector:
    if not raw:
        return LabelSelector({POLICY_LABEL: policy_name})
    expressions = tuple(
        (e["key"], e["operator"], tuple(e.get("values") or ()))
        for e in raw.get("matchExpressions") or ()
    )
    return LabelSelector(dict(raw.get("matchLabels") or {}), expressions)


def _waves(raw: Any) -> tuple[Wave, ...]:
    waves = []
    for i, wave in enumerate(raw):
        count, percent = int(wave.get("count") or 0), int(wave.get("percent") or 0)
        if bool(count) == bool(percent) or count < 0 or not 0 <= percent <= 100:
            raise InvalidSpec(
                f"spec.rollout.waves[{i}]: set exactly one of count (>=1) or percent (1..100)"
            )
        waves.append(Wave(count, percent))
    return tuple(waves)


def _windows(raw: Any) -> tuple[MaintenanceWindow, ...]:
    from croniter import croniter  # local: only policies with windows need it

    windows = []
    for i, window in enumerate(raw):
        where = f"spec.rollout.maintenanceWindows[{i}]"
        schedule = str(window.get("schedule") or "")
        if not croniter.is_valid(schedule):
            raise InvalidSpec(f"{where}.schedule: {schedule!r} is not a cron expression")
        zone = str(window.get("timeZone") or "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSpec(f"{where}.timeZone: unknown time zone {zone!r}") from None
        duration = parse_duration(str(window.get("duration") or ""))
        if duration <= 0:
            raise InvalidSpec(f"{where}.duration: must be longer than 0s")
        windows.append(MaintenanceWindow(schedule, duration, zone))
    return tuple(windows)
