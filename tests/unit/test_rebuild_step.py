"""Rebuild triggers fire off the controller's workers (``engine.rebuild_step`` with
``workers`` > 0), and when a ledger that says ``Triggering`` is fired again
(``core.rebuild.should_trigger``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core.conditions import timestamp
from imagedrift.core.rebuild import (
    FAILED,
    STALE_TRIGGERING,
    TRIGGERED,
    TRIGGERING,
    RebuildSpec,
    WebhookSpec,
    should_trigger,
)
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.engine.check import CheckResult
from imagedrift.engine.rebuild_step import RebuildStep
from imagedrift.rebuild.triggers import RebuildRequest, TriggerResult

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
WEBHOOK = RebuildSpec(webhook=WebhookSpec("https://127.0.0.1:1/hook", "hook"))


def ledger(outcome: str, minutes_ago: float, digest: str = D2) -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"rebuild": {"baseDigest": digest, "outcome": outcome, "triggeredAt": timestamp(at)}}


@pytest.mark.parametrize(
    ("label", "status", "expected"),
    [
        ("never fired", {}, True),
        ("the base moved since", ledger(TRIGGERED, 1, D1), True),
        ("triggered for this digest", ledger(TRIGGERED, 100), False),
        ("still triggering", ledger(TRIGGERING, 1), False),
        ("triggering, never answered", ledger(TRIGGERING, STALE_TRIGGERING / 60 + 1), True),
        ("failed, backoff not over", ledger(FAILED, 0.5), False),
        ("failed, backoff over", ledger(FAILED, 2), True),
    ],
)
def test_when_to_fire(label: str, status: dict[str, Any], expected: bool) -> None:
    assert should_trigger(status, D2, WEBHOOK, drifted=3, now=NOW) is expected


class SlowTrigger:
    """A trigger that answers only when told to (an ACR Task run scheduling slowly)."""

    name = "webhook"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fired = 0

    def trigger(self, request: RebuildRequest) -> TriggerResult:
        self.fired += 1
        assert self.release.wait(10), "never released"
        return TriggerResult("webhook", "run-1", TRIGGERED, "webhook: 202 Accepted")


def body() -> dict[str, Any]:
    spec = {
        "base": {"image": "reg.example/base", "tag": "1"},
        "rebuild": {"webhook": {"url": "https://127.0.0.1:1/hook", "secretRef": {"name": "h"}}},
    }
    return {"metadata": {"name": "py", "uid": "u1", "generation": 1}, "spec": spec, "status": {}}


def result() -> CheckResult:
    status = {"base": {"image": "reg.example/base", "tag": "1", "digest": D2}}
    drifted = [{"workload": "deployment/shop/w", "container": "app", "image": "x"}]
    return CheckResult(status, [], [], None, drifted=drifted)


def test_a_slow_trigger_never_holds_the_check() -> None:
    slow = SlowTrigger()
    step = RebuildStep(None, make_trigger=lambda kind, spec, policy: slow, workers=1)
    done = threading.Event()
    step.on_done = lambda name: done.set()
    policy: PolicySpec = parse_policy("py", body()["spec"])
    doc = body()
    try:
        first = result()
        step.apply(policy, doc, first, NOW)  # returns while the trigger is still firing
        assert first.status["rebuild"]["outcome"] == TRIGGERING and first.events == []
        doc["status"]["rebuild"] = first.status["rebuild"]
        again = result()
        step.apply(policy, doc, again, NOW + timedelta(seconds=5))
        assert "rebuild" not in again.status and again.events == []
        slow.release.set()
        assert done.wait(10), "the step never said the trigger answered"
        answered = result()
        step.apply(policy, doc, answered, NOW + timedelta(seconds=10))
        assert answered.status["rebuild"]["outcome"] == TRIGGERED
        assert answered.status["rebuild"]["runId"] == "run-1"
        assert [e.reason for e in answered.events] == ["RebuildTriggered"]
        doc["status"]["rebuild"] = answered.status["rebuild"]
        later = result()
        step.apply(policy, doc, later, NOW + timedelta(seconds=15))
        assert later.events == [] and slow.fired == 1  # said once, fired once
    finally:
        slow.release.set()
        step.close()
