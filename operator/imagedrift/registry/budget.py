"""A request budget per registry host, so imagedrift never spends a registry's rate limit.

A token bucket: ``per_minute`` requests a minute on average, bursts up to ``burst``. A
request over budget is refused *before* it is sent, as ``RegistryThrottled`` with the time
until the next token; the engine then treats it exactly like a 429 (delay, never fail).
ACR's published limits are per minute (ReadOps: Basic 1,000, Standard 3,000, Premium
10,000), so the default stays under the smallest tier with room for other clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from imagedrift.errors import RequestBudgetSpent

DEFAULT_PER_MINUTE = 600.0
MIN_BURST = 10.0
# A refused request comes back when this many requests are allowed (or the whole burst, if
# smaller), not one: a retry after one token spent it on the tag HEAD, the manifest read
# after it was refused again, and a base that moved while the budget was spent was never
# read (the HEAD, the manifest or index, a platform manifest, a config: progress each time,
# and manifests read once stay cached by digest).
RETRY_REQUESTS = 4.0


class RequestBudget:
    def __init__(
        self,
        per_minute: float = DEFAULT_PER_MINUTE,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_exhausted: Callable[[str], None] | None = None,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        # 10s worth, and never less than one check's worth of requests in a row (tag, index,
        # platform manifests, configs): a smaller bucket could starve a check forever.
        self.burst = burst if burst is not None else max(MIN_BURST, per_minute / 6)
        self._clock = clock
        self._on_exhausted = on_exhausted
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)
        self._lock = threading.Lock()

    def wait_for(self, host: str, *, then: float = 1.0) -> float:
        """Take one request from ``host``'s budget: 0.0 when granted, else the seconds
        until ``then`` requests would be (nothing is taken then)."""
        rate = self.per_minute / 60.0
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(host, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[host] = (tokens - 1.0, now)
                return 0.0
            self._buckets[host] = (tokens, now)
            return (then - tokens) / rate

    def spend(self, host: str) -> None:
        """Take one request or raise RequestBudgetSpent (not sent: no registry was hit),
        whose ``retry_after`` is when ``RETRY_REQUESTS`` requests are allowed again."""
        wait = self.wait_for(host, then=min(self.burst, RETRY_REQUESTS))
        if wait:
            if self._on_exhausted is not None:
                self._on_exhausted(host)
            raise RequestBudgetSpent(
                f"{host}: request budget of {self.per_minute:g}/min spent; "
                f"next requests in {wait:.1f}s",
                registry=host,
                retry_after=wait,
            )
