"""The level-triggered controller: what changed becomes queued keys, and workers check them.

One work queue and a bounded pool of workers, fed by watches, a schedule per distinct base
and push events. No kopf here: the wiring feeds it policy bodies and leadership, the
informers feed it workload changes.

Keys in the queue:

- ``("base", key)``: look the base up once (``BaseWatcher``); when its digest (or its
  failure) changed, every policy following it is queued. Then it is scheduled again after
  the shortest interval among its followers (``engine.fanout``, which also turns a push
  event into keys).
- ``("policy", name)``: one ``PolicyChecker.check`` over the workloads the watch cache
  holds for it; status written only when it changed, Events posted, and the policy queued
  again only if it asked to be (drifted: its interval; rolling: soon; faults: backoff).

A workload that changed in a way a decision reads (``core.workload_changes``) queues only
the policies that select it (``engine.policy_index``). Nothing is worked on unless this
replica leads (``lead``/``unlead``, driven by the Lease elector in ``engine.leadership``);
a standby keeps its stores and caches current, so taking over is queueing everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from imagedrift.core import conditions as cond
from imagedrift.core.conditions import Condition, merge
from imagedrift.core.mergepatch import diff
from imagedrift.core.spec import PolicySpec
from imagedrift.core.workload_changes import relevant
from imagedrift.core.workloads import WorkloadRef, selected
from imagedrift.engine.caches import BaseWatcher, TtlCache
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.fanout import Fanout
from imagedrift.engine.policy_index import PolicyIndex, by_own_label
from imagedrift.engine.ports import Event
from imagedrift.engine.rebuild_step import RebuildStep
from imagedrift.engine.workqueue import WorkQueue
from imagedrift.errors import KubeError, RegistryError

log = logging.getLogger(__name__)
RETRY_CAP = 60.0  # seconds: the longest a failing key waits before its next try
# Seconds a stop waits for the key in hand; well inside the pod's 30 s termination grace.
STOP_TIMEOUT = 15.0
VOLATILE = ("checkedAt",)  # base fields that change on every look: never a reason to write


class Writer(Protocol):
    """The writes the controller makes outside a check (``KubeAdapter`` has them)."""

    def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None: ...

    def post_event(
        self, target: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
    ) -> None: ...


class WorkloadSource(Protocol):
    """The watch cache of workloads (one ``Informer`` per kind behind it)."""

    def items(self) -> list[dict[str, Any]]: ...

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None: ...

    def wait_synced(self, timeout: float) -> bool: ...


Observer = Callable[[str, Mapping[str, Any], Mapping[str, Any], list[Condition], list[Event]], None]


class Controller:
    def __init__(
        self,
        checker: PolicyChecker,
        writer: Writer,
        workloads: WorkloadSource,
        *,
        bases: BaseWatcher,
        searches: TtlCache,
        workers: int = 4,
        rebuild: RebuildStep | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``bases`` and ``searches`` are the checker's caches: a push invalidates them
        and a base's schedule reads when it was last looked up."""
        self.checker = checker
        # Backoff capped at a minute: a burst of watch events can fail a check ten times in
        # a second (an API refusing status writes), and once the fault clears the policy
        # must not wait five minutes for its next try.
        self.queue = WorkQueue(clock=clock, max_delay=RETRY_CAP)
        self._writer = writer
        self._workloads = workloads
        self._workers = workers
        self._rebuild = rebuild
        if rebuild is not None:  # triggers that answered in the background: check again
            rebuild.on_done = lambda name: self.queue.add(("policy", name))
        self._observer = observer
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()  # taken before the index's own, never after
        self._index = PolicyIndex()
        self._fanout = Fanout(
            self._index,
            checker,
            bases,
            searches,
            self.queue,
            workloads=workloads.items,
            clock=clock,
        )
        self._leading = False
        self._written: dict[str, dict[str, Any]] = {}  # policy -> status as last written
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def now(self) -> datetime:
        return self._now()

    # -- inputs -----------------------------------------------------------------------------

    def policy_seen(self, body: Mapping[str, Any]) -> None:
        """A policy was listed, added or changed (kopf's watch). Queued when its spec
        (generation) changed or it is new; a status-only change just updates the store."""
        change = self._index.put(body)
        if change is None:
            return
        for other in change.overlapping:
            self.queue.add(("policy", other))
        self.queue.add(("policy", change.name))
        if change.spec is not None:
            self.queue.add(("base", change.spec.base.key))

    def policy_gone(self, name: str) -> None:
        with self._lock:
            self._index.forget(name)
            self._written.pop(name, None)
        if self._rebuild is not None:
            self._rebuild.forget(name)

    @property
    def leading(self) -> bool:
        return self._leading

    def lead(self) -> None:
        """This replica works now: every policy is checked and every base schedule starts."""
        with self._lock:
            self._leading = True
            specs = self._index.specs()
        for name, _ in specs:
            self.queue.add(("policy", name))
        for key in {s.base.key for _, s in specs if s is not None}:
            self.queue.add(("base", key))

    def unlead(self) -> None:
        """Another replica (or nobody) works now. What we wrote is forgotten (the leader
        may write next); queued keys are dropped as workers reach them."""
        with self._lock:
            self._leading = False
            self._written.clear()

    def workload_changed(
        self, ref: WorkloadRef, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        """A watch event: queue the policies that select the workload, before or after.

        A change a decision cannot see (the status of a workload that is not rolling out,
        a new resourceVersion) queues nothing: the cache holds it for the next check.
        """
        if old is not None and new is not None and relevant(old) == relevant(new):
            return
        for name in self._index.reindex(ref, old, new):
            self.queue.add(("policy", name))

    def wake_for_image(self, image: str) -> list[str]:
        """A push of ``image``: a base it is re-resolved now; an app repository's cached
        tag lists and searches are dropped and the policies whose workloads run it are
        checked now. Returns the policy names woken."""
        return self._fanout.push(image)

    # -- running ----------------------------------------------------------------------------

    def start(self) -> Controller:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"imagedrift-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Take no new key, then wait (at most ``timeout`` seconds in all) for the workers to
        finish the key in hand: a daemon thread still inside a check when the interpreter
        finalizes can abort the process (SIGABRT instead of exit 0)."""
        self._stop.set()
        self.queue.shutdown()
        if self._rebuild is not None:
            self._rebuild.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning("stopping: %s still busy after %.0fs", ", ".join(busy), timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._workloads.wait_synced(1.0):
                continue  # decisions over a half-listed fleet would be wrong
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                self._process(key)
            except (KubeError, RegistryError) as exc:
                # An API or registry fault (already logged where it happened): no traceback.
                log.info("%s: %s; retrying in %.0fs", key, exc, self.queue.retry(key))
            except Exception:
                log.exception("processing %s failed; retrying with backoff", key)
                self.queue.retry(key)
            finally:
                self.queue.done(key)

    def _process(self, key: Hashable) -> None:
        kind, name = key if isinstance(key, tuple) else ("", key)
        if kind == "base":
            self._process_base(str(name), key)
        else:
            self._process_policy(str(name), key)

    # -- bases ------------------------------------------------------------------------------

    def _process_base(self, base_key: str, key: Hashable) -> None:
        with self._lock:
            followers = self._index.following(base_key)
            leading = self._leading
        if not followers or not leading:
            return  # nobody follows it here any more: its schedule ends
        self._fanout.base_due(key, base_key, followers)

    # -- policies ---------------------------------------------------------------------------

    def _process_policy(self, name: str, key: Hashable) -> None:
        with self._lock:
            policy = self._index.get(name)
            leading = self._leading
            written = self._written.get(name)
        if policy is None or not leading:
            return
        body = dict(policy.body)
        if written is not None:
            body["status"] = written  # the watch may not have brought our last write yet
        previous = dict(body.get("status") or {})
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        if policy.spec is None:
            self._stalled(name, body, previous, generation, policy.error)
            return
        spec = policy.spec
        workloads = self._governed(spec)
        conflicts = self._index.conflicts(spec, workloads)
        result = self.checker.check(
            spec, body, workloads, self._now(), self._clock(), conflicts=conflicts
        )
        if self._rebuild is not None:  # rebuild triggers, status.rebuild
            self._rebuild.apply(spec, body, result, self._now())
        # Keys a check does not compose (status.rebuild, written by the rebuild step only
        # when it fires) are kept as they are.
        status = {**previous, **result.status}
        status["conditions"] = merge(
            list(previous.get("conditions") or []), result.conditions, generation, self._now()
        )
        self._write(name, previous, status)
        self._post(body, result.events)
        if self._observer is not None:
            self._observer(name, previous, status, result.conditions, result.events)
        # A fault backs off; Retry-After, or a rollout to follow, sets its own time.
        if result.fault:
            self.queue.retry(key)  # per-key exponential backoff, capped
        else:
            self.queue.forget(key)
            if result.next_check_in is not None:
                self.queue.add_after(key, result.next_check_in)

    def _governed(self, spec: PolicySpec) -> list[dict[str, Any]]:
        if by_own_label(spec):
            refs = self._index.labelled(spec.name)
            bodies: Iterable[dict[str, Any] | None] = (self._workloads.get(r) for r in refs)
        else:
            bodies = self._workloads.items()
        return [b for b in bodies if b is not None and selected(b, spec)]

    def _stalled(
        self,
        name: str,
        body: Mapping[str, Any],
        previous: Mapping[str, Any],
        generation: int,
        error: str,
    ) -> None:
        was = {c.get("type"): c for c in previous.get("conditions") or []}.get("Stalled") or {}
        status = {
            **previous,
            "observedGeneration": generation,
            "lastError": error,
            "conditions": merge(
                list(previous.get("conditions") or []),
                cond.stalled("InvalidSpec", error),
                generation,
                self._now(),
            ),
        }
        self._write(name, previous, status)
        if was.get("message") != error:
            self._post(body, [Event(body, "Warning", "InvalidSpec", error)])

    def _write(self, name: str, previous: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Write ``status`` when it differs from ``previous`` in more than volatile fields."""
        if _steady(previous) == _steady(status):
            return
        patch = diff(previous, status)
        try:
            self._writer.patch_policy_status(name, patch)
        except KubeError as exc:
            log.warning("policy %s: %s", name, exc)
            with self._lock:
                self._written.pop(name, None)  # re-read what is really there next time
            raise
        with self._lock:
            if name in self._index:
                self._written[name] = dict(status)

    def _post(self, policy: Mapping[str, Any], events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._writer.post_event(
                    event.target, event.type, event.reason, event.message, self._now()
                )
            except KubeError as exc:
                log.warning("event %s on %s: %s", event.reason, _name(event.target), exc)


def _steady(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    base = dict(out.get("base") or {})
    for key in VOLATILE:
        base.pop(key, None)
    out["base"] = base
    return out


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{body.get('kind', '')}/{meta.get('namespace', '')}/{meta.get('name', '')}"
