"""A watch cache of opted-in workloads: list once, then watch, keep only what decisions read.

One thread per kind lists the workloads carrying the policy label (paged), then follows a
watch from the list's resourceVersion (with bookmarks), and relists when the server says
the version is gone (410) or the stream breaks. Bodies are parsed from raw JSON (the
client's model classes cost more than the whole decision) and projected onto the fields
the engine needs: containers and images, imagedrift annotations, labels, generation,
rollout status. Every change (added, modified, deleted, or found by a relist) is handed to
``on_change(ref, old, new)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from imagedrift.core.gitops import GITOPS_ANNOTATIONS, GITOPS_KEY, MANAGERS_KEY, owned_images
from imagedrift.core.spec import POLICY_LABEL
from imagedrift.core.workloads import WorkloadRef

log = logging.getLogger(__name__)
OnChange = Callable[[WorkloadRef, "dict[str, Any] | None", "dict[str, Any] | None"], None]
PAGE = 500
LIST_TIMEOUT = (10.0, 120.0)  # connect, read (seconds)
WATCH_SECONDS = 300  # the server ends a watch after this; the read timeout is a bit longer
WATCH_TIMEOUT = (10.0, WATCH_SECONDS + 30.0)
MAX_BACKOFF = 30.0

API_VERSIONS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "CronJob": "batch/v1",
}


def _i(value: Any) -> Any:
    """One copy of a string that thousands of workloads repeat (label keys and values,
    namespaces, container names, images, condition words); other values as they are."""
    return sys.intern(value) if isinstance(value, str) else value


def _interned(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {_i(k): _i(v) for k, v in mapping.items()}


def _slim_pod_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "containers": [
            {"name": _i(c.get("name", "")), "image": _i(c.get("image", ""))}
            for c in spec.get("containers") or ()
        ]
    }


def project(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a workload the engine reads; everything else is dropped."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    slim_spec: dict[str, Any] = {}
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        slim_spec = {
            "schedule": spec.get("schedule", ""),
            "suspend": bool(spec.get("suspend", False)),
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": _slim_pod_spec(((job.get("template") or {}).get("spec")) or {})
                    }
                }
            },
        }
    else:
        for key in ("replicas", "strategy", "updateStrategy", "minReadySeconds"):
            if key in spec:
                slim_spec[key] = spec[key]
        if "progressDeadlineSeconds" in spec:
            slim_spec["progressDeadlineSeconds"] = spec["progressDeadlineSeconds"]
        if spec.get("selector"):  # to find the pods and the digest their nodes pulled
            slim_spec["selector"] = spec["selector"]
        slim_spec["template"] = {
            "spec": _slim_pod_spec(((spec.get("template") or {}).get("spec")) or {})
        }
    slim: dict[str, Any] = {
        "apiVersion": API_VERSIONS[kind],
        "kind": kind,
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": _i(meta.get("namespace", "")),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
            "generation": meta.get("generation", 0),
            "labels": _interned(meta.get("labels") or {}),
            "annotations": {
                _i(k): v
                for k, v in (meta.get("annotations") or {}).items()
                if k.startswith("imagedrift.io/")
            },
        },
        "spec": slim_spec,
        "status": _slim_status(body.get("status") or {}),
    }
    managers = owned_images(meta.get("managedFields"), kind)
    if managers:
        slim[MANAGERS_KEY] = {_i(c): _interned(m) for c, m in managers.items()}
    gitops = {k: v for k, v in (meta.get("annotations") or {}).items() if k in GITOPS_ANNOTATIONS}
    if gitops:
        slim[GITOPS_KEY] = gitops
    return slim


# What rollout verification reads of a workload's status (core/rollout.py).
_STATUS_KEYS = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "currentReplicas",
    "currentRevision",
    "updateRevision",
    "desiredNumberScheduled",
    "updatedNumberScheduled",
    "numberAvailable",
    "lastScheduleTime",
    "lastSuccessfulTime",
)
_CONDITION_KEYS = ("type", "status", "reason", "message", "lastUpdateTime", "lastTransitionTime")


def _slim_status(status: Mapping[str, Any]) -> dict[str, Any]:
    slim = {k: _i(status[k]) for k in _STATUS_KEYS if k in status}
    conditions = [
        {k: _i(c[k]) for k in _CONDITION_KEYS if k in c}
        for c in status.get("conditions") or ()
        if c.get("type") in ("Progressing", "Available")
    ]
    if conditions:
        slim["conditions"] = conditions
    return slim


def _ref(kind: str, body: Mapping[str, Any]) -> WorkloadRef:
    meta = body.get("metadata") or {}
    return WorkloadRef(kind, str(meta.get("namespace", "")), str(meta.get("name", "")))


class Informer:
    """The watch cache of one workload kind. ``start`` runs it in a daemon thread."""

    def __init__(
        self,
        api: k8s.ApiClient,
        kind: str,
        on_change: OnChange,
        *,
        label_selector: str = POLICY_LABEL,
    ) -> None:
        self.kind = kind
        self._on_change = on_change
        self._selector = label_selector
        self._items: dict[WorkloadRef, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        if kind == "CronJob":
            self._list_call: Any = k8s.BatchV1Api(api).list_cron_job_for_all_namespaces
        else:
            snake = {"Deployment": "deployment", "StatefulSet": "stateful_set"}.get(
                kind, "daemon_set"
            )
            self._list_call = getattr(k8s.AppsV1Api(api), f"list_{snake}_for_all_namespaces")

    # -- reads ------------------------------------------------------------------------------

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(ref)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait (bounded) for the thread to leave: a daemon thread still
        reading when the interpreter finalizes can abort the process."""
        self._stop.set()
        response = self._response
        if response is not None:
            _interrupt(response)
        if self._thread is not None:
            self._thread.join(timeout)

    def _request(self, timeout: tuple[float, float], **params: Any) -> Any:
        """The raw response of a list or watch call (parsed by us, not by the models)."""
        return self._list_call(
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=timeout,
            **params,
        )

    def _list(self) -> str:
        """List every opted-in workload (paged); replace the cache; the list's version."""
        fresh: dict[WorkloadRef, dict[str, Any]] = {}
        token = ""
        started = time.monotonic()
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if token:
                params["_continue"] = token
            response = self._request(LIST_TIMEOUT, **params)
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            for body in page.get("items") or ():
                fresh[_ref(self.kind, body)] = project(self.kind, body)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                version = str(meta.get("resourceVersion", ""))
                break
        with self._lock:
            old = self._items
            self._items = fresh
        for ref in old.keys() - fresh.keys():
            self._on_change(ref, old[ref], None)
        for ref, body in fresh.items():
            before = old.get(ref)
            if before != body:
                self._on_change(ref, before, body)
        if not self.synced.is_set():  # the first list holds every check back: say how long
            log.info("listed %d %s(s) in %.1fs", len(fresh), self.kind, time.monotonic() - started)
        self.synced.set()
        return version

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        response = self._request(
            WATCH_TIMEOUT,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    return
                if line:
                    yield json.loads(line)
        finally:
            self._response = None
            response.close()
            response.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> str | None:
        """Apply one watch event; the new resourceVersion, or None to relist."""
        kind, body = event.get("type"), event.get("object") or {}
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        if kind == "ERROR":
            log.info("watch of %s ended: %s; relisting", self.kind, body.get("message", body))
            return None
        if kind == "BOOKMARK":
            return version
        ref = _ref(self.kind, body)
        with self._lock:
            before = self._items.get(ref)
            if kind == "DELETED":
                self._items.pop(ref, None)
                after = None
            else:
                after = project(self.kind, body)
                self._items[ref] = after
        if before != after:
            self._on_change(ref, before, after)
        return version

    def _run(self) -> None:
        failures = 0
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                for event in self._events(version):
                    next_version = self._apply(event)
                    if next_version is None:
                        version = ""
                        break
                    version = next_version
                failures = 0
            except ApiException as exc:
                if exc.status == 410:
                    version = ""
                    continue
                failures += 1
                log.warning("watching %s: %s %s", self.kind, exc.status, exc.reason)
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1  # the watch resumes from ``version``; a 410 then relists
                log.warning("watching %s: %s", self.kind, exc)
            if failures:
                self._stop.wait(min(2.0 ** min(failures, 5), MAX_BACKOFF))


def _interrupt(response: Any) -> None:
    """Wake the thread blocked reading a watch ``response`` at once: shut its socket down.
    Closing the response from here instead waits for that read to return (the reader holds
    the stream's lock), which is up to a bookmark or the watch timeout away: a SIGTERM
    took 10 s and ended in SIGKILL, skipping the Lease hand-over."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class WorkloadCache:
    """The informers of every workload kind, read as one cache."""

    def __init__(self, api: k8s.ApiClient, on_change: OnChange) -> None:
        self.informers = {kind: Informer(api, kind, on_change) for kind in API_VERSIONS}

    def start(self) -> WorkloadCache:
        for informer in self.informers.values():
            informer.start()
        return self

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def items(self) -> list[dict[str, Any]]:
        return [body for informer in self.informers.values() for body in informer.items()]

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None:
        informer = self.informers.get(ref.kind)
        return informer.get(ref) if informer else None

    def wait_synced(self, timeout: float) -> bool:
        """True once every kind was listed (waits at most ``timeout`` seconds)."""
        return all(informer.synced.wait(timeout) for informer in self.informers.values())

    def __len__(self) -> int:
        return sum(len(i) for i in self.informers.values())
