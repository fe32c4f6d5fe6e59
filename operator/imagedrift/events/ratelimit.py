"""Requests per source for the push-event receiver: a token bucket per client address.

Pure: the caller passes ``now`` (monotonic seconds); there is no clock, no I/O and no lock
(the receiver calls it from its one event-loop thread). A source may send ``burst``
requests at once and ``rate`` a second after that; a refused request takes nothing.

The table stays bounded. A bucket that has filled up again behaves exactly like no bucket,
so idle sources are dropped as they are found; and when ``max_sources`` are tracked the one
seen least recently goes. That source starts over with a full bucket: more lenient, never
stricter, and it takes more distinct addresses than the receiver has connections to get
there.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_SOURCES: Final = 10_000


@dataclass(frozen=True)
class Bucket:
    """``tokens`` left at time ``at``."""

    tokens: float
    at: float


def take(bucket: Bucket | None, now: float, rate: float, burst: float) -> tuple[Bucket, float]:
    """Take one token from ``bucket`` (``None``: a full one) at ``now``.

    Returns the bucket afterwards and 0.0 when the request is granted, else the seconds
    until a token will be there (nothing is taken then). A clock that went backwards
    refills nothing.
    """
    if bucket is None:
        tokens = burst
    else:
        tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / rate


def source_key(address: str) -> str:
    """The bucket an address spends from: the address itself for IPv4, its /64 for IPv6
    (one host is routinely given a whole /64), the IPv4 address for IPv4-mapped IPv6.
    Anything that is not an IP address is its own key."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SourceLimits:
    """Token buckets by source key, at most ``max_sources`` of them."""

    def __init__(self, rate: float, burst: float, *, max_sources: int = MAX_SOURCES) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be positive, burst and max_sources at least 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, source: str, now: float) -> float:
        """Take one request from ``source``: 0.0 when granted, else the seconds to wait."""
        bucket, wait = take(self._buckets.pop(source, None), now, self.rate, self.burst)
        self._forget_idle(now)
        while len(self._buckets) >= self.max_sources:
            self._buckets.popitem(last=False)
        self._buckets[source] = bucket
        return wait

    def _forget_idle(self, now: float) -> None:
        # Oldest first; stopping at the first busy one keeps each call O(1) amortized.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if oldest.tokens + max(0.0, now - oldest.at) * self.rate < self.burst:
                return
            self._buckets.popitem(last=False)
