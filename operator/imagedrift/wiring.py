"""The kopf wiring: the only module that imports kopf.

It reads settings at startup and builds the controller (``imagedrift.engine.controller``):
its workers, the workload watch cache, the Lease elector and the push-event receiver. kopf
feeds it what kopf is good at: the ImagePolicy watch (every body, as it changes). Which
replica works is one coordination.k8s.io Lease (``engine.leadership``), not kopf peering:
peering needs a daemon per policy, and that costs memory per policy on every replica. Run it
with
``kopf run -m imagedrift.wiring --all-namespaces`` (the container image does so).

Environment:
    IMAGEDRIFT_NAMESPACE        namespace of the operator (credentials Secrets live here)
    IMAGEDRIFT_WORKERS          workers that check policies (default 4)
    IMAGEDRIFT_CA_BUNDLE        a private CA, trusted in addition to the system roots
    IMAGEDRIFT_LEASE            Lease (in IMAGEDRIFT_NAMESPACE) electing the working replica
                                (default imagedrift; "" = no election, this replica works)
    IMAGEDRIFT_LEASE_SECONDS    lease duration (default 15: a standby takes over within it)
    IMAGEDRIFT_SMOKE_NAMESPACE  the smoke-test sandbox namespace (default imagedrift-smoke)
    IMAGEDRIFT_SMOKE_SERVICE_ACCOUNT  its service account, with no rights (imagedrift-smoke)
    IMAGEDRIFT_IDENTITY         this replica's name in the Lease (default POD_NAME or the
                                host name, plus a random suffix so a restart is a new holder)
    IMAGEDRIFT_METRICS_PORT     Prometheus metrics port (default 9090; 0 = off)
    IMAGEDRIFT_METRICS_ADDR     address it listens on (default all)
    IMAGEDRIFT_REGISTRY_BUDGET  requests per minute per registry host (default 600; 0 = none)
    IMAGEDRIFT_REGISTRY_MIRRORS host=mirror pairs (docker.io=mirror.example.com,...)
    IMAGEDRIFT_SECRET_TTL       seconds a credential Secret is reused before it is re-read
    IMAGEDRIFT_MAX_*            read limits for registry answers (imagedrift.registry.limits)
    IMAGEDRIFT_GIT_CACHE        where clones for GitOps write-back live (default a private
                                directory under the system's temporary directory)
    IMAGEDRIFT_GIT_REPOSITORIES clones kept at most (default 50; the least recently used go)
    IMAGEDRIFT_GIT_CACHE_BYTES  ... and bytes on disk, all together (default 512 MiB)
    IMAGEDRIFT_GIT_SECRET       the Secret naming each repository's credentials Secret
                                (default imagedrift-git; see engine.gitops_sources)
    IMAGEDRIFT_ARGOCD_NAMESPACE where Argo CD Applications live (default argocd)
    IMAGEDRIFT_WEBHOOK_PORT     push-event receiver port (default 0 = off)
    IMAGEDRIFT_WEBHOOK_SECRET   its shared secret (or IMAGEDRIFT_WEBHOOK_SECRET_FILE)
    IMAGEDRIFT_WEBHOOK_CERT/KEY its TLS key pair (IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true: none)
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from socket import gethostname
from typing import Any

import kopf

from imagedrift.core.conditions import Condition
from imagedrift.core.lease import LeaseSettings
from imagedrift.core.mirrors import parse_mirrors
from imagedrift.core.sandbox import Sandbox
from imagedrift.engine.caches import BaseWatcher, ImageCache, TtlCache
from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.commits import Committer
from imagedrift.engine.controller import Controller
from imagedrift.engine.git_writes import MAX_BYTES, GitWriter
from imagedrift.engine.gitops_sources import INDEX_SECRET, GitCredentialStore, SourceFinder
from imagedrift.engine.leadership import Elector
from imagedrift.engine.ports import Event
from imagedrift.engine.proposals import PullRequestClients
from imagedrift.engine.rebuild_step import RebuildStep
from imagedrift.engine.registries import RegistryPool
from imagedrift.kube.adapter import KubeAdapter, load_api_client
from imagedrift.kube.informer import WorkloadCache
from imagedrift.metrics import Metrics
from imagedrift.registry.budget import DEFAULT_PER_MINUTE, RequestBudget
from imagedrift.registry.limits import ReadLimits
from imagedrift.registry.trust import with_system_roots

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
log = logging.getLogger("imagedrift")


class _State:
    controller: Controller | None = None
    workloads: WorkloadCache | None = None
    pool: RegistryPool | None = None
    elector: Elector | None = None
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
    settings.peering.standalone = True  # the Lease elects; kopf only watches
    namespace = os.environ.get("IMAGEDRIFT_NAMESPACE", "imagedrift-system")
    api = load_api_client()
    kube = KubeAdapter(
        api,
        namespace,
        Sandbox(
            os.environ.get("IMAGEDRIFT_SMOKE_NAMESPACE") or Sandbox.namespace,
            os.environ.get("IMAGEDRIFT_SMOKE_SERVICE_ACCOUNT") or Sandbox.service_account,
        ),
    )
    metrics_port = int(os.environ.get("IMAGEDRIFT_METRICS_PORT", "9090"))
    if metrics_port:
        STATE.metrics.serve(metrics_port, os.environ.get("IMAGEDRIFT_METRICS_ADDR", "0.0.0.0"))
    STATE.pool = RegistryPool(
        kube,
        namespace=namespace,
        # The private CA is added to the system roots, never put in their place.
        verify=with_system_roots(os.environ.get("IMAGEDRIFT_CA_BUNDLE")),
        on_request=STATE.metrics.on_request,
        budget=_budget(),
        mirrors=parse_mirrors(os.environ.get("IMAGEDRIFT_REGISTRY_MIRRORS", "")),
        secret_ttl=float(os.environ.get("IMAGEDRIFT_SECRET_TTL", "60")),
        limits=ReadLimits.from_env(os.environ),
    )
    # The checker fills these caches; the controller invalidates them on a push and reads
    # when a base was last looked up, so both are handed the same objects.
    bases, searches = BaseWatcher(), TtlCache()
    checker = PolicyChecker(
        STATE.pool,
        kube,
        ImageCache(),
        bases=bases,
        searches=searches,
        sources=SourceFinder(
            kube, argocd_namespace=os.environ.get("IMAGEDRIFT_ARGOCD_NAMESPACE") or "argocd"
        ),
        committer=_committer(kube),
    )
    workloads = WorkloadCache(
        api, lambda ref, old, new: _controller().workload_changed(ref, old, new)
    )
    controller = Controller(
        checker,
        kube,
        workloads,
        bases=bases,
        searches=searches,
        workers=int(os.environ.get("IMAGEDRIFT_WORKERS", "4")),
        # Triggers read their Secrets in the operator's namespace, trust what the registries
        # trust, and fire on threads of their own (never holding a worker).
        rebuild=RebuildStep(
            kube, verify=with_system_roots(os.environ.get("IMAGEDRIFT_CA_BUNDLE")), workers=2
        ),
        observer=_observe,
    )
    STATE.controller, STATE.workloads = controller, workloads
    for policy in kube.list_policies():  # all of them known before any is decided on
        controller.policy_seen(policy)
    controller.start()
    workloads.start()
    _start_elector(kube, controller)
    _start_receiver(controller)


def _committer(kube: KubeAdapter) -> Committer:
    """GitOps write-back: clones in a directory only this process reads (they may hold
    private manifests), bounded in number; pull requests trusting what registries trust."""
    root = os.environ.get("IMAGEDRIFT_GIT_CACHE") or tempfile.mkdtemp(prefix="imagedrift-git-")
    os.makedirs(root, mode=0o700, exist_ok=True)
    credentials = GitCredentialStore(
        kube, index=os.environ.get("IMAGEDRIFT_GIT_SECRET") or INDEX_SECRET
    )
    writer = GitWriter(
        Path(root),
        credentials,
        max_repositories=int(os.environ.get("IMAGEDRIFT_GIT_REPOSITORIES", "50")),
        max_bytes=int(os.environ.get("IMAGEDRIFT_GIT_CACHE_BYTES", str(MAX_BYTES))),
        on_write=STATE.metrics.on_git_write,
    )
    ca = os.environ.get("IMAGEDRIFT_CA_BUNDLE")
    return Committer(
        writer,
        PullRequestClients(credentials, verify=ca or True),
        on_pull_request=STATE.metrics.on_pull_request,
    )


def _start_elector(kube: KubeAdapter, controller: Controller) -> None:
    lease = os.environ.get("IMAGEDRIFT_LEASE", "imagedrift")
    if not lease:
        log.info("no leader election (IMAGEDRIFT_LEASE is empty): this replica works")
        STATE.metrics.leading.set(1)
        controller.lead()
        return
    base = os.environ.get("IMAGEDRIFT_IDENTITY") or os.environ.get("POD_NAME") or gethostname()
    identity = f"{base}_{secrets.token_hex(4)}"

    def on_lead() -> None:
        STATE.metrics.leading.set(1)
        controller.lead()

    def on_unlead() -> None:
        STATE.metrics.leading.set(0)
        controller.unlead()

    STATE.elector = Elector(
        kube,
        lease,
        identity,
        LeaseSettings.from_duration(float(os.environ.get("IMAGEDRIFT_LEASE_SECONDS", "15"))),
        on_lead=on_lead,
        on_unlead=on_unlead,
    ).start()
    log.info("campaigning for lease %s/%s as %s", kube.namespace, lease, identity)


# -- push-event receiver (registry webhooks, Event Grid) ---------------------------------------

_RECEIVERS: list[Any] = []  # the running imagedrift.events.Receiver, if any


def _start_receiver(controller: Controller) -> None:
    """Start the push-event receiver when IMAGEDRIFT_WEBHOOK_PORT is set (0 = off).

    IMAGEDRIFT_WEBHOOK_SECRET (or IMAGEDRIFT_WEBHOOK_SECRET_FILE) is the shared secret;
    IMAGEDRIFT_WEBHOOK_CERT / IMAGEDRIFT_WEBHOOK_KEY the TLS key pair; without them the
    receiver serves plain HTTP only if IMAGEDRIFT_WEBHOOK_PLAIN_HTTP=true.
    IMAGEDRIFT_WEBHOOK_HOST is the address to bind (default 0.0.0.0). Each pushed image
    reference wakes the policies following it (``Controller.wake_for_image``). Its limits
    are read by ``_receiver_limits``.
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
            **_receiver_limits(),
        )
    )


