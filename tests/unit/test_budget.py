"""The per-registry request budget (a token bucket), with an injected clock."""

from __future__ import annotations

import pytest

from imagedrift.errors import RegistryThrottled
from imagedrift.registry.budget import RequestBudget


def test_burst_then_refill_per_host() -> None:
    now = [0.0]
    exhausted: list[str] = []
    budget = RequestBudget(60, burst=3, clock=lambda: now[0], on_exhausted=exhausted.append)
    assert [budget.wait_for("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.wait_for("a") == pytest.approx(1.0)  # 60/min: one token a second
    assert budget.wait_for("b") == 0.0  # another registry has its own bucket
    now[0] = 0.5
    with pytest.raises(RegistryThrottled) as refused:
        budget.spend("a")
    assert refused.value.retry_after == pytest.approx(0.5) and "60/min" in str(refused.value)
    assert exhausted == ["a"]
    now[0] = 1.0
    budget.spend("a")  # refilled
    now[0] = 100.0
    assert [budget.wait_for("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # never above burst
    assert budget.wait_for("a") > 0


def test_default_burst_is_ten_seconds_worth() -> None:
    budget = RequestBudget(600, clock=lambda: 0.0)
    assert sum(1 for _ in range(200) if budget.wait_for("r") == 0.0) == 100
    small = RequestBudget(6, clock=lambda: 0.0)
    assert sum(1 for _ in range(50) if small.wait_for("r") == 0.0) == 10  # the floor
    with pytest.raises(ValueError):
        RequestBudget(0)
