"""Benchmark: the real operator process at fleet size.

    make bench-scale                                     (100 policies, 1,000 Deployments)
    make bench-scale ARGS="--policies 1000 --workloads 10000 --bases 20"
    .venv/bin/python scripts/bench_scale.py --policies 10 --workloads 100 --bases 2 \\
        --interval 10 --steady 20 --push-events          (a quick run)

Starts the harness' control plane (etcd, kube-apiserver, controller-manager, scheduler,
kwok on 127.0.0.1) and a CNCF registry on loopback, publishes --bases base images and
--apps app images built on them (annotated with the OCI base-image keys), declares
--policies ImagePolicies spread round-robin over the bases and --workloads opted-in
Deployments spread over the policies (each pinned by digest to an app on its policy's
base), then runs the operator exactly as users do (``kopf run -m imagedrift.wiring``, in its
own process) and measures it from outside:

1. first cycle: operator start until every policy has Ready=True, with the operator's CPU
   and memory (utime+stime and VmRSS/VmHWM of its process group from /proc);
2. steady window (--steady seconds after that): operator CPU and memory, registry requests
   (from the registry's own access log) and kube-apiserver requests (apiserver_request_total
   from its /metrics) normalised per --interval, and the size of the policies' status;
3. the change: base 0 is re-published and its apps rebuilt on it (tag 1.0.1); the time
   until every affected Deployment runs its rebuilt image pinned by digest (first patch,
   50%, 100%), timed from the push and from the operator's detection of the new base (its
   first read of the new digest's manifest in the registry's log), and until the affected
   policies are UpToDate again. With --push-events a
   distribution notification for the base push is POSTed to the operator's receiver
   instead of waiting for the next interval.

Workloads start on ``app-<j>:1.0.0@sha256:..`` (pinned by digest; the tag tells the
operator which version runs, so a candidate can be proven not to be a downgrade before
imagedrift has recorded anything on the workload). --pin digest starts them on a bare
``app-<j>@sha256:..`` instead; --pin tag on ``app-<j>:1.0.0`` (as most manifests say it:
the operator resolves the tag's digest, once per interval for every policy that asks).
A workload counts as patched when it runs ``app-<j>@<rebuilt digest>`` (the same digest
with the tag kept counts too, and is noted).

The rebuilt apps are pushed before the base, so the operator never sees the new base
without its rebuilt apps (a pipeline that rebuilds later is a different measurement);
the clock of phase 3 starts when the base push returns.

Deployments have --replicas 0 by default: 10,000 Deployments would otherwise make 10,000
kwok pods, and that measures the scheduler and kwok, not imagedrift. The Deployment
controller still creates a ReplicaSet per Deployment and rolls it on a patch; with
replicas 0 a rollout completes at once. Use --replicas 1 for small runs with real pods.

The kube-apiserver counts every client's requests: the breakdown names the resources, so
the operator's (imagepolicies, workloads, events) can be told from the control plane's own
heartbeats (leases, nodes; the operator's own Lease is among the leases); with replicas 0
the latter are few. This script itself sends
nothing to the apiserver during the steady window except the two /metrics scrapes.

Prints figures and a summary table; it asserts nothing. Exit 0 when every phase finished
(even if a target was missed), 1 when a phase timed out or the operator died (the message
says which, with the tail of the operator's log). Everything it starts is stopped at the
end, also on failure or Ctrl-C; --keep leaves it running until Ctrl-C for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.operator import OperatorProcess  # noqa: E402
from tests.harness.procs import free_port, wait_for  # noqa: E402
from tests.harness.registry import Registry, Served  # noqa: E402

from imagedrift.core.refs import short_digest  # noqa: E402
from imagedrift.registry.oci import OCI_MANIFEST  # noqa: E402
from imagedrift.registry.push import Image, Layer, base_marks, push  # noqa: E402

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
POLICY_LABEL = "imagedrift.io/policy"
BASE_LABEL = "bench.imagedrift.io/base"  # which base a Deployment's policy follows
APP_LABEL = "bench.imagedrift.io/app"  # which app image it runs
OPERATOR_NAMESPACE = "imagedrift-system"
PAGE = 500  # items per page of every LIST this script sends
POLL = 1.0  # seconds between LIST polls
PROGRESS = 5.0  # seconds between progress lines
WORKLOAD_RESOURCES = ("deployments", "statefulsets", "daemonsets", "cronjobs")
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
LONG_RUNNING_VERBS = ("WATCH", "CONNECT")
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


# -- output ----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


def header(text: str) -> None:
    print(f"\n== {text}", flush=True)


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def kib(size: float) -> str:
    return f"{size / 1024:.1f} KiB"


@dataclass
class Summary:
    """Rows of the final table, in the order they were measured: (figure, value, target)."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, figure: str, value: str, target: str = "") -> None:
        self.rows.append((figure, value, target))

    def print(self) -> None:
        header("Summary")
        if not self.rows:
            print("(nothing measured)")
            return
        width = max(len(r[0]) for r in self.rows)
        value_width = max(len(r[1]) for r in self.rows)
        for figure, value, target in self.rows:
            note = f"  {target}" if target else ""
            print(f"  {figure:<{width}}  {value:>{value_width}}{note}")
        sys.stdout.flush()


class PhaseTimeout(Exception):
    def __init__(self, phase: str, seconds: float, detail: str = "") -> None:
        super().__init__(f"phase '{phase}' timed out after {seconds:.0f}s{detail}")
        self.phase = phase


class OperatorDied(Exception):
    pass


