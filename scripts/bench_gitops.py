"""Benchmark: GitOps write-back at fleet size, the real operator process against a real git
server.

    .venv/bin/python scripts/bench_gitops.py        (500 workloads, 50 repositories, 10 policies)
    .venv/bin/python scripts/bench_gitops.py --workloads 40 --repos 4 --policies 2 \\
        --interval 10 --steady 20                   (a quick run)

Starts the harness' control plane (kwok on 127.0.0.1), a CNCF registry and the smart-HTTP
git server (``tests/harness/git_server.py``, which logs every request) on loopback, and
installs Flux's CRDs (from the cache of ``tests/controlplane/build.sh flux``). Publishes one
base image and --apps app images built on it (as ``bench_scale.py`` does), and lays out
--workloads Deployments over --repos git repositories (``team-<r>``, workload ``w`` in
repository ``w % repos``): each repository holds its share in ``apps/``, --per-file
Deployments per file with comments, and a ``kustomization.yaml``; a GitRepository and a
Kustomization per repository live in ``flux-system`` (the Kustomization deploys into
``team-<r>``). The Deployments are created in the cluster as Flux would have applied them
(its ``kustomize.toolkit.fluxcd.io`` labels, field manager kustomize-controller, replicas 0
as in ``bench_scale.py``), each opted in to one of --policies ImagePolicies with
``spec.gitops.mode: Commit`` (workload ``w`` follows policy ``(w // repos) % policies``, so
each policy spans the repositories and a repository holds workloads of up to --policies
policies). The credentials: an index Secret in imagedrift-system naming a Secret with the git
server's username/password (``IMAGEDRIFT_GIT_SECRET``). Then the operator runs exactly as
users run it (``kopf run -m imagedrift.wiring``, its own process) and is measured from
outside:

1. first cycle: operator start until every policy is Ready, with its CPU and memory;
2. steady window (--steady seconds): git requests per repository from the server's log
   (fetches: upload-pack ref advertisements, i.e. clones, fetches, ls-remotes; target at
   most one per repository per --interval) and pushes (expected 0), plus the operator's
   kube-apiserver reads of the Flux objects and Secrets (cached 30 s);
3. the change: the apps rebuilt on a re-published base are pushed (tag 1.0.1), then the base;
   from the base push until every workload's manifest in git holds its rebuilt image
   (``name:tag@digest``): time to the first push, to 50 % and 100 % of the workloads
   (polled every second from the bare repositories), commits per repository (against the
   policies with workloads in it: a commit carries one policy's check), fetches per
   repository (most within any --interval, and in all), push retries and write failures
   (the operator's /metrics), operator CPU; whether anything but the images changed in
   the files;
4. after the change (--after seconds, default two intervals): what the operator fetches and
   pushes while it waits for Flux.

Flux's controllers do NOT run: nothing applies the commits, so the policies stay waiting for
Flux after the change. This measures the write side only (the operator's
``spec.gitops.applyTimeout`` is set to 2h so no rollback commit comes during the run).

Prints figures and a summary table; it asserts nothing. Exit 0 when every phase finished
(even if a target was missed), 1 when a phase timed out or the operator died (with the tail
of the operator's log). Everything it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402
from scripts.bench_scale import (  # noqa: E402
    OPERATOR_NAMESPACE,
    POLICY_LABEL,
    Api,
    Catalog,
    OperatorDied,
    PhaseTimeout,
    Policy,
    Run,
    Sampler,
    Summary,
    Usage,
    apiserver_requests,
    app_on,
    base_image,
    check_operator,
    describe_states,
    error_note,
    first_reason,
    header,
    launch,
    logged_errors,
    mib,
    operator_env,
    policy_body,
    publish_images,
    report_usage,
    same_image,
    say,
    wait_all_ready,
    wait_settled,
)
from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.flux import (  # noqa: E402
    KUSTOMIZE_GROUP,
    SOURCE_GROUP,
    Flux,
    find_flux_bin_dir,
)
from tests.harness.git_server import FLUSH_PKT, GitServer  # noqa: E402
from tests.harness.operator import OperatorProcess  # noqa: E402
from tests.harness.registry import Registry  # noqa: E402

from imagedrift.core.refs import short_digest  # noqa: E402
from imagedrift.registry.push import push  # noqa: E402

FLUX_NAMESPACE = "flux-system"
FLUX_NAME_LABEL = f"{KUSTOMIZE_GROUP}/name"
FLUX_NAMESPACE_LABEL = f"{KUSTOMIZE_GROUP}/namespace"
FLUX_MANAGER = "kustomize-controller"  # the field manager Flux applies with
MANIFESTS = "apps"  # the directory each Kustomization applies
BRANCH = "main"
INDEX_SECRET = "bench-git-index"  # IMAGEDRIFT_GIT_SECRET: URL prefix -> credentials Secret
CREDENTIALS_SECRET = "bench-git-credentials"
AUTHOR_NAME, AUTHOR_EMAIL = "imagedrift-bench", "bench@example.invalid"
AUTHOR = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>"  # as GitServer.log shows the operator's commits
POLL = 1.0
PROGRESS = 5.0
FLUX_READS = ("kustomizations", "gitrepositories", "secrets")  # what the operator GETs by name


# -- arguments -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--workloads", type=int, default=500, help="GitOps-managed Deployments (default 500)")
    add("--repos", type=int, default=50, help="git repositories (default 50)")
    add("--policies", type=int, default=10, help="ImagePolicies in Commit mode (default 10)")
    add("--apps", type=int, default=10, help="distinct app images on the base (default 10)")
    add("--per-file", type=int, default=5, help="Deployments per manifest file (default 5)")
    add("--interval", type=int, default=60, help="spec.base.interval in seconds (default 60)")
    add("--steady", type=float, default=120.0, help="seconds of the steady window (default 120)")
    add("--after", type=float, default=None, help="seconds after the change (2 intervals)")
    add(
        "--pin",
        choices=("tag-digest", "digest", "tag"),
        default="tag-digest",
        help="the image in git and the cluster before the change: repo:1.0.0@sha256:.. "
        "(default), repo@sha256:.. or repo:1.0.0",
    )
    add("--settle", type=float, default=120.0, help="cap on the Deployment controller catch-up")
    add("--threads", type=int, default=8, help="threads creating objects (default 8)")
    add(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator (repeatable)",
    )
    add("--timeout", type=float, default=900.0, help="cap of each phase in seconds (default 900)")
    parser.set_defaults(push_events=False)  # bench_scale.operator_env reads it
    args = parser.parse_args(argv)
    if args.after is None:
        args.after = 2.0 * args.interval
    problems = []
    if min(args.workloads, args.repos, args.policies, args.apps, args.per_file, args.threads) < 1:
        problems.append("--workloads, --repos, --policies, --apps, --per-file, --threads >= 1")
    if args.repos > args.workloads:
        problems.append("--repos must not exceed --workloads (every repository holds one)")
    if args.interval < 1 or args.steady <= 0 or args.after < 0:
        problems.append("--interval >= 1, --steady > 0 and --after >= 0 please")
    for item in args.operator_env:
        if "=" not in item:
            problems.append(f"--operator-env {item!r} is not KEY=VALUE")
    if problems:
        parser.error("; ".join(problems))
    return args


# -- what is laid out ------------------------------------------------------------------------


@dataclass(frozen=True)
class GitWorkload:
    name: str  # the Deployment's
    repo: str  # the repository (and Kustomization) that holds it
    namespace: str  # where the Kustomization deploys it
    policy: Policy
    app: int


@dataclass
class Layout:
    """Which workload is in which repository and file."""

    repos: list[str]
    policies: list[Policy]
    workloads: list[GitWorkload]
    files: dict[str, dict[str, list[GitWorkload]]] = field(default_factory=dict)  # repo -> path

    def in_repo(self, repo: str) -> list[GitWorkload]:
        return [w for ws in self.files[repo].values() for w in ws]


def plan_layout(args: argparse.Namespace) -> Layout:
    rwidth, pwidth = len(str(args.repos - 1)), len(str(args.policies - 1))
    wwidth = len(str(args.workloads - 1))
    repos = [f"team-{r:0{rwidth}d}" for r in range(args.repos)]
    policies = [Policy(f"gitops-{p:0{pwidth}d}", 0) for p in range(args.policies)]
    workloads = [
        GitWorkload(
            f"w-{w:0{wwidth}d}",
            repos[w % args.repos],
            repos[w % args.repos],
            policies[(w // args.repos) % args.policies],
            w % args.apps,
        )
        for w in range(args.workloads)
    ]
    layout = Layout(repos, policies, workloads)
    for repo in repos:
        mine = [w for w in workloads if w.repo == repo]
        chunks = [mine[i : i + args.per_file] for i in range(0, len(mine), args.per_file)]
        layout.files[repo] = {f"{MANIFESTS}/group-{k}.yaml": c for k, c in enumerate(chunks)}
    return layout


def manifest(catalog: Catalog, w: GitWorkload, pin: str) -> str:
    """One Deployment as a team keeps it in git: comments, no namespace (the Kustomization's
    targetNamespace says where), the image where the team set it."""
    return f"""\
