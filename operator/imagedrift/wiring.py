"""The kopf wiring: the only module that imports kopf.

It reads settings at startup and builds the controller (``imagedrift.engine.controller``):
its workers, the workload watch cache and the push-event receiver. kopf feeds it what
kopf is good at: the ImagePolicy watch (every body, as it changes) and HA peering (a
daemon per policy runs only on the replica that is active; the controller works on a
policy only while its daemon runs here). Run it with
``kopf run -m imagedrift.wiring --all-namespaces`` (the container image does so).

Environment:
    IMAGEDRIFT_NAMESPACE        namespace of the operator (credentials Secrets live here)
    IMAGEDRIFT_WORKERS          workers that check policies (default 4)
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
from collections.abc import Mapping
from typing import Any

import kopf

from imagedrift.core.conditions import Condition
from imagedrift.engine.caches import BaseWatcher, ImageCache
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.controller import Controller
from imagedrift.engine.ports import Event
from imagedrift.engine.registries import RegistryPool
from imagedrift.kube.adapter import KubeAdapter, load_api_client
from imagedrift.kube.informer import WorkloadCache
from imagedrift.metrics import Metrics
from imagedrift.registry.budget import DEFAULT_PER_MINUTE, RequestBudget

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
log = logging.getLogger("imagedrift")


class _State:
    controller: Controller | None = None
    workloads: WorkloadCache | None = None
    pool: RegistryPool | None = None
    metrics = Metrics()


STATE = _State()


def _controller() -> Controller:
    if STATE.controller is None:
        raise kopf.TemporaryError("operator is still starting", delay=1)
    return STATE.controller


def _observe(
    name: str,
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    conditions: list[Condition],
    events: list[Event],
) -> None:
    on_policy = [(e.reason, e.type) for e in events if e.target.get("kind") == "ImagePolicy"]
    controller = _controller()
    STATE.metrics.observe(name, previous, status, conditions, on_policy, controller.now())


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
    peering = os.environ.get("IMAGEDRIFT_PEERING", "imagedrift")
    if peering:
        settings.peering.name = peering
        settings.peering.clusterwide = True
        if not settings.peering.priority:
            # Equal priorities make every replica pause; a random one elects a single worker.
            settings.peering.priority = secrets.randbelow(1_000_000) + 1
    namespace = os.environ.get("IMAGEDRIFT_NAMESPACE", "imagedrift-system")
    api = load_api_client()
    kube = KubeAdapter(api, namespace)
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
    checker = PolicyChecker(STATE.pool, kube, ImageCache(), BaseWatcher())
    workloads = WorkloadCache(
        api, lambda ref, old, new: _controller().workload_changed(ref, old, new)
    )
    controller = Controller(
        checker,
        kube,
        workloads,
        workers=int(os.environ.get("IMAGEDRIFT_WORKERS", "4")),
        observer=_observe,
    )
    STATE.controller, STATE.workloads = controller, workloads
    for policy in kube.list_policies():  # all of them known before any is decided on
        controller.policy_seen(policy)
    controller.start()
    workloads.start()
    _start_receiver(controller)


# -- push-event receiver (registry webhooks, Event Grid) ---------------------------------------

_RECEIVERS: list[Any] = []  # the running imagedrift.events.Receiver, if any


def _start_receiver(controller: Controller) -> None:
    """Start the push-event receiver when IMAGEDRIFT_WEBHOOK_PORT is set (0 = off).

    IMAGEDRIFT_WEBHOOK_SECRET (or IMAGEDRIFT_WEBHOOK_SECRET_FILE) is the shared secret;
    IMAGEDRIFT_WEBHOOK_CERT / IMAGEDRIFT_WEBHOOK_KEY the TLS key pair; without them the
    receiver serves plain HTTP only if IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true.
    IMAGEDRIFT_WEBHOOK_HOST is the address to bind (default 0.0.0.0). Each pushed image
    reference wakes the policies following it (``Controller.wake_for_image``).
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
            woken = controller.wake_for_image(ref)
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
    # Stop taking push events and new work. The registry clients are left to process exit:
    # a worker can still be mid-check here, and closing its connections would fail it.
    _stop_receiver()
    if STATE.controller is not None:
        STATE.controller.stop()
    if STATE.workloads is not None:
        STATE.workloads.stop()


# -- what kopf feeds the controller -------------------------------------------------------


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": body.get("kind", "ImagePolicy"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }


@kopf.on.event(GROUP, VERSION, PLURAL)
async def policy_event(event: kopf.RawEvent, name: str, body: kopf.Body, **_: Any) -> None:
    """Every listed, added, changed or deleted ImagePolicy goes to the controller's store."""
    controller = _controller()
    if event.get("type") == "DELETED":
        controller.policy_gone(name)
        STATE.metrics.forget(name)
    else:
        controller.policy_seen(_plain(body))


@kopf.daemon(GROUP, VERSION, PLURAL, id="hold", cancellation_timeout=10)
async def hold(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """While kopf runs this daemon here (this replica is active in the peering, and the
    policy exists), the controller works on the policy; when it stops, the work stops."""
    controller = _controller()
    controller.hold(name)
    try:
        await stopped.wait()
    finally:
        controller.release(name)