# -- arguments -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--policies", type=int, default=100, help="ImagePolicies (default 100)")
    add("--workloads", type=int, default=1000, help="opted-in Deployments in all (default 1000)")
    add("--bases", type=int, default=10, help="distinct base images (default 10)")
    add("--apps", type=int, default=None, help="distinct app images (default bases * 5)")
    add("--interval", type=int, default=60, help="spec.base.interval in seconds (default 60)")
    add("--replicas", type=int, default=0, help="replicas per Deployment (default 0, see above)")
    add("--namespaces", type=int, default=10, help="namespaces the workloads spread over")
    add(
        "--pin",
        choices=("tag-digest", "digest", "tag"),
        default="tag-digest",
        help="initial image: repo:1.0.0@sha256:.. (default), repo@sha256:.. or repo:1.0.0 "
        "(see above)",
    )
    add(
        "--settle",
        type=float,
        default=120.0,
        help="seconds to let the Deployment controller catch up before the operator starts",
    )
    add("--steady", type=float, default=60.0, help="seconds of the steady window (default 60)")
    add(
        "--affected",
        type=int,
        default=None,
        help="workloads on base 0, which the re-publish affects (default: the round-robin share)",
    )
    add(
        "--push-events",
        action="store_true",
        help="POST a registry push notification to the operator instead of waiting an interval",
    )
    add("--threads", type=int, default=16, help="threads creating Deployments (default 16)")
    add(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator (repeatable), e.g. IMAGEDRIFT_WORKERS=16",
    )
    add("--timeout", type=float, default=900.0, help="cap of each phase in seconds (default 900)")
    add("--ready-timeout", type=float, default=None, help="cap of the first cycle (--timeout)")
    add("--patch-timeout", type=float, default=None, help="cap of the change phase (--timeout)")
    add("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args(argv)
    if args.apps is None:
        args.apps = args.bases * 5
    args.ready_timeout = args.ready_timeout or args.timeout
    args.patch_timeout = args.patch_timeout or args.timeout
    problems = []
    if min(args.policies, args.workloads, args.bases, args.namespaces, args.threads) < 1:
        problems.append("--policies, --workloads, --bases, --namespaces, --threads must be >= 1")
    if args.apps < args.bases:
        problems.append("--apps must be at least --bases (every base needs an app built on it)")
    if args.interval < 1 or args.steady <= 0 or args.replicas < 0:
        problems.append("--interval >= 1, --steady > 0 and --replicas >= 0 please")
    if args.affected is not None:
        if not 1 <= args.affected <= args.workloads:
            problems.append("--affected must be between 1 and --workloads")
        elif args.affected < args.workloads and min(args.bases, args.policies) < 2:
            problems.append("--affected below --workloads needs policies on a second base")
    for item in args.operator_env:
        if "=" not in item:
            problems.append(f"--operator-env {item!r} is not KEY=VALUE")
    if problems:
        parser.error("; ".join(problems))
    return args


# -- what is published and created -----------------------------------------------------------


def layer(text: str) -> Layer:
    return Layer.from_files({"content.txt": text})


def base_image(index: int, patch: str) -> Image:
    """A small two-layer base; ``patch`` changes the last layer (a re-publish with fixes)."""
    return Image(layers=(layer(f"os files {index}"), layer(f"security fixes {index} {patch}")))


@dataclass
class Catalog:
    """The published images: base ``b`` is ``bench/base-<b>:1``, app ``j`` is
    ``bench/app-<j>:1.0.0`` built on base ``j % bases``."""

    host: str
    bases: list[Image]
    apps: list[Image]
    app_digests: list[str]

    def base_repo(self, b: int) -> str:
        return f"bench/base-{b}"

    def app_repo(self, j: int) -> str:
        return f"bench/app-{j}"

    def base_of_app(self, j: int) -> int:
        return j % len(self.bases)

    def apps_on(self, b: int) -> list[int]:
        return [j for j in range(len(self.apps)) if self.base_of_app(j) == b]

    def pinned(self, j: int, digest: str | None = None) -> str:
        return f"{self.host}/{self.app_repo(j)}@{digest or self.app_digests[j]}"

    def initial(self, j: int, pin: str) -> str:
        """What a workload runs before the change: ``repo:1.0.0@digest``, ``repo@digest``
        or ``repo:1.0.0``."""
        if pin == "digest":
            return self.pinned(j)
        if pin == "tag":
            return f"{self.host}/{self.app_repo(j)}:1.0.0"
        return f"{self.host}/{self.app_repo(j)}:1.0.0@{self.app_digests[j]}"


@dataclass(frozen=True)
class Policy:
    name: str
    base: int


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    policy: Policy
    app: int


def app_on(catalog: Catalog, base: Image, b: int, j: int, version: str) -> Image:
    marks = base_marks(base.digest, f"{catalog.host}/{catalog.base_repo(b)}:1")
    return base.derive(layer(f"app {j} {version}"), annotations=marks)


def publish_images(registry: Registry, bases: int, apps: int) -> Catalog:
    started = time.monotonic()
    client = registry.client()
    try:
        catalog = Catalog(registry.host, [], [], [])
        for b in range(bases):
            image = base_image(b, "v1")
            push(client, catalog.base_repo(b), image, "1")
            catalog.bases.append(image)
        for j in range(apps):
            b = catalog.base_of_app(j)
            image = app_on(catalog, catalog.bases[b], b, j, "1.0.0")
            catalog.app_digests.append(push(client, catalog.app_repo(j), image, "1.0.0"))
            catalog.apps.append(image)
    finally:
        client.close()
    say(f"published {bases} bases and {apps} apps in {time.monotonic() - started:.1f}s")
    return catalog


def policy_body(catalog: Catalog, policy: Policy, interval: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": policy.name, "labels": {BASE_LABEL: str(policy.base)}},
        "spec": {
            "base": {
                "image": f"{catalog.host}/{catalog.base_repo(policy.base)}",
                "tag": "1",
                "interval": f"{interval}s",
                "insecure": True,
            },
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
        },
    }


def plan_policies(count: int, bases: int) -> list[Policy]:
    width = len(str(count - 1))
    return [Policy(f"bench-{p:0{width}d}", p % bases) for p in range(count)]


def plan_workloads(
    args: argparse.Namespace, policies: list[Policy], catalog: Catalog
) -> list[Workload]:
    """Spread the workloads over the policies; each runs an app on its policy's base.

    Without --affected: round-robin over all policies. With it: exactly that many on the
    policies of base 0, the rest round-robin over the others.
    """
    if args.affected is None:
        owners = [policies[w % len(policies)] for w in range(args.workloads)]
    else:
        on_zero = [p for p in policies if p.base == 0]
        others = [p for p in policies if p.base != 0]
        owners = [on_zero[w % len(on_zero)] for w in range(args.affected)]
        owners += [others[w % len(others)] for w in range(args.workloads - args.affected)]
    width = len(str(args.workloads - 1))
    per_base: Counter[int] = Counter()
    workloads = []
    for w, policy in enumerate(owners):
        candidates = catalog.apps_on(policy.base)
        app = candidates[per_base[policy.base] % len(candidates)]
        per_base[policy.base] += 1
        workloads.append(Workload(f"bench-{w % args.namespaces}", f"w-{w:0{width}d}", policy, app))
    return workloads


def deployment_body(
    catalog: Catalog, workload: Workload, replicas: int, pin: str
) -> dict[str, Any]:
    labels = {
        "app": workload.name,
        POLICY_LABEL: workload.policy.name,
        BASE_LABEL: str(workload.policy.base),
        APP_LABEL: str(workload.app),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload.name, "namespace": workload.namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": workload.name}},
            "template": {
                "metadata": {"labels": {"app": workload.name}},
                "spec": {
                    "containers": [{"name": "app", "image": catalog.initial(workload.app, pin)}]
                },
            },
        },
    }