# {w.name}: serves app {w.app}; owned by {w.repo}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {w.name}
  labels:
    app: {w.name}
    {POLICY_LABEL}: {w.policy.name}  # rebuilt on new bases by imagedrift
spec:
  replicas: 0
  selector:
    matchLabels:
      app: {w.name}
  template:
    metadata:
      labels:
        app: {w.name}
    spec:
      containers:
        - name: app
          image: {catalog.initial(w.app, pin)}  # the build CI pinned
          ports:
            - containerPort: 8080
"""


def repository_files(catalog: Catalog, layout: Layout, repo: str, pin: str) -> dict[str, str]:
    files = {}
    for path, ws in layout.files[repo].items():
        docs = "---\n".join(manifest(catalog, w, pin) for w in ws)
        files[path] = f"# {repo}: {len(ws)} Deployments; Flux applies this directory\n---\n{docs}"
    resources = "".join(f"  - {Path(p).name}\n" for p in layout.files[repo])
    files[f"{MANIFESTS}/kustomization.yaml"] = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"# every file of {repo}'s apps\nresources:\n{resources}"
    )
    return files


def deployment_body(catalog: Catalog, w: GitWorkload, pin: str) -> dict[str, Any]:
    """The Deployment as Flux applied it: the manifest plus Flux's labels."""
    body: dict[str, Any] = yaml.safe_load(manifest(catalog, w, pin))
    body["metadata"]["namespace"] = w.namespace
    body["metadata"]["labels"] |= {FLUX_NAME_LABEL: w.repo, FLUX_NAMESPACE_LABEL: FLUX_NAMESPACE}
    return body


