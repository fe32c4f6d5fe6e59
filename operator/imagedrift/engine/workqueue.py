"""A work queue in the mould of client-go's: deduplicated keys, delayed adds, per-key
rate-limited retries, and a key is never handed to two workers at once.

- ``add(key)``: queue it now (a no-op when it is already queued; when a worker holds it,
  it is queued again once that worker is ``done``, so no change is lost).
- ``add_after(key, seconds)``: queue it later; an earlier due time wins.
- ``retry(key)``: queue it after its own exponential backoff (1 s, 2 s, 4 s … capped);
  ``forget(key)`` resets the backoff once the key succeeded.
- ``get(timeout)``: the next key (None on timeout or shutdown); ``done(key)`` when finished.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable


class WorkQueue:
    def __init__(
        self,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._base = base_delay
        self._max = max_delay
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._again: set[Hashable] = set()  # added while processing
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # the earliest pending due time per key
        self._failures: dict[Hashable, int] = {}
        self._seq = itertools.count()
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: Hashable) -> None:
        if self._closed or key in self._queued:
            return
        if key in self._processing:
            self._again.add(key)
            return
        self._queued.add(key)
        self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            due = self._clock() + seconds
            if self._closed or self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._cond.notify()

    def backoff(self, key: Hashable) -> float:
        """Count a failure of ``key``; the delay its next try should wait."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        return float(min(self._base * (2 ** min(failures, 20)), self._max))

    def retry(self, key: Hashable) -> float:
        """Queue ``key`` after its backoff; returns the delay chosen."""
        delay = self.backoff(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def _promote(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one is due."""
        now = self._clock()
        while self._delayed:
            due, _, key = self._delayed[0]
            if self._due.get(key) != due:
                heapq.heappop(self._delayed)  # superseded by an earlier due time
                continue
            if due > now:
                return due - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self._add(key)
        return None

    def get(self, timeout: float | None = None) -> Hashable | None:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait = self._promote()
                if self._queue:
                    key = self._queue.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                if self._closed:
                    return None
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._add(key)

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._due)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
