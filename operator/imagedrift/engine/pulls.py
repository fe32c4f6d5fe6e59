"""When to read a tag-referenced container's pods again for the digest they pulled.

The digest a container runs is recorded on the workload the first time its pods are read.
Pods re-pull a tag when they are replaced (a restart, a scale-up, an evicted pod), and a
re-pushed tag then runs a new digest: imagedrift must read the pods again, or it reports
what ran before. Every such change passes through the workload's own object (its status
at least), so its ``resourceVersion`` moving since the last read is the cue; a workload
that did not change is never read again. Our own annotation writes move it too, which
costs one read after each.

After a restart nothing is known, and the recorded digest is trusted until the workload
next changes: reading the pods of every workload at start would be a fleet-sized burst.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_REMEMBERED = 200_000  # (workload, container) pairs; the oldest go first


class PullWatch:
    """The ``resourceVersion`` at which each (workload, container)'s pods were last read."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._seen: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, workload: str, container: str, resource_version: str) -> None:
        """The pods were read (or the record trusted) at ``resource_version``."""
        key = (workload, container)
        with self._lock:
            self._seen[key] = resource_version
            self._seen.move_to_end(key)
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)

    def changed(self, workload: str, container: str, resource_version: str) -> bool:
        """Has the workload changed since its pods were last read? Unknown counts as
        unchanged (and is remembered from now on)."""
        with self._lock:
            previous = self._seen.get((workload, container))
        if previous is None:
            self.read(workload, container, resource_version)
            return False
        return previous != resource_version
