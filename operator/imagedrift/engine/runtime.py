"""When each policy is checked, and what one tick produces. No kopf here: the wiring calls
``Runtime.tick`` on every timer tick and applies the outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagedrift.core import conditions as cond
from imagedrift.core.conditions import Condition
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.core.workloads import selected
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.ports import Event
from imagedrift.errors import InvalidSpec

MAX_ERROR_BACKOFF = 300.0


@dataclass
class TickResult:
    status: dict[str, Any]
    conditions: list[Condition]
    events: list[Event] = field(default_factory=list)


@dataclass
class _Schedule:
    next_due: float = 0.0
    generation: int = -1
    failures: int = 0


class Runtime:
    def __init__(
        self,
        checker: PolicyChecker,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.checker = checker
        self._clock = clock
        self._now = now
        self._schedules: dict[str, _Schedule] = {}
        self._specs: dict[str, PolicySpec] = {}
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now()

    def wake_for_image(self, image: str) -> list[str]:
        """A push of ``image`` (``repo:tag`` with or without host) makes every policy whose
        base matches due now, past its interval. Returns the policy names woken."""
        try:
            pushed = ImageRef.parse(image)
        except ValueError:
            return []
        woken = []
        with self._lock:
            for name, spec in self._specs.items():
                base = spec.base.image
                same_repo = pushed.repository == base.repository and pushed.registry in (
                    base.registry,
                    "docker.io",
                )
                if same_repo and (
                    not pushed.tag or not spec.base.tag or pushed.tag == spec.base.tag
                ):
                    self.checker.bases.invalidate(spec.base.key)
                    self._schedules.setdefault(name, _Schedule()).next_due = 0.0
                    woken.append(name)
        return woken

    def forget(self, name: str) -> None:
        with self._lock:
            self._schedules.pop(name, None)
            self._specs.pop(name, None)

    def due(self, name: str, generation: int) -> bool:
        with self._lock:
            schedule = self._schedules.setdefault(name, _Schedule())
            return schedule.generation != generation or self._clock() >= schedule.next_due

    def tick(
        self, name: str, body: Mapping[str, Any], workloads: Iterable[Mapping[str, Any]]
    ) -> TickResult | None:
        """Check ``name`` if it is due; None when it is not (nothing to write)."""
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        if not self.due(name, generation):
            return None
        previous = dict(body.get("status") or {})
        try:
            policy = parse_policy(name, body.get("spec") or {})
        except InvalidSpec as exc:
            self._reschedule(name, generation, 3600.0, failed=False)
            with self._lock:
                self._specs.pop(name, None)
            was = {c.get("type"): c for c in previous.get("conditions") or []}.get("Stalled") or {}
            events = (
                []
                if was.get("message") == str(exc)
                else [Event(body, "Warning", "InvalidSpec", str(exc))]
            )
            status = {"observedGeneration": generation, "lastError": str(exc)}
            return TickResult(status, cond.stalled("InvalidSpec", str(exc)), events)
        with self._lock:
            self._specs[name] = policy
        mine = [w for w in workloads if selected(w, policy)]
        result = self.checker.check(policy, body, mine, self._now(), self._clock())
        from imagedrift.rebuild.hook import after_check  # rebuild triggers, status.rebuild

        after_check(self.checker, policy, body, result, self._now())
        failed = any(
            c.type == cond.READY and not c.status and c.reason != "RolloutInProgress"
            for c in result.conditions
        )
        self._reschedule(name, generation, result.next_check_in, failed=failed)
        return TickResult(result.status, result.conditions, result.events)

    def _reschedule(self, name: str, generation: int, delay: float, *, failed: bool) -> None:
        with self._lock:
            schedule = self._schedules.setdefault(name, _Schedule())
            schedule.generation = generation
            schedule.failures = schedule.failures + 1 if failed else 0
            if failed:  # back off on repeated faults, but never slower than the interval or 5m
                delay = min(
                    delay * (2 ** min(schedule.failures - 1, 6)), max(delay, MAX_ERROR_BACKOFF)
                )
            schedule.next_due = self._clock() + delay
