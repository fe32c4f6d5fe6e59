"""The level-triggered controller: one work queue, a bounded pool of workers, fed by
watches, a schedule per distinct base and push events. No kopf here: the wiring feeds it
policy bodies and leadership, the informers feed it workload changes.

Keys in the queue:

- ``("base", key)``: look the base up once (``BaseWatcher``); when its digest (or its
  failure) changed, every policy following it is queued. Then it is scheduled again after
  the shortest interval among its followers. This is the only periodic registry traffic:
  one request per distinct base per interval, however many policies share it.
- ``("policy", name)``: one ``PolicyChecker.check`` over the workloads the watch cache
  holds for it; status written only when it changed, Events posted, and the policy queued
  again only if it asked to be (drifted: its interval; rolling: soon; faults: backoff).

A workload that changed queues only the policies that select it. Nothing is worked on
unless this replica leads (``lead``/``unlead``, driven by the Lease elector in
``engine.leadership``); a standby keeps its stores and caches current, so taking over is
queueing everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from imagedrift.core import conditions as cond
from imagedrift.core.conditions import Condition, merge
from imagedrift.core.mergepatch import diff
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import POLICY_LABEL, PolicySpec, parse_policy
from imagedrift.core.workloads import (
    WorkloadRef,
    WorkloadState,
    containers,
    followed,
    ref_of,
    selected,
)
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.ports import Event
from imagedrift.engine.rebuild_step import RebuildStep
from imagedrift.engine.workqueue import WorkQueue
from imagedrift.errors import InvalidSpec, KubeError, RegistryError

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


@dataclass
class _Policy:
    body: dict[str, Any]
    spec: PolicySpec | None
    error: str = ""


class Controller:
    def __init__(
        self,
        checker: PolicyChecker,
        writer: Writer,
        workloads: WorkloadSource,
        *,
        workers: int = 4,
        rebuild: RebuildStep | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.checker = checker
        # Backoff capped at a minute: a burst of watch events can fail a check ten times in
        # a second (an API refusing status writes), and once the fault clears the policy
        # must not wait five minutes for its next try.
        self.queue = WorkQueue(clock=clock, max_delay=RETRY_CAP)
        self._writer = writer
        self._workloads = workloads
        self._workers = workers
        self._rebuild = rebuild
        self._observer = observer
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._policies: dict[str, _Policy] = {}
        self._leading = False
        self._written: dict[str, dict[str, Any]] = {}  # policy -> status as last written
        self._labelled: dict[str, set[WorkloadRef]] = {}  # policy label value -> workloads
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def now(self) -> datetime:
        return self._now()

    # -- inputs -----------------------------------------------------------------------------

    def policy_seen(self, body: Mapping[str, Any]) -> None:
        """A policy was listed, added or changed (kopf's watch). Queued when its spec
        (generation) changed or it is new; a status-only change just updates the store."""
        name = str((body.get("metadata") or {}).get("name", ""))
        plain = {
            "apiVersion": body.get("apiVersion", ""),
            "kind": body.get("kind", "ImagePolicy"),
            # managedFields are the bulk of the metadata and nothing reads them.
            "metadata": {
                k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"
            },
            "spec": dict(body.get("spec") or {}),
            "status": dict(body.get("status") or {}),
        }
        with self._lock:
            before = self._policies.get(name)
            changed = before is None or before.body["spec"] != plain["spec"]
            if not changed:
                before.body = plain  # type: ignore[union-attr]
                return
            try:
                spec: PolicySpec | None = parse_policy(name, plain["spec"])
                error = ""
            except InvalidSpec as exc:
                spec, error = None, str(exc)
            self._policies[name] = _Policy(plain, spec, error)
            others = (
                list(self._policies) if spec is not None and not _default_selector(spec) else []
            )
        # A policy selecting by more than its own label may overlap others: they all look
        # again (Conflict is decided on both sides).
        for other in others:
            self.queue.add(("policy", other))
        self.queue.add(("policy", name))
        if spec is not None:
            self.queue.add(("base", spec.base.key))

    def policy_gone(self, name: str) -> None:
        with self._lock:
            self._policies.pop(name, None)
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
            specs = [(n, p.spec) for n, p in self._policies.items()]
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
        if old is not None and new is not None and _relevant(old) == _relevant(new):
            return
        labels = [((body.get("metadata") or {}).get("labels") or {}) for body in (old, new) if body]
        with self._lock:
            for body_labels in labels:
                value = body_labels.get(POLICY_LABEL)
                if value:
                    self._labelled.setdefault(value, set()).discard(ref)
            if new is not None:
                value = ((new.get("metadata") or {}).get("labels") or {}).get(POLICY_LABEL)
                if value:
                    self._labelled.setdefault(value, set()).add(ref)
            names = {
                name
                for name, p in self._policies.items()
                if p.spec is not None and any(p.spec.rollout.selector.matches(lb) for lb in labels)
            }
        for name in names:
            self.queue.add(("policy", name))

    def wake_for_image(self, image: str) -> list[str]:
        """A push of ``image``: a base it is re-resolved now; an app repository's cached
        tag lists and searches are dropped and the policies whose workloads run it are
        checked now. Returns the policy names woken."""
        try:
            pushed = ImageRef.parse(image)
        except ValueError:
            return []
        woken: list[str] = []
        bases: set[str] = set()
        with self._lock:
            policies = [(n, p.spec) for n, p in self._policies.items() if p.spec is not None]
        for name, spec in policies:
            base = spec.base.image
            same_repo = pushed.repository == base.repository and pushed.registry in (
                base.registry,
                "docker.io",
            )
            if same_repo and (not pushed.tag or not spec.base.tag or pushed.tag == spec.base.tag):
                bases.add(spec.base.key)
                woken.append(name)
        for key in bases:
            self.checker.bases.invalidate(key)
            self.queue.add(("base", key))
        self.checker.searches.invalidate(pushed.name)
        if not bases:
            for name in self._policies_running(pushed):
                if name not in woken:
                    woken.append(name)
                self.queue.add(("policy", name))
        return woken

    def _policies_running(self, pushed: ImageRef) -> set[str]:
        names: set[str] = set()
        for body in self._workloads.items():
            for image in containers(body).values():
                try:
                    ref = ImageRef.parse(image)
                except ValueError:
                    continue
                if ref.repository == pushed.repository and ref.registry == pushed.registry:
                    names.update(self._selecting(body))
        return names

    def _selecting(self, body: Mapping[str, Any]) -> list[str]:
        with self._lock:
            return [
                n
                for n, p in self._policies.items()
                if p.spec is not None and selected(body, p.spec)
            ]

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
            followers = [
                (n, p.spec)
                for n, p in self._policies.items()
                if p.spec is not None and p.spec.base.key == base_key
            ]
            leading = self._leading
        if not followers or not leading:
            return  # nobody follows it here any more: its schedule ends
        spec = followers[0][1].base
        interval = min(s.base.interval for _, s in followers)
        before = self.checker.bases.peek(base_key)
        if before is not None and not self.checker.bases.is_stale(base_key):
            age = self._clock() - before.fetched_at
            if age < interval - 0.5:  # a check looked it up meanwhile: not due yet
                self.queue.add_after(key, interval - age)
                return
        self.checker.bases.invalidate(base_key)
        try:
            after = self.checker.observe_base(spec, self._clock())
        except RegistryError as exc:
            log.info("base %s: %s", spec.image.name, exc)
            for name, _ in followers:
                self.queue.add(("policy", name))
            self.queue.add_after(key, min(self.queue.backoff(key), interval))
            return
        self.queue.forget(key)
        moved = before is None or before.image.digest != after.image.digest
        if moved:
            for name, _ in followers:
                self.queue.add(("policy", name))
        self.queue.add_after(key, interval)

    # -- policies ---------------------------------------------------------------------------

    def _process_policy(self, name: str, key: Hashable) -> None:
        with self._lock:
            policy = self._policies.get(name)
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
        conflicts = self._conflicts(spec, workloads)
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
        if _default_selector(spec):
            with self._lock:
                refs = list(self._labelled.get(spec.name, ()))
            bodies: Iterable[dict[str, Any] | None] = (self._workloads.get(r) for r in refs)
        else:
            bodies = self._workloads.items()
        return [b for b in bodies if b is not None and selected(b, spec)]

    def _conflicts(
        self, spec: PolicySpec, workloads: Iterable[Mapping[str, Any]]
    ) -> dict[str, tuple[str, ...]]:
        """workload -> the other policies that select it too (two owners: neither acts)."""
        with self._lock:
            specs = {n: p.spec for n, p in self._policies.items() if p.spec is not None}
        custom = [s for n, s in specs.items() if n != spec.name and not _default_selector(s)]
        out: dict[str, tuple[str, ...]] = {}
        for body in workloads:
            label = ((body.get("metadata") or {}).get("labels") or {}).get(POLICY_LABEL, "")
            others = [s.name for s in custom if selected(body, s)]
            owner = specs.get(label)
            if owner is not None and owner.name != spec.name and selected(body, owner):
                others.append(owner.name)
            if others:
                out[str(ref_of(body))] = tuple(sorted(set(others)))
        return out

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
            if name in self._policies:
                self._written[name] = dict(status)

    def _post(self, policy: Mapping[str, Any], events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._writer.post_event(
                    event.target, event.type, event.reason, event.message, self._now()
                )
            except KubeError as exc:
                log.warning("event %s on %s: %s", event.reason, _name(event.target), exc)


def _default_selector(spec: PolicySpec) -> bool:
    """Does ``spec`` select by its own name in the policy label (the common case)?"""
    selector = spec.rollout.selector
    return selector.match_labels == {POLICY_LABEL: spec.name} and not selector.match_expressions


def _relevant(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a workload its decision reads: the whole status while a rollout runs;
    otherwise only whether its pods have settled, because pods that were replaced (a
    restart, an eviction) may have pulled a re-pushed tag, and the check that reads them
    again (``engine.pulls``) should run once they are up, not at some later change."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    record = WorkloadState.decode(body).rollout
    rolling = followed(record)
    return (
        meta.get("labels"),
        annotations,
        meta.get("generation"),
        body.get("spec"),
        body.get("status") if rolling else (_settled(body) if _pulls_tags(body) else None),
    )


def _pulls_tags(body: Mapping[str, Any]) -> bool:
    """Does the workload run pods from a tag (a reference without a digest)? Only then can
    replaced pods have pulled something new; a workload scaled to zero, or pinned by
    digest, queues nothing when its status moves (a fleet of new Deployments settling
    would otherwise queue every policy again)."""
    spec = body.get("spec") or {}
    if "replicas" in spec and not int(spec.get("replicas") or 0):
        return False
    return any("@" not in image for image in containers(body).values())


def _settled(body: Mapping[str, Any]) -> bool:
    """Are all of the workload's pods updated and available (for any kind's status)?"""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    want = status.get("replicas", status.get("desiredNumberScheduled"))
    counts = [
        status.get(key)
        for key in ("updatedReplicas", "availableReplicas", "readyReplicas")
        if key in status
    ] + [
        status.get(key)
        for key in ("updatedNumberScheduled", "numberAvailable", "numberReady")
        if key in status
    ]
    return all(count == want for count in counts)


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