def gitops_policy(catalog: Catalog, policy: Policy, interval: int) -> dict[str, Any]:
    body = policy_body(catalog, policy, interval)
    body["spec"]["gitops"] = {
        "mode": "Commit",
        "author": {"name": AUTHOR_NAME, "email": AUTHOR_EMAIL},
        "applyTimeout": "2h",  # Flux never applies here: no rollback commit during the run
    }
    return body


# -- creating it -----------------------------------------------------------------------------


def create_repositories(
    server: GitServer, catalog: Catalog, layout: Layout, pin: str
) -> dict[str, dict[str, str]]:
    started = time.monotonic()
    originals = {}
    for repo in layout.repos:
        originals[repo] = repository_files(catalog, layout, repo, pin)
        server.create_repo(repo, originals[repo], branch=BRANCH)
    files = sum(len(f) for f in originals.values())
    say(
        f"created {len(layout.repos)} git repositories ({files} files) in "
        f"{time.monotonic() - started:.1f}s at {server.base_url}"
    )
    return originals


def create_cluster_objects(
    api: Api, server: GitServer, catalog: Catalog, layout: Layout, args: argparse.Namespace
) -> float:
    """Namespaces, credentials, Flux objects, policies, then the Deployments (timed)."""
    for name in [OPERATOR_NAMESPACE, FLUX_NAMESPACE, *layout.repos]:
        api.create_namespace(name)
    user, password = server.credentials
    secret = {"username": user, "password": password}
    index = f"# the bench's git server\n{server.base_url}/ {CREDENTIALS_SECRET}\n"
    create_secret(api, OPERATOR_NAMESPACE, CREDENTIALS_SECRET, secret)
    create_secret(api, OPERATOR_NAMESPACE, INDEX_SECRET, {"repositories": index})
    create_secret(api, FLUX_NAMESPACE, CREDENTIALS_SECRET, secret)  # what Flux would read
    for repo in layout.repos:
        create_flux_objects(api, server, repo)
    for policy in layout.policies:
        api.create_policy(gitops_policy(catalog, policy, args.interval))
    say(
        f"created {len(layout.repos)} GitRepositories + Kustomizations in {FLUX_NAMESPACE} and "
        f"{len(layout.policies)} Commit policies"
    )

    def create(w: GitWorkload) -> None:
        body = deployment_body(catalog, w, args.pin)
        api._read(
            api.apps.create_namespaced_deployment(
                w.namespace, body, field_manager=FLUX_MANAGER, _preload_content=False
            )
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(create, layout.workloads))
    seconds = time.monotonic() - started
    say(f"created {len(layout.workloads)} Deployments in {seconds:.1f}s (labelled as Flux does)")
    return seconds


