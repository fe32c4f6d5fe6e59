"""When policies are checked: intervals, spec changes, push events, backoff, invalid specs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from imagedrift.core import conditions as cond
from imagedrift.engine.caches import BaseWatcher
from imagedrift.engine.check import CheckResult
from imagedrift.engine.runtime import Runtime

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeChecker:
    def __init__(self) -> None:
        self.bases = BaseWatcher()
        self.calls: list[str] = []
        self.fail = False

    def check(
        self, policy: Any, body: Any, workloads: Any, now: datetime, clock: float
    ) -> CheckResult:
        self.calls.append(policy.name)
        if self.fail:
            return CheckResult({}, cond.not_ready("RegistryUnavailable", "down"), [], 10.0)
        return CheckResult({}, cond.ready("UpToDate", ""), [], policy.base.interval)


def body(
    generation: int = 1, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec = spec or {"base": {"image": "r.io/base/python", "tag": "3.12", "interval": "60s"}}
    return {"metadata": {"generation": generation}, "spec": spec, "status": status or {}}


def make() -> tuple[Runtime, FakeChecker, list[float]]:
    clock = [100.0]
    checker = FakeChecker()
    runtime = Runtime(checker, clock=lambda: clock[0], now=lambda: NOW)  # type: ignore[arg-type]
    return runtime, checker, clock


def test_interval_and_spec_changes() -> None:
    runtime, checker, clock = make()
    assert runtime.tick("p", body(), []) is not None
    assert runtime.tick("p", body(), []) is None  # not due yet
    clock[0] += 59
    assert runtime.tick("p", body(), []) is None
    clock[0] += 2
    assert runtime.tick("p", body(), []) is not None
    assert runtime.tick("p", body(generation=2), []) is not None  # a spec change checks at once
    assert checker.calls == ["p", "p", "p"]


def test_push_event_wakes_matching_policies_only() -> None:
    runtime, _, _ = make()
    runtime.tick("p", body(), [])
    other = {"base": {"image": "r.io/base/node", "tag": "20", "interval": "60s"}}
    runtime.tick("q", body(spec=other), [])
    assert runtime.wake_for_image("r.io/base/python:3.12") == ["p"]
    assert runtime.wake_for_image("r.io/base/python:3.11") == []
    assert runtime.tick("p", body(), []) is not None
    assert runtime.tick("q", body(spec=other), []) is None


def test_failures_back_off_and_recover() -> None:
    runtime, checker, clock = make()
    checker.fail = True
    delays = []
    for _ in range(4):
        start = clock[0]
        assert runtime.tick("p", body(), []) is not None
        for _ in range(1000):  # bounded: find when it is due again
            clock[0] += 1
            if runtime.due("p", 1):
                break
        delays.append(clock[0] - start)
    assert delays == [10, 20, 40, 80]
    checker.fail = False
    runtime.tick("p", body(), [])
    clock[0] += 61
    assert runtime.due("p", 1)


def test_invalid_spec_is_stalled_with_one_event() -> None:
    runtime, checker, _ = make()
    bad = {"base": {"image": "r.io/base", "tag": "1", "semverRange": "*"}}
    first = runtime.tick("p", body(spec=bad), [])
    assert first is not None and checker.calls == []
    assert {c.type: (c.status, c.reason) for c in first.conditions} == {
        "Ready": (False, "InvalidSpec"),
        "Stalled": (True, "InvalidSpec"),
    }
    assert [e.reason for e in first.events] == ["InvalidSpec"]
    status = {"conditions": [{"type": "Stalled", "message": first.status["lastError"]}]}
    again = runtime.tick("p", body(generation=2, spec=bad, status=status), [])
    assert again is not None and again.events == []
