"""One Lease decides which replica works: the elector thread that reads and renews it.

The decisions are ``core.lease``'s; this module only calls the Lease port on a timer and
tells the controller when this replica starts and stops leading. The Kubernetes client ships
an elector too, but its calls have no timeout (a stuck renewal would keep a replica leading
past its lease), it builds its own API client from the default configuration, and it never
campaigns again once it lost: so a dozen lines here instead.

One Lease for the whole operator, not one per policy: a standby costs nothing per policy
and a take-over is one write. The standby keeps its watch caches warm, so on taking over it
queues everything and its first checks read only the registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from imagedrift.core.lease import (
    Action,
    LeaseSettings,
    Record,
    Seen,
    next_step,
    observe,
    released,
    still_leading,
)
from imagedrift.errors import KubeConflict, KubeError

log = logging.getLogger(__name__)


class LeasePort(Protocol):
    def read_lease(self, name: str, timeout: float) -> tuple[dict[str, Any], str] | None: ...

    def write_lease(
        self, name: str, spec: Mapping[str, Any], resource_version: str | None, timeout: float
    ) -> str: ...


class Elector:
    def __init__(
        self,
        port: LeasePort,
        name: str,
        identity: str,
        settings: LeaseSettings,
        *,
        on_lead: Callable[[], None],
        on_unlead: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name, self.identity, self.settings = name, identity, settings
        self._port = port
        self._on_lead, self._on_unlead = on_lead, on_unlead
        self._clock, self._now = clock, now
        self._seen: Seen | None = None
        self._version: str | None = None
        self._renewed_at: float | None = None  # monotonic time of our last successful write
        self._holder = ""
        self.leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Elector:
        self._thread = threading.Thread(target=self._run, name="imagedrift-elector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop campaigning; a leader stops working first, then releases the Lease so a
        standby takes over at its next look instead of after the whole lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.renew_deadline)
        if self.leading:
            self._step_down("stopping")
            self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.tick()
            self._stop.wait(max(0.0, self.settings.retry - (self._clock() - started)))

    def tick(self) -> None:
        """One look at the Lease: read, decide, write at most once."""
        timeout = self.settings.retry
        try:
            got = self._port.read_lease(self.name, timeout)
        except KubeError as exc:
            log.warning("leader election: %s", exc)
            self._check_deadline()
            return
        if got is None:
            self._seen, self._version = None, None
        else:
            spec, self._version = got
            self._seen = observe(self._seen, Record.from_spec(spec), self._clock())
            self._note_holder(self._seen.record.holder)
        step = next_step(self._seen, self.identity, self._now(), self._clock(), self.settings)
        if step.action is Action.WAIT or step.write is None:
            if self.leading:
                self._step_down(step.reason)  # someone else holds it: we lost it meanwhile
            return
        try:
            self._version = self._port.write_lease(
                self.name, step.write.to_spec(), self._version, timeout
            )
        except (KubeConflict, KubeError) as exc:
            log.info("leader election (%s): %s", step.action.value, exc)
            self._check_deadline()
            return
        self._renewed_at = self._clock()
        self._seen = Seen(step.write, self._renewed_at)
        self._note_holder(self.identity)
        if not self.leading:
            log.info("leading as %s (%s: %s)", self.identity, step.action.value, step.reason)
            self.leading = True
            self._on_lead()

    def _check_deadline(self) -> None:
        if self.leading and not still_leading(self._renewed_at, self._clock(), self.settings):
            self._step_down(f"no renewal for {self.settings.renew_deadline:.0f}s")

    def _step_down(self, why: str) -> None:
        log.warning("no longer leading as %s: %s", self.identity, why)
        self.leading = False
        self._renewed_at = None
        self._on_unlead()

    def _release(self) -> None:
        if self._seen is None or self._seen.record.holder != self.identity:
            return
        record = released(self._seen.record, self._now())
        try:
            self._port.write_lease(self.name, record.to_spec(), self._version, self.settings.retry)
        except (KubeConflict, KubeError) as exc:
            log.info("leader election: releasing the lease: %s", exc)

    def _note_holder(self, holder: str) -> None:
        if holder != self._holder:
            self._holder = holder
            log.info("lease %s is held by %s", self.name, holder or "nobody")