def create_secret(api: Api, namespace: str, name: str, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    api._read(api.core.create_namespaced_secret(namespace, body, _preload_content=False))


def create_flux_objects(api: Api, server: GitServer, repo: str) -> None:
    source = {
        "apiVersion": f"{SOURCE_GROUP}/v1",
        "kind": "GitRepository",
        "metadata": {"name": repo},
        "spec": {
            "url": server.url(repo),
            "ref": {"branch": BRANCH},
            "interval": "1m",
            "secretRef": {"name": CREDENTIALS_SECRET},
        },
    }
    kustomization = {
        "apiVersion": f"{KUSTOMIZE_GROUP}/v1",
        "kind": "Kustomization",
        "metadata": {"name": repo},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": repo},
            "path": f"./{MANIFESTS}",
            "prune": True,
            "interval": "10m",
            "targetNamespace": repo,
        },
    }
    for group, plural, body in (
        (SOURCE_GROUP, "gitrepositories", source),
        (KUSTOMIZE_GROUP, "kustomizations", kustomization),
    ):
        api._read(
            api.custom.create_namespaced_custom_object(
                group, "v1", FLUX_NAMESPACE, plural, body, _preload_content=False
            )
        )


# -- the git server's log --------------------------------------------------------------------


@dataclass
class GitTraffic:
    """What the git server answered per repository in a window of ``seconds``."""

    seconds: float
    fetches: dict[str, list[float]]  # repository -> times of fetches (ref advertisements)
    pushes: dict[str, int]
    requests: dict[str, int]  # every request, refused ones included
    refused: dict[str, int]  # answers other than 200


def git_traffic(server: GitServer, repos: Sequence[str], since: float, until: float) -> GitTraffic:
    log = [r for r in server.requests if since <= r.received < until]
    traffic = GitTraffic(until - since, {r: [] for r in repos}, Counter(), Counter(), Counter())
    for r in log:
        if r.repository not in traffic.fetches:
            continue
        traffic.requests[r.repository] += 1
        if r.status != 200:
            traffic.refused[r.repository] += 1
        elif r.service == "git-upload-pack" and r.advertisement:
            traffic.fetches[r.repository].append(r.received)
        elif r.service == "git-receive-pack" and r.method == "POST":
            # A lone flush packet is git's probe before a large body, not a push.
            traffic.pushes[r.repository] += r.body_bytes > len(FLUSH_PKT)
    return traffic