# -- the Kubernetes API, raw JSON (the client's models are too slow for 10,000 objects) ------


class Api:
    """The admin kubernetes client, sized for --threads concurrent requests."""

    def __init__(self, kubeconfig: Path, pool: int) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        load: Any = config.load_kube_config
        load(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = max(pool, 4)
        # Typed as Any: every call asks for the raw response (_preload_content=False).
        self.client: Any = client.ApiClient(configuration)
        self.apps: Any = client.AppsV1Api(self.client)
        self.core: Any = client.CoreV1Api(self.client)
        self.custom: Any = client.CustomObjectsApi(self.client)

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _read(response: Any) -> bytes:
        """The whole body, then the connection back to the pool (in that order: a
        connection returned unread would hand its leftovers to the next request)."""
        try:
            return bytes(response.data)
        finally:
            response.release_conn()

    def _json(self, response: Any) -> dict[str, Any]:
        return dict(json.loads(self._read(response)))

    def _paged(self, call: Callable[..., Any], **params: Any) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            extra = {"_continue": token} if token else {}
            page = self._json(
                call(limit=PAGE, _preload_content=False, _request_timeout=120, **params, **extra)
            )
            yield from page.get("items") or ()
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def policies(self, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"label_selector": selector} if selector else {}
        return list(self._paged(self.custom.list_cluster_custom_object, **self._crd(), **params))

    def deployments(self, selector: str) -> list[dict[str, Any]]:
        return list(
            self._paged(self.apps.list_deployment_for_all_namespaces, label_selector=selector)
        )

    def create_deployment(self, body: dict[str, Any]) -> None:
        self._read(
            self.apps.create_namespaced_deployment(
                body["metadata"]["namespace"], body, _preload_content=False
            )
        )

    def create_policy(self, body: dict[str, Any]) -> None:
        self._read(
            self.custom.create_cluster_custom_object(
                **self._crd(), body=body, _preload_content=False
            )
        )

    def create_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self._read(self.core.create_namespace(body, _preload_content=False))

    def metrics_text(self) -> str:
        """The kube-apiserver's /metrics (the admin may GET it)."""
        request = self.client.param_serialize(
            "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
        )
        response = self.client.call_api(*request, _request_timeout=60)
        return bytes(response.read()).decode(errors="replace")

    @staticmethod
    def _crd() -> dict[str, str]:
        return {"group": GROUP, "version": VERSION, "plural": PLURAL}


# -- the operator's process group, read from /proc ---------------------------------------------


@dataclass(frozen=True)
class Usage:
    at: float  # time.monotonic()
    cpu: float  # utime+stime (+ reaped children) of the group, seconds
    rss: int  # VmRSS summed over the group, bytes
    hwm: int  # VmHWM summed over the group, bytes (the leader's peak RSS, for one process)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _status_kib(pid: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def group_usage(pgid: int) -> Usage:
    """CPU and memory of every process in the group ``pgid`` (the operator and any child;
    ManagedProcess starts it in its own session)."""
    cpu_ticks = rss = hwm = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:  # field 5: pgrp
            continue
        cpu_ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        rss += _status_kib(entry, "VmRSS:") * 1024
        hwm += _status_kib(entry, "VmHWM:") * 1024
    return Usage(time.monotonic(), cpu_ticks / CLK_TCK, rss, hwm)


class Sampler:
    """Samples the operator's usage every half second in a thread (for the RSS peaks)."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.samples: list[Usage] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.now()
            self._stop.wait(0.5)

    def now(self) -> Usage:
        usage = group_usage(self.pgid)
        if usage.rss:
            with self._lock:
                self.samples.append(usage)
        return usage

    def peak_rss(self, since: float = 0.0, until: float = float("inf")) -> int:
        with self._lock:
            return max((u.rss for u in self.samples if since <= u.at <= until), default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def report_usage(summary: Summary, phase: str, start: Usage, end: Usage, peak: int) -> None:
    seconds = max(end.at - start.at, 1e-9)
    cpu = end.cpu - start.cpu
    share = 100 * cpu / seconds
    say(
        f"operator over {phase}: CPU {cpu:.1f}s in {seconds:.1f}s = {share:.1f}% of one core; "
        f"RSS now {mib(end.rss)}, peak in window {mib(peak)}, VmHWM {mib(end.hwm)}"
    )
    summary.add(f"{phase}: operator CPU", f"{cpu:.1f}s = {share:.1f}% of a core")
    summary.add(f"{phase}: operator RSS now / peak", f"{mib(end.rss)} / {mib(peak)}")


# -- request accounting ------------------------------------------------------------------------

ApiKey = tuple[str, str]  # (verb, resource.group[/subresource])


def apiserver_requests(api: Api) -> tuple[Counter[ApiKey], Counter[ApiKey]]:
    """apiserver_request_total summed over codes (and the non-2xx part), by verb and
    resource, without long-running verbs."""
    lines = [
        line
        for line in api.metrics_text().splitlines()
        if line.startswith("apiserver_request_total{")
    ]
    totals: Counter[ApiKey] = Counter()
    errors: Counter[ApiKey] = Counter()
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            labels = sample.labels
            verb = labels.get("verb", "")
            if verb in LONG_RUNNING_VERBS:
                continue
            resource = labels.get("resource", "")
            if not resource:
                name = "(non-resource URL)"
            else:
                group = labels.get("group", "")
                name = f"{resource}.{group}" if group else resource
                if labels.get("subresource"):
                    name += f"/{labels['subresource']}"
            key = (verb, name)
            totals[key] += int(sample.value)
            if not labels.get("code", "").startswith("2"):
                errors[key] += int(sample.value)
    return totals, errors


def who(resource: str) -> str:
    """Who, most likely, sends requests for ``resource`` in this cluster."""
    plain = resource.split(".")[0].split("/")[0]
    if plain == "imagepolicies":
        return "operator"
    if plain in WORKLOAD_RESOURCES and resource.endswith("/status"):
        return "kube-controller-manager (the operator never writes workload status)"
    if plain in WORKLOAD_RESOURCES:
        return "operator / kube-controller-manager"
    if plain == "events":
        return "operator / control plane"
    if plain == "leases":
        # The operator's elector reads and renews its Lease every 2 s: 30 GET + 30 PUT a minute.
        return "heartbeats (control plane) + the operator's Lease (a GET and a PUT per 2 s)"
    if plain == "nodes":
        return "heartbeats (kube-apiserver, kwok, controllers)"
    if resource == "(non-resource URL)":
        return "this script (/metrics), health checks"
    if plain in ("pods", "replicasets", "endpointslices", "endpoints"):
        return "kube-controller-manager / scheduler / kwok"
    return "control plane"


def print_api_deltas(
    summary: Summary,
    start: tuple[Counter[ApiKey], Counter[ApiKey]],
    end: tuple[Counter[ApiKey], Counter[ApiKey]],
    seconds: float,
    interval: int,
) -> None:
    delta = end[0] - start[0]
    failed = end[1] - start[1]
    scale = interval / seconds
    header(f"kube-apiserver requests in the steady window, per {interval}s interval (no WATCH)")
    if not delta:
        print("  none")
    print(
        f"  {'verb':<7} {'resource':<44} {'count':>7} {'/interval':>10} {'non-2xx':>7}  likely from"
    )
    for (verb, resource), count in sorted(delta.items(), key=lambda kv: (-kv[1], kv[0])):
        print(
            f"  {verb:<7} {resource:<44} {count:>7} {count * scale:>10.1f} "
            f"{failed.get((verb, resource), 0):>7}  {who(resource)}"
        )
    workload_gets = sum(
        n
        for (verb, res), n in delta.items()
        if verb == "GET" and res.split(".")[0] in WORKLOAD_RESOURCES
    )
    policy_writes = sum(
        n
        for (verb, res), n in delta.items()
        if verb in WRITE_VERBS and res.startswith("imagepolicies")
    )
    workload_writes = sum(
        n
        for (verb, res), n in delta.items()
        if verb in WRITE_VERBS
        and res.split(".")[0] in WORKLOAD_RESOURCES
        and not res.endswith("/status")
    )
    status_writes = sum(
        n
        for (verb, res), n in delta.items()
        if verb in WRITE_VERBS
        and res.split(".")[0] in WORKLOAD_RESOURCES
        and res.endswith("/status")
    )
    event_writes = sum(
        n for (verb, res), n in delta.items() if verb in WRITE_VERBS and res.startswith("events")
    )
    lists = sum(n for (verb, _), n in delta.items() if verb == "LIST")
    verdict = "ok" if workload_gets == 0 else "MISSED"
    print(
        f"  GET of deployments/statefulsets/daemonsets/cronjobs: {workload_gets} "
        f"({workload_gets * scale:.1f}/interval; target 0: {verdict})"
    )
    print(
        f"  writes per interval: imagepolicies {policy_writes * scale:.1f}, "
        f"workloads {workload_writes * scale:.1f} (their /status, by the controllers: "
        f"{status_writes * scale:.1f}), events {event_writes * scale:.1f}; "
        f"LIST (all) {lists * scale:.1f}"
    )
    summary.add(
        "steady: API GET of workloads / interval",
        f"{workload_gets * scale:.1f}",
        f"target 0: {verdict}",
    )
    summary.add("steady: API writes imagepolicies / interval", f"{policy_writes * scale:.1f}")
    summary.add(
        "steady: API writes workloads / interval", f"{workload_writes * scale:.1f}", "expect 0"
    )
    summary.add("steady: API writes events / interval", f"{event_writes * scale:.1f}")
    summary.add("steady: API LIST (all clients) / interval", f"{lists * scale:.1f}")


_REGISTRY_PATH = re.compile(
    r"^/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)$"
)


def registry_kind(entry: Served) -> str:
    """``manifest HEAD (base)``, ``tags list (app)``, ... for one served request."""
    if entry.path.rstrip("/") == "/v2":
        return f"{entry.method} /v2/ (ping)"
    match = _REGISTRY_PATH.match(entry.path)
    if not match:
        return f"{entry.method} other"
    repo = match["repo"]
    owner = "base" if "/base-" in repo else "app" if "/app-" in repo else "other"
    kind = match["kind"]
    if kind == "manifests":
        label = f"manifest {entry.method}"
    elif kind == "tags":
        label = "tags list"
    elif kind == "referrers":
        label = "referrers"
    elif match["rest"].startswith("uploads"):
        label = "blob upload"
    else:
        label = f"blob {entry.method}"
    return f"{label} ({owner})"


def print_registry(
    title: str, entries: list[Served], scale: float | None, unit: str, limit: int | None = None
) -> Counter[str]:
    kinds = Counter(registry_kind(e) for e in entries)
    header(title)
    if not kinds:
        print("  none")
    for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])):
        per = f" {count * scale:>9.1f} {unit}" if scale is not None else ""
        print(f"  {kind:<28} {count:>7}{per}")
    statuses = Counter(e.status for e in entries)
    print(f"  status codes: {dict(sorted(statuses.items()))}")
    if limit is not None and scale is not None:
        base = sum(n for k, n in kinds.items() if k.endswith("(base)"))
        verdict = "ok" if base * scale <= limit + 0.5 else "MISSED"
        print(
            f"  base lookups {base * scale:.1f} {unit}, limit one per distinct base = {limit} "
            f"({verdict}); all requests {len(entries) * scale:.1f} {unit}"
        )
    return kinds


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's own counters, summed: registry requests by method, checks by result."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    wanted = ("imagedrift_registry_requests_total{", "imagedrift_checks_total{")
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name.startswith("imagedrift_registry_requests"):
                key = f"registry {sample.labels.get('method', '?')}"
            else:
                key = f"checks {sample.labels.get('result', '?')}"
            sums[key] = sums.get(key, 0.0) + sample.value
    return sums


# -- phases ---------------------------------------------------------------------------------


def setup_cluster(cp: ControlPlane, api: Api, namespaces: int) -> None:
    cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/imagepolicies.imagedrift.io"
    )
    for name in [OPERATOR_NAMESPACE, *(f"bench-{i}" for i in range(namespaces))]:
        api.create_namespace(name)


def create_objects(
    api: Api, catalog: Catalog, policies: list[Policy], workloads: list[Workload], args: Any
) -> float:
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        started = time.monotonic()
        list(
            pool.map(api.create_policy, [policy_body(catalog, p, args.interval) for p in policies])
        )
        say(f"created {len(policies)} ImagePolicies in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        bodies = [deployment_body(catalog, w, args.replicas, args.pin) for w in workloads]
        list(pool.map(api.create_deployment, bodies))
        seconds = time.monotonic() - started
    say(
        f"created {len(bodies)} Deployments in {seconds:.1f}s with {args.threads} threads "
        f"({len(bodies) / max(seconds, 1e-9):.0f}/s)"
    )
    return seconds


def wait_settled(api: Api, count: int, timeout: float) -> float:
    """Until the Deployment controller has observed every Deployment (so its catching up
    does not compete with the operator's first cycle)."""
    started = time.monotonic()
    next_progress = started + PROGRESS
    while True:
        items = api.deployments(POLICY_LABEL)
        observed = sum(
            1
            for d in items
            if (d.get("status") or {}).get("observedGeneration", 0)
            >= d["metadata"].get("generation", 1)
        )
        if observed >= count:
            seconds = time.monotonic() - started
            say(f"the Deployment controller observed all {count} Deployments after {seconds:.1f}s")
            return seconds
        now = time.monotonic()
        if now - started > timeout:
            # The Deployment controller of the test control plane settles a few thousand
            # Deployments an hour on 2 cores; the operator starts anyway and its watch sees
            # the rest catch up (status-only changes cost it a parse, not a check).
            say(
                f"the Deployment controller observed {observed}/{count} Deployments after "
                f"{now - started:.0f}s (--settle); starting the operator anyway"
            )
            return now - started
        if now >= next_progress:
            say(f"  controller-manager observed {observed}/{count} Deployments")
            next_progress = now + PROGRESS
        time.sleep(POLL)


def operator_env(args: argparse.Namespace) -> tuple[dict[str, str], int, int, str]:
    """The operator's environment: metrics port, and the receiver with --push-events.
    Returns it with the metrics port, the receiver port (0: off) and its secret."""
    metrics_port = free_port()
    # As the container image and deploy/ run it (MALLOC_ARENA_MAX=2, see the Dockerfile).
    env = {
        "IMAGEDRIFT_METRICS_PORT": str(metrics_port),
        "MALLOC_ARENA_MAX": "2",
        "IMAGEDRIFT_LEASE": "imagedrift",  # elected through the Lease, as deploy/ runs it
    }
    webhook_port, secret = 0, ""
    if args.push_events:
        webhook_port, secret = free_port(), secrets.token_urlsafe(24)
        env |= {
            "IMAGEDRIFT_WEBHOOK_PORT": str(webhook_port),
            "IMAGEDRIFT_WEBHOOK_SECRET": secret,
            "IMAGEDRIFT_WEBHOOK_PLAIN_HTTP": "true",
            "IMAGEDRIFT_WEBHOOK_HOST": "127.0.0.1",
        }
    env |= dict(item.split("=", 1) for item in args.operator_env)
    return env, metrics_port, webhook_port, secret


def launch(operator: OperatorProcess, webhook_port: int) -> float:
    """Start the operator (``kopf run -m imagedrift.wiring``) and wait until it is live
    (and its receiver answers, with --push-events); returns the monotonic start time."""
    started = time.monotonic()
    try:
        operator.start()
    except TimeoutError as exc:
        raise OperatorDied(f"the operator did not become live: {exc}") from exc
    except Exception as exc:  # HarnessError: it exited
        raise OperatorDied(f"the operator did not start: {exc}") from exc
    assert operator.proc is not None
    say(f"operator live after {time.monotonic() - started:.1f}s (pid {operator.proc.pid})")
    if webhook_port:
        try:
            wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{webhook_port}/healthz", timeout=2).is_success,
                what="the operator's push-event receiver",
                timeout=30,
            )
        except TimeoutError as exc:
            raise OperatorDied(f"--push-events: the receiver is not up: {exc}") from exc
    return started


def check_operator(operator: OperatorProcess) -> None:
    if operator.proc is None or not operator.proc.alive():
        code = operator.proc.proc.returncode if operator.proc else None
        raise OperatorDied(f"the operator exited (code {code})")


def logged_errors(operator: OperatorProcess) -> tuple[int, str]:
    """How many ERROR lines the operator logged, and the last one."""
    errors = [line for line in operator.log().splitlines() if "[ERROR" in line]
    return len(errors), errors[-1] if errors else ""


def error_note(operator: OperatorProcess) -> str:
    count, last = logged_errors(operator)
    return f"; the operator logged {count} ERROR lines, the last: {last[:300]}" if count else ""


def ready_condition(policy: dict[str, Any]) -> dict[str, Any]:
    for cond in (policy.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def wait_all_ready(
    api: Api, operator: OperatorProcess, count: int, started: float, timeout: float
) -> tuple[float, list[dict[str, Any]]]:
    next_progress = time.monotonic() + PROGRESS
    while True:
        check_operator(operator)
        items = api.policies()
        ready = [p for p in items if ready_condition(p).get("status") == "True"]
        now = time.monotonic()
        if len(ready) >= count:
            return now - started, items
        if now - started > timeout:
            raise PhaseTimeout(
                "first cycle (all policies Ready)",
                timeout,
                f": {len(ready)}/{count} Ready; {describe_not_ready(items)}{error_note(operator)}",
            )
        if now >= next_progress:
            say(f"  Ready {len(ready)}/{count}; {describe_not_ready(items)}{error_note(operator)}")
            next_progress = now + PROGRESS
        time.sleep(POLL)


def describe_not_ready(items: list[dict[str, Any]]) -> str:
    """What the policies that are not Ready say, counted by (status, reason)."""
    states: Counter[str] = Counter()
    for policy in items:
        cond = ready_condition(policy)
        if cond.get("status") == "True":
            continue
        states[f"{cond.get('status', 'no status')}/{cond.get('reason', '-')}"] += 1
    if not states:
        return "all Ready"
    return "not Ready: " + ", ".join(f"{k} {n}" for k, n in states.most_common(4))


def describe_states(items: list[dict[str, Any]]) -> str:
    """Ready status/reason of ``items``, counted."""
    states = Counter(
        f"{c.get('status', 'no status')}/{c.get('reason', '-')}"
        for c in map(ready_condition, items)
    )
    return ", ".join(f"{k} {n}" for k, n in states.most_common(4)) or "none"


def status_sizes(summary: Summary, items: list[dict[str, Any]], when: str) -> None:
    sizes = sorted((len(json.dumps(p.get("status") or {})), p["metadata"]["name"]) for p in items)
    if not sizes:
        return
    largest, name = sizes[-1]
    mean = statistics.fmean(s for s, _ in sizes)
    say(
        f"status size {when}: largest {largest} bytes ({kib(largest)}, {name}), "
        f"mean {mean:.0f} bytes ({kib(mean)}) over {len(sizes)} policies"
    )
    summary.add(
        f"status size {when}: largest / mean",
        f"{kib(largest)} / {kib(mean)}",
        "etcd's object limit is 1.5 MiB",
    )


def steady_window(
    args: argparse.Namespace,
    api: Api,
    operator: OperatorProcess,
    sampler: Sampler,
    registry: Registry,
    metrics_port: int,
    summary: Summary,
) -> None:
    bases_followed = min(args.bases, args.policies)
    header(f"Steady window: {args.steady:.0f}s (interval {args.interval}s)")
    mark = registry.mark()
    api_start = apiserver_requests(api)
    own_start = operator_metrics(metrics_port)
    usage_start = sampler.now()
    deadline = usage_start.at + args.steady
    next_progress = usage_start.at + max(PROGRESS, args.steady / 6)
    while (now := time.monotonic()) < deadline:
        check_operator(operator)
        if now >= next_progress:
            say(f"  steady {now - usage_start.at:.0f}/{args.steady:.0f}s")
            next_progress = now + max(PROGRESS, args.steady / 6)
        time.sleep(min(1.0, max(deadline - now, 0.01)))
    usage_end = sampler.now()
    api_end = apiserver_requests(api)
    own_end = operator_metrics(metrics_port)
    entries = registry.requests_since(mark)
    seconds = usage_end.at - usage_start.at
    scale = args.interval / seconds

    report_usage(
        summary, "steady", usage_start, usage_end, sampler.peak_rss(usage_start.at, usage_end.at)
    )
    print_registry(
        f"Registry requests in the steady window ({seconds:.0f}s), per {args.interval}s interval",
        entries,
        scale,
        "/interval",
        limit=bases_followed,
    )
    base = sum(1 for e in entries if registry_kind(e).endswith("(base)"))
    target = f"limit {bases_followed} (one per distinct base)"
    verdict = "ok" if base * scale <= bases_followed + 0.5 else "MISSED"
    summary.add(
        "steady: registry base lookups / interval", f"{base * scale:.1f}", f"{target}: {verdict}"
    )
    summary.add("steady: registry requests (all) / interval", f"{len(entries) * scale:.1f}")
    if own_end:
        deltas = {k: v - own_start.get(k, 0.0) for k, v in own_end.items()}
        parts = ", ".join(f"{k} {v * scale:.1f}" for k, v in sorted(deltas.items()) if v)
        print(f"  the operator's own metrics, per interval: {parts or 'nothing'}")
        if any(k.startswith("checks") for k in own_end):
            checks = sum(v for k, v in deltas.items() if k.startswith("checks"))
            summary.add(
                "steady: policy checks / interval (operator metrics)",
                f"{checks * scale:.1f}",
                f"{args.policies} policies",
            )
    print_api_deltas(summary, api_start, api_end, seconds, args.interval)


def change_base(
    args: argparse.Namespace,
    api: Api,
    operator: OperatorProcess,
    registry: Registry,
    catalog: Catalog,
    policies: list[Policy],
    workloads: list[Workload],
    webhook: tuple[int, str],
    summary: Summary,
) -> None:
    affected = [w for w in workloads if w.policy.base == 0]
    following = sorted(p.name for p in policies if p.base == 0)
    header(
        f"The change: base 0 re-published; {len(affected)} workloads on the "
        f"{len(following)} policies following it are affected"
    )
    client = registry.client()
    try:
        new_base = base_image(0, "v2")
        rebuilt: dict[int, str] = {}
        for j in catalog.apps_on(0):
            image = app_on(catalog, new_base, 0, j, "1.0.1")
            rebuilt[j] = push(client, catalog.app_repo(j), image, "1.0.1")
        say(
            f"pushed {len(rebuilt)} rebuilt apps (tag 1.0.1) "
            f"on base {short_digest(new_base.digest)}"
        )
        api_start = apiserver_requests(api)
        digest = push(client, catalog.base_repo(0), new_base, "1")
    finally:
        client.close()
    started, pushed_at = time.monotonic(), time.time()
    mark = registry.mark()  # after our own pushes
    say(f"re-published {catalog.base_repo(0)}:1 -> {short_digest(digest)}; the clock starts")
    if args.push_events:
        send_push_event(registry.host, catalog.base_repo(0), digest, webhook)
    expected = {(w.namespace, w.name): catalog.pinned(w.app, rebuilt[w.app]) for w in affected}
    original = {(w.namespace, w.name): catalog.initial(w.app, args.pin) for w in affected}
    times = wait_patched(api, operator, expected, original, started, args.patch_timeout)
    settled = wait_policies_settled(api, operator, following, digest, started, args.patch_timeout)
    api_end = apiserver_requests(api)
    entries = registry.requests_since(mark)
    how = "push event" if args.push_events else f"polling every {args.interval}s"
    # Detection: the operator's first read of the new base digest's manifest (the registry's
    # access log has whole seconds, so this is +-1 s); the rest is the operator's checks and
    # patches, whatever the interval.
    reads = [
        e.at
        for e in entries
        if e.method == "GET" and e.path.endswith(f"/{catalog.base_repo(0)}/manifests/{digest}")
    ]
    detected = max(min(reads) - int(pushed_at), 0.0) if reads else None
    if detected is not None:
        say(f"  the operator read the new base {detected:.0f}s (+-1 s) after the push")
        summary.add(f"change ({how}): base detected", f"{detected:.0f}s (+-1 s)")
    for label, value in times.items():
        summary.add(f"change ({how}): {label}", f"{value:.1f}s", f"{len(affected)} affected")
        if detected is not None:
            summary.add(
                f"change: {label}, from the base's detection",
                f"{max(value - detected, 0.0):.1f}s",
                f"{len(affected)} affected",
            )
    summary.add(f"change ({how}): affected policies UpToDate", f"{settled:.1f}s")
    print_registry("Registry requests during the change (base push to settled)", entries, None, "")
    summary.add("change: registry requests (all)", str(len(entries)))
    delta = api_end[0] - api_start[0]
    writes = {
        verb: n
        for (verb, res), n in delta.items()
        if verb in WRITE_VERBS and res == "deployments.apps"
    }
    refused = api_end[1] - api_start[1]
    parts = []
    for verb, count in sorted(writes.items()):
        failed = refused[(verb, "deployments.apps")]
        parts.append(f"{verb} {count}" + (f" ({failed} non-2xx)" if failed else ""))
    by_verb = ", ".join(parts) or "none"
    # The operator's patches and the Deployment controller's writes (revision annotation).
    summary.add("change: API writes of deployments", by_verb, f"{len(affected)} affected")
    say(f"API writes of deployments during the change: {by_verb} ({len(affected)} affected)")
    status_sizes(summary, api.policies(), "after the change")


def send_push_event(host: str, repository: str, digest: str, webhook: tuple[int, str]) -> None:
    """A distribution notification (the registry's own envelope) for ``repository:1``."""
    port, secret = webhook
    envelope = {
        "events": [
            {
                "id": str(uuid.uuid4()),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "action": "push",
                "target": {
                    "mediaType": OCI_MANIFEST,
                    "repository": repository,
                    "tag": "1",
                    "digest": digest,
                    "url": f"http://{host}/v2/{repository}/manifests/{digest}",
                },
                "request": {"id": str(uuid.uuid4()), "host": host, "method": "PUT"},
                "source": {"addr": host},
            }
        ]
    }
    answer = httpx.post(
        f"http://127.0.0.1:{port}/",
        content=json.dumps(envelope).encode(),
        headers={
            "X-Imagedrift-Token": secret,
            "Content-Type": "application/vnd.docker.distribution.events.v1+json",
        },
        timeout=10,
    )
    say(f"push event for {repository}:1 -> {answer.status_code} {answer.text.strip()}")
    if answer.status_code != 200:
        raise OperatorDied(
            f"the push-event receiver refused the notification: {answer.status_code}"
        )


def wait_patched(
    api: Api,
    operator: OperatorProcess,
    expected: dict[tuple[str, str], str],
    original: dict[tuple[str, str], str],
    started: float,
    timeout: float,
) -> dict[str, float]:
    """Until every affected Deployment runs its rebuilt image; time to first, 50%, 100%."""
    total = len(expected)
    half = (total + 1) // 2
    times: dict[str, float] = {}
    next_progress = started + PROGRESS
    while True:
        check_operator(operator)
        items = api.deployments(f"{BASE_LABEL}=0")
        patched = elsewhere = 0
        forms: set[str] = set()
        for d in items:
            key = (d["metadata"]["namespace"], d["metadata"]["name"])
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            if key not in expected:
                continue
            if image == expected[key]:
                patched += 1
            elif same_image(image, expected[key]):
                patched += 1
                forms.add(image.split("/", 1)[-1])  # the rebuilt digest, written differently
            elif image != original[key]:
                elsewhere += 1  # neither the old nor the rebuilt image: worth a look
        now = time.monotonic() - started
        for label, needed in (("first patch", 1), ("50% patched", half), ("100% patched", total)):
            if patched >= needed and label not in times:
                times[label] = now
                say(f"  {label}: {patched}/{total} after {now:.1f}s")
        if patched >= total:
            if forms:
                say(f"  (patched as e.g. {sorted(forms)[0]}, not repo@digest)")
            return times
        if now > timeout:
            followers = api.policies(f"{BASE_LABEL}=0")
            raise PhaseTimeout(
                "change (workloads patched)",
                timeout,
                f": {patched}/{total} patched; base-0 policies: {describe_states(followers)}"
                f"{first_reason(followers)}{error_note(operator)}",
            )
        if time.monotonic() >= next_progress:
            odd = f" ({elsewhere} on an unexpected image)" if elsewhere else ""
            states = describe_states(api.policies(f"{BASE_LABEL}=0"))
            say(f"  patched {patched}/{total}{odd}; base-0 policies: {states}")
            next_progress = time.monotonic() + PROGRESS
        time.sleep(POLL)


def same_image(image: str, expected: str) -> bool:
    """Same repository and digest (``repo:tag@digest`` counts as ``repo@digest``)."""
    name, _, digest = image.partition("@")
    want_name, _, want_digest = expected.partition("@")
    if digest != want_digest:
        return False
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port
        name = name[: name.rindex(":")]
    return name == want_name


def first_reason(items: list[dict[str, Any]]) -> str:
    """The first workload item's state and reason that is not UpToDate, for a diagnosis."""
    for policy in items:
        for item in ((policy.get("status") or {}).get("workloads") or {}).get("items") or []:
            if item.get("state") != "UpToDate":
                return (
                    f"; e.g. {item.get('workload')}: {item.get('state')}: "
                    f"{str(item.get('reason'))[:300]}"
                )
    return ""


def wait_policies_settled(
    api: Api,
    operator: OperatorProcess,
    names: list[str],
    digest: str,
    started: float,
    timeout: float,
) -> float:
    """Until the affected policies record the new base digest and are Ready/UpToDate."""
    wanted = set(names)
    next_progress = time.monotonic() + PROGRESS
    while True:
        check_operator(operator)
        items = [p for p in api.policies(f"{BASE_LABEL}=0") if p["metadata"]["name"] in wanted]
        pending = []
        for policy in items:
            cond = ready_condition(policy)
            base = json.dumps((policy.get("status") or {}).get("base") or {})
            up_to_date = cond.get("status") == "True" and cond.get("reason") == "UpToDate"
            if not up_to_date or digest not in base:
                pending.append(policy)
        done = len(items) - len(pending)
        now = time.monotonic() - started
        if done >= len(wanted):
            say(f"  all {len(wanted)} affected policies UpToDate on the new base after {now:.1f}s")
            return now
        if now > timeout:
            raise PhaseTimeout(
                "change (policies UpToDate)",
                timeout,
                f": {done}/{len(wanted)}; the others: {describe_states(pending)}"
                f"{first_reason(pending)}{error_note(operator)}",
            )
        if time.monotonic() >= next_progress:
            say(f"  policies UpToDate on the new base {done}/{len(wanted)}")
            next_progress = time.monotonic() + PROGRESS
        time.sleep(POLL)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """What main() needs after a failure: the figures so far and the operator (its log)."""

    workdir: Path
    summary: Summary = field(default_factory=Summary)
    operator: OperatorProcess | None = None


def run(args: argparse.Namespace, state: Run) -> None:
    summary, workdir = state.summary, state.workdir
    header(
        f"{args.policies} policies over {args.bases} bases, {args.workloads} Deployments "
        f"(replicas {args.replicas}) on {args.apps} apps, interval {args.interval}s, "
        f"{'push events' if args.push_events else 'polling'}"
    )
    cp = ControlPlane.from_env()
    registry = Registry(workdir / "registry")
    sampler: Sampler | None = None
    api: Api | None = None
    try:
        cp.start()
        registry.start()
        say(
            f"control plane ready in {cp.startup_seconds:.1f}s at {cp.server}; "
            f"registry {registry.host}"
        )
        assert cp.kubeconfig is not None
        api = Api(cp.kubeconfig, args.threads)
        setup_cluster(cp, api, args.namespaces)

        catalog = publish_images(registry, args.bases, args.apps)
        policies = plan_policies(args.policies, args.bases)
        workloads = plan_workloads(args, policies, catalog)
        created = create_objects(api, catalog, policies, workloads, args)
        summary.add(
            "Deployments created", f"{created:.1f}s", f"{len(workloads)}, {args.threads} threads"
        )
        settled = wait_settled(api, len(workloads), args.settle)
        summary.add("controller-manager caught up", f"{settled:.1f}s")

        header("First cycle: operator start until every policy is Ready")
        env, metrics_port, webhook_port, secret = operator_env(args)
        mark = registry.mark()
        operator = state.operator = OperatorProcess(cp.kubeconfig, workdir / "operator", env=env)
        started = launch(operator, webhook_port)
        assert operator.proc is not None
        sampler = Sampler(operator.proc.pid)
        start_usage = Usage(started, 0.0, 0, 0)  # a new process has used nothing yet
        try:
            seconds, items = wait_all_ready(
                api, operator, args.policies, started, args.ready_timeout
            )
        except PhaseTimeout:
            report_usage(summary, "first cycle", start_usage, sampler.now(), sampler.peak_rss())
            raise
        say(f"all {args.policies} policies Ready {seconds:.1f}s after the operator started")
        summary.add(
            "first cycle: start -> all Ready", f"{seconds:.1f}s", f"{args.policies} policies"
        )
        report_usage(summary, "first cycle", start_usage, sampler.now(), sampler.peak_rss())
        first = registry.requests_since(mark)
        print_registry("Registry requests in the first cycle", first, None, "")
        summary.add("first cycle: registry requests", str(len(first)))
        status_sizes(summary, items, "after the first cycle")

        steady_window(args, api, operator, sampler, registry, metrics_port, summary)
        status_sizes(summary, api.policies(), "after the steady window")

        change_base(
            args,
            api,
            operator,
            registry,
            catalog,
            policies,
            workloads,
            (webhook_port, secret),
            summary,
        )

        if args.keep:
            header("--keep: everything stays up until Ctrl-C")
            print(f"  KUBECONFIG={cp.kubeconfig}")
            print(f"  registry http://{registry.host}; operator log in {workdir / 'operator'}")
            print(f"  operator metrics http://127.0.0.1:{metrics_port}/metrics")
            while True:
                check_operator(operator)
                time.sleep(5)
    finally:
        if sampler is not None:
            sampler.stop()
            peak = sampler.peak_rss()
            hwm = max((u.hwm for u in sampler.samples), default=0)
            summary.add(
                "whole run: operator peak RSS (sampled / VmHWM)", f"{mib(peak)} / {mib(hwm)}"
            )
        if state.operator is not None:
            state.operator.stop()
        if api is not None:
            api.close()
        registry.close()
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = Run(Path(tempfile.mkdtemp(prefix="imagedrift-bench-scale-")))
    failure = ""
    try:
        run(args, state)
    except PhaseTimeout as exc:
        failure = str(exc)
    except OperatorDied as exc:
        failure = f"{exc} (the operator failed; the benchmark could not go on)"
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception as exc:  # a harness piece failed: say so, with the figures so far
        traceback.print_exc()
        failure = f"{type(exc).__name__}: {exc}"
    state.summary.print()
    if not failure:
        shutil.rmtree(state.workdir, ignore_errors=True)
        return 0
    print(f"\nFAILED: {failure}", file=sys.stderr)
    if state.operator is not None:
        tail = "\n".join(state.operator.log().splitlines()[-40:])
        print(f"--- last lines of the operator's log:\n{tail or '(empty)'}", file=sys.stderr)
    print(f"logs kept in {state.workdir}", file=sys.stderr)
    return 130 if failure == "interrupted" else 1


if __name__ == "__main__":
    sys.exit(main())