def _receiver_limits() -> dict[str, Any]:
    """The receiver's limits from IMAGEDRIFT_WEBHOOK_DEADLINE (seconds per request, 10),
    _MAX_CONNECTIONS (1000), _WORKERS (threads calling on_push, 4), _QUEUE (deliveries
    waiting for them, 64), _RATE (requests a second per client address, 20; 0: no
    per-source limit) and _BURST (40)."""
    rate = float(os.environ.get("IMAGEDRIFT_WEBHOOK_RATE", "20") or 0)
    return {
        "deadline": float(os.environ.get("IMAGEDRIFT_WEBHOOK_DEADLINE", "10")),
        "max_connections": int(os.environ.get("IMAGEDRIFT_WEBHOOK_MAX_CONNECTIONS", "1000")),
        "workers": int(os.environ.get("IMAGEDRIFT_WEBHOOK_WORKERS", "4")),
        "queue": int(os.environ.get("IMAGEDRIFT_WEBHOOK_QUEUE", "64")),
        "rate": rate if rate > 0 else None,
        "burst": float(os.environ.get("IMAGEDRIFT_WEBHOOK_BURST", "40")),
        "max_bodies": int(os.environ.get("IMAGEDRIFT_WEBHOOK_MAX_BODIES", "32")),
    }


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
    if STATE.elector is not None:
        STATE.elector.stop()  # stops working here, then hands the Lease over at once
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