def most_within(times: Iterable[float], window: float) -> int:
    """The most of ``times`` inside any window of ``window`` seconds."""
    ordered, most, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def report_git(summary: Summary, phase: str, traffic: GitTraffic, interval: int) -> None:
    """Fetches per repository per interval (the most within any interval, the mean) and
    pushes, printed and added to the summary."""
    repos = list(traffic.fetches)
    counts = [len(traffic.fetches[r]) for r in repos]
    peaks = {r: most_within(traffic.fetches[r], interval) for r in repos}
    intervals = max(traffic.seconds / interval, 1e-9)
    mean = statistics.fmean(counts) / intervals if counts else 0.0
    worst = max(peaks.values(), default=0)
    pushes = sum(traffic.pushes.values())
    header(f"git requests {phase} ({traffic.seconds:.0f}s, {len(repos)} repositories)")
    print(
        f"  fetches (ref advertisements): {sum(counts)} in all; per repository: "
        f"min {min(counts, default=0)}, mean {statistics.fmean(counts) if counts else 0:.1f}, "
        f"max {max(counts, default=0)}"
    )
    verdict = "ok" if worst <= 1 else "MISSED"
    print(
        f"  fetches of one repository within any {interval}s: at most {worst} "
        f"(target at most 1: {verdict}); mean per repository per interval {mean:.2f}"
    )
    if worst > 1:
        busiest = sorted(repos, key=lambda r: (-peaks[r], r))[:3]
        print("  e.g. " + "; ".join(f"{r}: {peaks[r]} within {interval}s" for r in busiest))
    print(
        f"  pushes: {pushes} in all ({sum(1 for r in repos if traffic.pushes[r])} repositories); "
        f"requests in all {sum(traffic.requests.values())}, refused (not 200) "
        f"{sum(traffic.refused.values())}"
    )
    summary.add(
        f"{phase}: git fetches / repo / {interval}s, max", str(worst), f"target <= 1: {verdict}"
    )
    summary.add(f"{phase}: git fetches / repo / {interval}s, mean", f"{mean:.2f}")
    summary.add(f"{phase}: git fetches (all repos)", str(sum(counts)))
    summary.add(f"{phase}: git pushes (all repos)", str(pushes))


def api_reads(
    start: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]],
    end: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]],
) -> dict[str, int]:
    """GETs of the Flux objects and Secrets between two apiserver_request_total scrapes."""
    delta = end[0] - start[0]
    return {
        kind: sum(n for (verb, res), n in delta.items() if verb == "GET" and res.startswith(kind))
        for kind in FLUX_READS
    }


def git_metrics(operator: OperatorProcess) -> dict[str, float]:
    """The operator's git counters, summed over repositories ({} when /metrics is down)."""
    try:
        samples = operator.metrics()
    except (httpx.HTTPError, AssertionError):
        return {}
    out: dict[str, float] = {}
    for (name, _), value in samples.items():
        if name.startswith("imagedrift_git_") and name.endswith("_total"):
            short = name.removeprefix("imagedrift_git_").removesuffix("_total")
            out[short] = out.get(short, 0.0) + value
    return out


# -- reading git -----------------------------------------------------------------------------


def branch_head(server: GitServer, repo: str) -> str:
    """The branch's sha, read from the bare repository's ref file (no process per poll);
    ``GitServer.head`` when the ref is packed."""
    ref = server.root / f"{repo}.git" / "refs" / "heads" / BRANCH
    try:
        return ref.read_text().strip()
    except OSError:
        return server.head(repo, branch=BRANCH)


def images_in(files: dict[str, str]) -> dict[str, str]:
    """Deployment name -> the image of its first container, in ``files``."""
    out = {}
    for path, text in files.items():
        if not path.startswith(f"{MANIFESTS}/group-"):
            continue
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                containers = doc["spec"]["template"]["spec"]["containers"]
                out[doc["metadata"]["name"]] = str(containers[0]["image"])
    return out


@dataclass
class Written:
    """The change as git shows it: when each share of the workloads was in, per repository
    what its files say now."""

    times: dict[str, float]
    images: dict[str, dict[str, str]]  # repo -> Deployment -> image
    files: dict[str, dict[str, str]]  # repo -> path -> text


