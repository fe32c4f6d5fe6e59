"""What keeps registry traffic proportional to distinct images, not to workloads.

``ImageCache``: manifests by digest are immutable, so a resolved image is fetched once.
``BaseWatcher``: one lookup per distinct base reference per interval, however many
policies share it; concurrent callers for the same base wait for the one lookup.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.errors import RegistryThrottled
from imagedrift.registry.base import RegistryClient


class ImageCache:
    """LRU of ResolvedImage by (registry, repository, digest); bounded in entries."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._items: OrderedDict[tuple[str, str, str], ResolvedImage] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str, str], threading.Lock] = {}

    def get(self, client: RegistryClient, ref: ImageRef) -> ResolvedImage:
        """The image at ``ref`` (which must be pinned by digest)."""
        if not ref.digest:
            raise ValueError(f"{ref} is not pinned by digest")
        key = (ref.registry, ref.repository, ref.digest)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            flight = self._flights.setdefault(key, threading.Lock())
        # One fetch per digest: workers asking for the same image wait for the first.
        with flight:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                image = client.get_image(ref)
                with self._lock:
                    self._items[key] = image
                    while len(self._items) > self._max:
                        self._items.popitem(last=False)
            finally:
                with self._lock:
                    self._flights.pop(key, None)
            return image


@dataclass(frozen=True)
class BaseObservation:
    ref: ImageRef  # the tag that was resolved, pinned to its digest
    image: ResolvedImage
    fetched_at: float


FAILURE_MEMORY = 10.0  # seconds a failed base lookup answers for the policies that share it


class BaseWatcher:
    """Deduplicated base lookups keyed by ``BaseSpec.key``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, BaseObservation] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._stale: set[str] = set()
        self._failed: dict[str, tuple[float, Exception]] = {}
        self._guard = threading.Lock()

    def invalidate(self, key: str) -> None:
        """Make the next observe() of ``key`` ask the registry (a push event arrived)."""
        with self._guard:
            self._stale.add(key)

    def observe(
        self, key: str, interval: float, lookup: Callable[[BaseObservation | None], BaseObservation]
    ) -> BaseObservation:
        """The latest observation of ``key``, looked up at most once per ``interval``.

        ``lookup`` gets the previous observation so it can skip refetching an unchanged digest.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = self._clock()
            previous = self._seen.get(key)
            with self._guard:
                stale = key in self._stale
            if previous and not stale and now - previous.fetched_at < interval:
                return previous
            failed = self._failed.get(key)
            throttled = failed[1] if failed and isinstance(failed[1], RegistryThrottled) else None
            if failed and throttled and now - failed[0] < throttled.retry_after:
                raise throttled  # the registry asked us to wait: nobody asks before
            if failed and not stale and now - failed[0] < min(interval, FAILURE_MEMORY):
                # Every policy on a failing base would otherwise ask again, one by one.
                raise failed[1]
            try:
                observation = lookup(previous)
            except Exception as exc:
                with self._guard:
                    # When it failed, not when the lookup began: a lookup that retried a
                    # 429 in place already took longer than the Retry-After it was given,
                    # so dating it from the start let the next one go out at once.
                    self._failed[key] = (self._clock(), exc)
                    self._stale.discard(key)
                raise
            with self._guard:
                self._seen[key] = observation
                self._failed.pop(key, None)
                self._stale.discard(key)
            return observation

    def is_stale(self, key: str) -> bool:
        """Was ``key`` invalidated (a push) since its last lookup?"""
        with self._guard:
            return key in self._stale

    def peek(self, key: str) -> BaseObservation | None:
        return self._seen.get(key)


class TtlCache:
    """A bounded LRU whose entries expire ``ttl`` seconds after they were stored.

    Used for what may change in a registry without anyone telling us (tag lists, candidate
    searches): a value is reused until its policy's interval has passed, or until a push
    event for its repository drops it (``invalidate``).
    """

    def __init__(self, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic):
        self._items: OrderedDict[tuple[str, ...], tuple[float, object]] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> object | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            expires, value = found
            if self._clock() >= expires:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: object, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def invalidate(self, first: str) -> int:
        """Drop every entry whose key starts with ``first`` (a repository); how many."""
        with self._lock:
            gone = [k for k in self._items if k and k[0] == first]
            for key in gone:
                del self._items[key]
            return len(gone)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
