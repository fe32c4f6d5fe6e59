"""The per-registry request budget (a token bucket), with an injected clock."""

from __future__ import annotations

import pytest

from imagedrift.errors import RegistryThrottled
from imagedrift.registry.budget import RETRY_REQUESTS, RequestBudget


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
    # Told to come back when a lookup's worth is there (the burst of 3 here), not one.
    assert refused.value.retry_after == pytest.approx(2.5) and "60/min" in str(refused.value)
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


def test_a_refused_request_comes_back_when_a_lookup_can_progress() -> None:
    """One token per retry went to the tag HEAD, and the manifest read after it was refused
    again, for ever: the retry waits for RETRY_REQUESTS tokens (a HEAD, a manifest, a
    platform manifest, a config)."""
    now = [0.0]
    budget = RequestBudget(30, burst=10, clock=lambda: now[0])
    assert all(budget.wait_for("r") == 0.0 for _ in range(10))
    with pytest.raises(RegistryThrottled) as refused:
        budget.spend("r")
    assert refused.value.retry_after == pytest.approx(RETRY_REQUESTS * 2)  # 0.5 a second
    now[0] = refused.value.retry_after
    assert sum(1 for _ in range(20) if budget.wait_for("r") == 0.0) == RETRY_REQUESTS