def wait_written(
    api: Api,
    server: GitServer,
    operator: OperatorProcess,
    layout: Layout,
    expected: dict[str, str],
    started: float,
    timeout: float,
) -> Written:
    """Until every workload's manifest holds its rebuilt image (``expected``: repo@digest;
    ``repo:tag@digest`` counts too); the times of the first commit seen, 50 % and 100 %."""
    total = len(expected)
    half = (total + 1) // 2
    heads = {repo: branch_head(server, repo) for repo in layout.repos}
    seen = dict(heads)
    written = Written({}, {repo: {} for repo in layout.repos}, {})
    next_progress = started + PROGRESS
    while True:
        check_operator(operator)
        for repo in layout.repos:
            head = branch_head(server, repo)
            if head != seen[repo]:
                seen[repo] = head
                written.files[repo] = server.files(repo, branch=BRANCH)
                written.images[repo] = images_in(written.files[repo])
        now = time.monotonic() - started
        done = sum(
            1
            for repo, images in written.images.items()
            for name, image in images.items()
            if same_image(image, expected[name])
        )
        moved = sum(1 for repo in layout.repos if seen[repo] != heads[repo])
        for label, needed, got in (
            ("first commit seen", 1, moved),
            ("50% of workloads in git", half, done),
            ("100% of workloads in git", total, done),
        ):
            if got >= needed and label not in written.times:
                written.times[label] = now
                say(f"  {label}: {done}/{total} workloads, {moved} repositories after {now:.1f}s")
        if done >= total:
            return written
        if now > timeout:
            policies = api.policies()
            raise PhaseTimeout(
                "change (all workloads in git)",
                timeout,
                f": {done}/{total} in git, {moved}/{len(layout.repos)} repositories moved; "
                f"policies: {describe_states(policies)}{first_reason(policies)}"
                f"{error_note(operator)}",
            )
        if time.monotonic() >= next_progress:
            states = describe_states(api.policies())
            say(f"  in git {done}/{total}, repositories moved {moved}; policies: {states}")
            next_progress = time.monotonic() + PROGRESS
        time.sleep(POLL)


# -- phases ----------------------------------------------------------------------------------


def steady_window(
    args: argparse.Namespace,
    api: Api,
    server: GitServer,
    operator: OperatorProcess,
    sampler: Sampler,
    layout: Layout,
    summary: Summary,
) -> None:
    header(f"Steady window: {args.steady:.0f}s (interval {args.interval}s)")
    api_start = apiserver_requests(api)
    usage_start = sampler.now()
    deadline = usage_start.at + args.steady
    while (now := time.monotonic()) < deadline:
        check_operator(operator)
        time.sleep(min(POLL, max(deadline - now, 0.01)))
    usage_end = sampler.now()
    api_end = apiserver_requests(api)
    peak = sampler.peak_rss(usage_start.at, usage_end.at)
    report_usage(summary, "steady", usage_start, usage_end, peak)
    traffic = git_traffic(server, layout.repos, usage_start.at, usage_end.at)
    report_git(summary, "steady", traffic, args.interval)
    reads = api_reads(api_start, api_end)
    scale = args.interval / (usage_end.at - usage_start.at)
    print(
        f"  the operator's API GETs per {args.interval}s: "
        + ", ".join(f"{kind} {n * scale:.1f}" for kind, n in reads.items())
        + f" ({len(layout.repos)} Kustomizations and GitRepositories; read by name, cached 30 s)"
    )
    summary.add(
        f"steady: API GETs of Flux objects / {args.interval}s",
        f"{(reads['kustomizations'] + reads['gitrepositories']) * scale:.1f}",
        f"{2 * len(layout.repos)} objects, cached 30 s",
    )


def change(
    args: argparse.Namespace,
    api: Api,
    server: GitServer,
    registry: Registry,
    operator: OperatorProcess,
    sampler: Sampler,
    catalog: Catalog,
    layout: Layout,
    originals: dict[str, dict[str, str]],
    summary: Summary,
) -> None:
    """Rebuilt apps, then the base; until git holds every rebuilt image."""
    header(
        f"The change: the base re-published; all {len(layout.workloads)} workloads in "
        f"{len(layout.repos)} repositories are affected"
    )
    client = registry.client()
    try:
        new_base = base_image(0, "v2")
        rebuilt = {
            j: push(client, catalog.app_repo(j), app_on(catalog, new_base, 0, j, "1.0.1"), "1.0.1")
            for j in range(len(catalog.apps))
        }
        say(f"pushed {len(rebuilt)} rebuilt apps (tag 1.0.1) on {short_digest(new_base.digest)}")
        git_start = git_metrics(operator)
        api_start = apiserver_requests(api)
        usage_start = sampler.now()
        digest = push(client, catalog.base_repo(0), new_base, "1")
    finally:
        client.close()
    started = time.monotonic()
    say(f"re-published {catalog.base_repo(0)}:1 -> {short_digest(digest)}; the clock starts")
    expected = {w.name: catalog.pinned(w.app, rebuilt[w.app]) for w in layout.workloads}
    written = wait_written(api, server, operator, layout, expected, started, args.timeout)
    done_at = time.monotonic()
    usage_end = sampler.now()
    api_end = apiserver_requests(api)
    git_end = git_metrics(operator)

    # The first push from the server's log (exact); the shares of workloads as polled.
    pushes_at = [
        r.received - started
        for r in server.requests
        if r.received >= started and r.service == "git-receive-pack" and r.method == "POST"
    ]
    if pushes_at:
        summary.add("change: base push -> first git push", f"{min(pushes_at):.1f}s", "server log")
    for label, seconds in written.times.items():
        note = "polled every 1 s" + (f", {len(expected)} workloads" if "%" in label else "")
        summary.add(f"change: base push -> {label}", f"{seconds:.1f}s", note)
    peak = sampler.peak_rss(usage_start.at, usage_end.at)
    report_usage(summary, "change", usage_start, usage_end, peak)
    traffic = git_traffic(server, layout.repos, started, done_at)
    report_git(summary, "during the change", traffic, args.interval)
    report_commits(summary, server, layout)
    report_git_metrics(summary, git_start, git_end)
    reads = api_reads(api_start, api_end)
    print(
        "  the operator's API GETs during the change: "
        + ", ".join(f"{k} {v}" for k, v in reads.items())
        + f" ({len(layout.repos)} Kustomizations and GitRepositories)"
    )
    summary.add(
        "change: API GETs of Flux objects",
        str(reads["kustomizations"] + reads["gitrepositories"]),
        f"{2 * len(layout.repos)} objects, cached 30 s",
    )
    report_files(summary, catalog, layout, originals, written, rebuilt, args.pin)


