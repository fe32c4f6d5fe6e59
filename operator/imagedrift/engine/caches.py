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
from imagedrift.registry.base import RegistryClient


class ImageCache:
    """LRU of ResolvedImage by (registry, repository, digest); bounded in entries."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._items: OrderedDict[tuple[str, str, str], ResolvedImage] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, client: RegistryClient, ref: ImageRef) -> ResolvedImage:
        """The image at ``ref`` (which must be pinned by digest)."""
        if not ref.digest:
            raise ValueError(f"{ref} is not pinned by digest")
        key = (ref.registry, ref.repository, ref.digest)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = client.get_image(ref)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return image


@dataclass(frozen=True)
class BaseObservation:
    ref: ImageRef  # the tag that was resolved, pinned to its digest
    image: ResolvedImage
    fetched_at: float


class BaseWatcher:
    """Deduplicated base lookups keyed by ``BaseSpec.key``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, BaseObservation] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._stale: set[str] = set()
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
            observation = lookup(previous)
            with self._guard:
                self._seen[key] = observation
                self._stale.discard(key)
            return observation

    def peek(self, key: str) -> BaseObservation | None:
        return self._seen.get(key)
