"""What a change in a registry queues: a base looked up on its schedule, or an image pushed.

- ``base_due``: a base (``("base", key)`` in the queue) is looked up once per interval, the
  shortest among the policies following it, unless a check looked it up meanwhile. When
  its digest moved, or the lookup failed, every follower is queued; then it is scheduled
  again (a failure: with backoff, never later than its interval). This is the only
  periodic registry traffic: one request per distinct base per interval.
- ``push``: a pushed base is looked up again now; any push drops the cached searches of
  its repository, and a pushed app image queues the policies whose workloads run it.

The caches are the checker's own (the wiring hands the same objects to both), so what is
invalidated here is what the next check reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import BaseSpec, PolicySpec
from imagedrift.engine.caches import BaseObservation, BaseWatcher, TtlCache
from imagedrift.engine.policy_index import PolicyIndex
from imagedrift.engine.workqueue import WorkQueue
from imagedrift.errors import RegistryError

log = logging.getLogger(__name__)


class ObservesBases(Protocol):
    """How a base is looked up (``PolicyChecker.observe_base``, through ``BaseWatcher``)."""

    def observe_base(self, base: BaseSpec, clock: float) -> BaseObservation: ...


class Fanout:
    def __init__(
        self,
        index: PolicyIndex,
        lookup: ObservesBases,
        bases: BaseWatcher,
        searches: TtlCache,
        queue: WorkQueue,
        *,
        workloads: Callable[[], Iterable[Mapping[str, Any]]],
        clock: Callable[[], float],
    ) -> None:
        self._index = index
        self._lookup = lookup
        self._bases = bases
        self._searches = searches
        self._queue = queue
        self._workloads = workloads
        self._clock = clock

    def base_due(
        self, key: Hashable, base_key: str, followers: Sequence[tuple[str, PolicySpec]]
    ) -> None:
        """Look up the base ``base_key`` that ``followers`` (at least one) follow, when due."""
        spec = followers[0][1].base
        interval = min(s.base.interval for _, s in followers)
        before = self._bases.peek(base_key)
        if before is not None and not self._bases.is_stale(base_key):
            age = self._clock() - before.fetched_at
            if age < interval - 0.5:  # a check looked it up meanwhile: not due yet
                self._queue.add_after(key, interval - age)
                return
        self._bases.invalidate(base_key)
        try:
            after = self._lookup.observe_base(spec, self._clock())
        except RegistryError as exc:
            log.info("base %s: %s", spec.image.name, exc)
            for name, _ in followers:
                self._queue.add(("policy", name))
            self._queue.add_after(key, min(self._queue.backoff(key), interval))
            return
        self._queue.forget(key)
        moved = before is None or before.image.digest != after.image.digest
        if moved:
            for name, _ in followers:
                self._queue.add(("policy", name))
        self._queue.add_after(key, interval)

    def push(self, image: str) -> list[str]:
        """A push of ``image``: a base it is re-resolved now; an app repository's cached
        tag lists and searches are dropped and the policies whose workloads run it are
        checked now. Returns the policy names woken."""
        try:
            pushed = ImageRef.parse(image)
        except ValueError:
            return []
        woken: list[str] = []
        bases: set[str] = set()
        for name, spec in self._index.valid():
            base = spec.base.image
            same_repo = pushed.repository == base.repository and pushed.registry in (
                base.registry,
                "docker.io",
            )
            if same_repo and (not pushed.tag or not spec.base.tag or pushed.tag == spec.base.tag):
                bases.add(spec.base.key)
                woken.append(name)
        for key in bases:
            self._bases.invalidate(key)
            self._queue.add(("base", key))
        self._searches.invalidate(pushed.name)
        if not bases:
            for name in self._index.running(pushed, self._workloads()):
                if name not in woken:
                    woken.append(name)
                self._queue.add(("policy", name))
        return woken