def report_commits(summary: Summary, server: GitServer, layout: Layout) -> None:
    """The operator's commits per repository, against the policies each repository holds
    workloads of (a commit is one policy's check: one per repository and branch)."""
    commits = [
        sum(1 for c in server.log(r, branch=BRANCH) if c.author == AUTHOR) for r in layout.repos
    ]
    holders = [len({w.policy.name for w in layout.in_repo(r)}) for r in layout.repos]
    figures = f"{min(commits)}/{statistics.fmean(commits):.1f}/{max(commits)}"
    policies = f"policies / repository {min(holders)}..{max(holders)}"
    print(
        f"  commits by the operator per repository (min/mean/max): {figures}, "
        f"{sum(commits)} in all; {policies}"
    )
    summary.add("change: commits / repository (min/mean/max)", figures, policies)


def report_git_metrics(summary: Summary, start: dict[str, float], end: dict[str, float]) -> None:
    """Push retries and write failures from the operator's own counters."""
    if not end:
        print("  the operator's /metrics did not answer: no push retries figure")
        summary.add("change: push retries (operator metrics)", "n/a", "/metrics unreachable")
        return
    delta = {k: v - start.get(k, 0.0) for k, v in end.items()}
    print(
        "  the operator's git metrics during the change: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(delta.items()))
    )
    summary.add("change: push retries (operator metrics)", f"{delta.get('push_retries', 0):.0f}")
    summary.add(
        "change: write failures (operator metrics)", f"{delta.get('write_failures', 0):.0f}"
    )


def report_files(
    summary: Summary,
    catalog: Catalog,
    layout: Layout,
    originals: dict[str, dict[str, str]],
    written: Written,
    rebuilt: dict[int, str],
    pin: str,
) -> None:
    """How the images were written, and whether anything else in the files changed
    (comments, layout, other fields must stay as the team wrote them)."""
    touched = []
    forms: Counter[str] = Counter()
    for repo in layout.repos:
        images = written.images[repo]
        for path, text in originals[repo].items():
            want = text
            for w in layout.files[repo].get(path, []):
                want = want.replace(catalog.initial(w.app, pin), images[w.name])
                tagged = f"{catalog.host}/{catalog.app_repo(w.app)}:1.0.1@{rebuilt[w.app]}"
                forms["name:1.0.1@digest" if images[w.name] == tagged else images[w.name]] += 1
            if written.files.get(repo, {}).get(path) != want:
                touched.append(f"{repo}/{path}")
    print(f"  written as: {dict(forms)}; files changed beyond the image: {len(touched)}")
    if touched:
        print(f"  e.g. {touched[0]}")
    summary.add("change: files changed beyond the image", str(len(touched)), "expect 0")


