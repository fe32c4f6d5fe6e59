"""The kopf wiring: the only module that imports kopf.

It registers the handlers, reads settings at startup, keeps the workload indexes, and maps
what the engine returns onto status patches and Events. Run it with
``kopf run -m imagedrift.wiring --all-namespaces`` (the container image does so).

Environment:
    IMAGEDRIFT_NAMESPACE        namespace of the operator (credentials Secrets live here)
    IMAGEDRIFT_TICK_SECONDS     how often each policy is considered (default 1)
    IMAGEDRIFT_CA_BUNDLE        extra CA bundle for registries with a private CA
    IMAGEDRIFT_PEERING          kopf peering name for HA (default imagedrift; "" = standalone)
    IMAGEDRIFT_METRICS_PORT     Prometheus metrics port (default 9090; 0 = off)
    IMAGEDRIFT_METRICS_ADDR     address it listens on (default all)
    IMAGEDRIFT_REGISTRY_BUDGET  requests per minute per registry host (default 600; 0 = none)
    IMAGEDRIFT_WEBHOOK_PORT     push-event receiver port (default 0 = off)
    IMAGEDRIFT_WEBHOOK_SECRET   its shared secret (or IMAGEDRIFT_WEBHOOK_SECRET_FILE)
    IMAGEDRIFT_WEBHOOK_CERT/KEY its TLS key pair (IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true: none)
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from imagedrift.core.conditions import merge
from imagedrift.core.spec import POLICY_LABEL
from imagedrift.engine.caches import BaseWatcher, ImageCache
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.registries import RegistryPool
from imagedrift.engine.runtime import Runtime
from imagedrift.kube.adapter import KubeAdapter, load_api_client
from imagedrift.metrics import Metrics
from imagedrift.registry.budget import DEFAULT_PER_MINUTE, RequestBudget

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
TICK = float(os.environ.get("IMAGEDRIFT_TICK_SECONDS", "1"))
log = logging.getLogger("imagedrift")


class _State:
    runtime: Runtime | None = None
    pool: RegistryPool | None = None
    metrics = Metrics()


STATE = _State()


def _runtime() -> Runtime:
    if STATE.runtime is None:
        raise kopf.TemporaryError("operator is still starting", delay=1)
    return STATE.runtime


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="imagedrift.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="imagedrift.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "imagedrift.io/finalizer"
    settings.posting.level = logging.WARNING  # our own Events carry the story; no log spam
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = int(os.environ.get("IMAGEDRIFT_WORKERS", "8"))
    peering = os.environ.get("IMAGEDRIFT_PEERING", "imagedrift")
    if peering:
        settings.peering.name = peering
        settings.peering.clusterwide = True
        if not settings.peering.priority:
            # Equal priorities make every replica pause; a random one elects a single worker.
            settings.peering.priority = secrets.randbelow(1_000_000) + 1
    namespace = os.environ.get("IMAGEDRIFT_NAMESPACE", "imagedrift-system")
    kube = KubeAdapter(load_api_client(), namespace)
    metrics_port = int(os.environ.get("IMAGEDRIFT_METRICS_PORT", "9090"))
    if metrics_port:
        STATE.metrics.serve(metrics_port, os.environ.get("IMAGEDRIFT_METRICS_ADDR", "0.0.0.0"))
    STATE.pool = RegistryPool(
        kube,
        namespace=namespace,
        verify=os.environ.get("IMAGEDRIFT_CA_BUNDLE") or True,
        on_request=STATE.metrics.on_request,
        budget=_budget(),
    )
    STATE.runtime = Runtime(PolicyChecker(STATE.pool, kube, ImageCache(), BaseWatcher()))
    _start_receiver(STATE.runtime)


# -- push-event receiver (registry webhooks, Event Grid) ---------------------------------------

_RECEIVERS: list[Any] = []  # the running imagedrift.events.Receiver, if any


def _start_receiver(runtime: Runtime) -> None:
    """Start the push-event receiver when IMAGEDRIFT_WEBHOOK_PORT is set (0 = off).

    IMAGEDRIFT_WEBHOOK_SECRET (or IMAGEDRIFT_WEBHOOK_SECRET_FILE) is the shared secret;
    IMAGEDRIFT_WEBHOOK_CERT / IMAGEDRIFT_WEBHOOK_KEY the TLS key pair; without them the
    receiver serves plain HTTP only if IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true.
    IMAGEDRIFT_WEBHOOK_HOST is the address to bind (default 0.0.0.0). Each pushed image
    reference wakes the policies following it (``Runtime.wake_for_image``).
    """
    from imagedrift.events import start_receiver

    port = int(os.environ.get("IMAGEDRIFT_WEBHOOK_PORT", "0") or 0)
    if not port or _RECEIVERS:
        return
    secret = os.environ.get("IMAGEDRIFT_WEBHOOK_SECRET", "")
    secret_file = os.environ.get("IMAGEDRIFT_WEBHOOK_SECRET_FILE", "")
    if not secret and secret_file:
        with open(secret_file, encoding="utf-8") as handle:
            secret = handle.read().strip()
    # deploy/ mounts the receiver's Secrets as optional: without them the operator still
    # polls, and says loudly why push events are off instead of crash-looping.
    if not secret:
        log.warning(
            "push-event receiver off: IMAGEDRIFT_WEBHOOK_PORT is set but neither "
            "IMAGEDRIFT_WEBHOOK_SECRET nor IMAGEDRIFT_WEBHOOK_SECRET_FILE gives a secret"
        )
        return
    certfile = os.environ.get("IMAGEDRIFT_WEBHOOK_CERT") or None
    keyfile = os.environ.get("IMAGEDRIFT_WEBHOOK_KEY") or None
    plain = os.environ.get("IMAGEDRIFT_WEBHOOK_PLAIN_HTTP", "").lower() in ("1", "true", "yes")
    missing = [f for f in (certfile, keyfile) if f is None or not os.path.exists(f)]
    if missing and not plain:
        log.warning(
            "push-event receiver off: it needs IMAGEDRIFT_WEBHOOK_CERT and IMAGEDRIFT_WEBHOOK_KEY "
            "(existing files), or IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true behind a TLS-terminating proxy"
        )
        return

    def on_push(refs: list[str]) -> None:
        for ref in refs:
            woken = runtime.wake_for_image(ref)
            log.info("push of %s woke %s", ref, ", ".join(woken) or "no policy")

    _RECEIVERS.append(
        start_receiver(
            host=os.environ.get("IMAGEDRIFT_WEBHOOK_HOST", "0.0.0.0"),
            port=port,
            secret=secret,
            on_push=on_push,
            certfile=certfile,
            keyfile=keyfile,
        )
    )


def _stop_receiver() -> None:
    while _RECEIVERS:
        _RECEIVERS.pop().stop()


def _budget() -> RequestBudget | None:
    """IMAGEDRIFT_REGISTRY_BUDGET requests per minute per registry (0: no budget)."""
    per_minute = float(os.environ.get("IMAGEDRIFT_REGISTRY_BUDGET", str(DEFAULT_PER_MINUTE)))
    if per_minute <= 0:
        return None
    return RequestBudget(per_minute, on_exhausted=STATE.metrics.on_budget_exhausted)


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    # Stop taking push events. The registry clients are left to process exit: timers can
    # still be mid-check here, and closing their connections would fail those checks.
    _stop_receiver()


# -- which workloads exist (kept in memory instead of listing them on every check) ----------


def _entry(body: kopf.Body) -> dict[str, Any]:
    return {
        "kind": body["kind"],
        "apiVersion": body["apiVersion"],
        "metadata": {
            "name": body.metadata.name,
            "namespace": body.metadata.namespace,
            "labels": dict(body.metadata.labels),
        },
    }


@kopf.index("apps", "v1", "deployments", labels={POLICY_LABEL: kopf.PRESENT})
def deployments(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: _entry(body)}


@kopf.index("apps", "v1", "statefulsets", labels={POLICY_LABEL: kopf.PRESENT})
def statefulsets(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: _entry(body)}


@kopf.index("apps", "v1", "daemonsets", labels={POLICY_LABEL: kopf.PRESENT})
def daemonsets(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: _entry(body)}


@kopf.index("batch", "v1", "cronjobs", labels={POLICY_LABEL: kopf.PRESENT})
def cronjobs(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: _entry(body)}


INDEXES = ("deployments", "statefulsets", "daemonsets", "cronjobs")  # the functions above


def _workloads(indexes: Iterable[kopf.Index[Any, Any]]) -> list[Mapping[str, Any]]:
    return [entry for index in indexes for entry in index.get(None, [])]


# -- the policy loop --------------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, PLURAL, id="check", interval=TICK, sharp=False)
def check(name: str, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    """Every tick: check the policy if it is due, write status, post Events.

    The workload indexes arrive as keyword arguments named after their index functions.
    """
    runtime = _runtime()
    plain = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    indexes = [kwargs[index] for index in INDEXES]
    result = runtime.tick(name, plain, _workloads(indexes))
    if result is None:
        return
    generation = int(body.metadata.get("generation") or 0)
    STATE.metrics.observe(
        name,
        plain["status"],
        result.status,
        result.conditions,
        [(e.reason, e.type) for e in result.events if e.target is plain],
        runtime.now(),
    )
    for key, value in result.status.items():
        patch.status[key] = value
    patch.status["conditions"] = merge(
        list(body.status.get("conditions") or []), result.conditions, generation, runtime.now()
    )
    for event in result.events:
        target = body if event.target is plain else cast(kopf.Body, event.target)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message[:1024])


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(name: str, **_: Any) -> None:
    if STATE.runtime is not None:
        STATE.runtime.forget(name)
    STATE.metrics.forget(name)