def after_change(
    args: argparse.Namespace,
    api: Api,
    server: GitServer,
    operator: OperatorProcess,
    layout: Layout,
    summary: Summary,
) -> None:
    """What the operator does in git while it waits for Flux (which never applies here)."""
    if args.after <= 0:
        return
    header(f"After the change: {args.after:.0f}s, waiting for Flux (not running)")
    start = time.monotonic()
    before = {repo: branch_head(server, repo) for repo in layout.repos}
    while (now := time.monotonic()) < start + args.after:
        check_operator(operator)
        time.sleep(min(POLL, max(start + args.after - now, 0.01)))
    traffic = git_traffic(server, layout.repos, start, time.monotonic())
    report_git(summary, "after the change", traffic, args.interval)
    moved = sum(1 for repo in layout.repos if branch_head(server, repo) != before[repo])
    print(f"  repositories whose branch moved: {moved} (expect 0: nothing committed twice)")
    policies = api.policies()
    say(f"policies now: {describe_states(policies)}{first_reason(policies)}")


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, state: Run) -> None:
    summary, workdir = state.summary, state.workdir
    header(
        f"{args.workloads} GitOps-managed Deployments in {args.repos} repositories, "
        f"{args.policies} Commit policies, {args.apps} apps, interval {args.interval}s"
    )
    cp = ControlPlane.from_env()
    registry = Registry(workdir / "registry")
    server = GitServer(workdir / "git")
    sampler: Sampler | None = None
    api: Api | None = None
    try:
        cp.start()
        registry.start()
        server.start()
        say(
            f"control plane ready in {cp.startup_seconds:.1f}s; registry {registry.host}; "
            f"git server {server.base_url}"
        )
        assert cp.kubeconfig is not None
        api = Api(cp.kubeconfig, args.threads)
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/imagepolicies.imagedrift.io",
        )
        Flux(cp).install_crds(find_flux_bin_dir().parent / "crd")
        say("Flux's CRDs installed (its controllers do not run: nothing applies the commits)")

        catalog = publish_images(registry, 1, args.apps)
        layout = plan_layout(args)
        originals = create_repositories(server, catalog, layout, args.pin)
        created = create_cluster_objects(api, server, catalog, layout, args)
        summary.add("Deployments created", f"{created:.1f}s", f"{args.workloads}")
        wait_settled(api, args.workloads, args.settle)

        header("First cycle: operator start until every policy is Ready")
        env, _, _, _ = operator_env(args)
        env |= {
            "IMAGEDRIFT_GIT_SECRET": INDEX_SECRET,
            "IMAGEDRIFT_GIT_CACHE": str(workdir / "operator-git"),
        }
        operator = state.operator = OperatorProcess(cp.kubeconfig, workdir / "operator", env=env)
        started = launch(operator, 0)
        assert operator.proc is not None
        sampler = Sampler(operator.proc.pid)
        start_usage = Usage(started, 0.0, 0, 0)
        try:
            seconds, _ = wait_all_ready(api, operator, args.policies, started, args.timeout)
        finally:
            report_usage(summary, "first cycle", start_usage, sampler.now(), sampler.peak_rss())
        say(f"all {args.policies} policies Ready {seconds:.1f}s after the operator started")
        summary.add(
            "first cycle: start -> all Ready", f"{seconds:.1f}s", f"{args.policies} policies"
        )
        first = git_traffic(server, layout.repos, started, time.monotonic())
        report_git(summary, "first cycle", first, args.interval)

        steady_window(args, api, server, operator, sampler, layout, summary)
        change(args, api, server, registry, operator, sampler, catalog, layout, originals, summary)
        after_change(args, api, server, operator, layout, summary)

        count, last = logged_errors(operator)
        summary.add("operator ERROR log lines", str(count), last[:100])
    finally:
        if sampler is not None:
            sampler.stop()
            hwm = max((u.hwm for u in sampler.samples), default=0)
            summary.add(
                "whole run: operator peak RSS (sampled / VmHWM)",
                f"{mib(sampler.peak_rss())} / {mib(hwm)}",
            )
        if state.operator is not None:
            state.operator.stop()
        if api is not None:
            api.close()
        server.stop()
        registry.close()
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = Run(Path(tempfile.mkdtemp(prefix="imagedrift-bench-gitops-")))
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
