"""GitOps write-back racing an outside writer: every change lands, nothing is lost, and the
refused pushes are counted.

One repository on the loopback git server holds 20 Deployments (kwok's), four to a
multi-document YAML file, five files, with comments; Flux applies it every 5 s and one
Commit policy governs them all. ``maxConcurrent: 4`` makes the rollout five waves at
least, so imagedrift commits again and again while an outside writer pushes a line to
``NOTES.md`` (outside the Kustomization's path) every second, straight into the bare
repository. On top of that chance, the first ``FORCED`` fetches of imagedrift are
overtaken on purpose: the git server lets the test commit after it made the answer to the
fetch and before it sent it, so the push that follows is refused, every run.

Then: every Deployment runs its rebuilt image, in git and in the cluster, with a Complete
lineage row naming a commit of the branch; every outside commit is still in the history
and every line in the notes; ``imagedrift_git_push_retries_total`` equals the refused
pushes the git server saw (a write refused at every attempt fails and is tried again at a
later check: its refused pushes count too), and ``imagedrift_git_commits_total``
imagedrift's commits. The figures (commits, retries, refused pushes, failed writes, the
outside writer's pushes, wall time) are printed for the CI log.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec, git_access, touched_checks
from tests.harness.controlplane import Kube
from tests.harness.flux import Flux
from tests.harness.flux_app import MANIFESTS, FluxApp
from tests.harness.git_server import FLUSH_PKT, GitRequest, GitServer
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

FILES, PER_FILE = 5, 4
MAX_CONCURRENT = 4  # workloads rolling at once: at least FILES * PER_FILE / 4 commits
FORCED = 2  # imagedrift's first fetches overtaken on purpose: its pushes refused
NOTES = "NOTES.md"  # the outside writer's file, outside the Kustomization's path
WRITER_PERIOD = 1.0  # seconds between the outside writer's pushes
WRITER_LIMIT = 600  # pushes at most, whatever happens
ROLLOUT_TIMEOUT = 360.0  # every workload Complete within this
AUTHOR = "imagedrift-bot <bot@example.invalid>"
WRITER = "Outside Writer <writer@example.invalid>"  # bare_repos' outside writer

DOCUMENT = """\
# {name}: owned by team {team}; imagedrift commits its rebuilds here
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
    imagedrift.io/policy: {policy}
spec:
  replicas: 1  # kwok's pods: nothing is pulled
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: app
          image: {image}  # the base's rebuild, validated
"""


def names() -> list[str]:
    return [f"web-{i:02d}" for i in range(FILES * PER_FILE)]


def manifests(image: str, policy: str) -> dict[str, str]:
    """Five files of four Deployments each, as a team keeps them: comments, ``---``."""
    files = {}
    for team in range(FILES):
        docs = [
            DOCUMENT.format(name=name, team=team, policy=policy, image=image)
            for name in names()[team * PER_FILE : (team + 1) * PER_FILE]
        ]
        files[f"{MANIFESTS}/team-{team}.yaml"] = (
            f"# team {team}'s services, one document each\n" + "---\n".join(docs)
        )
    return files


def from_imagedrift(request: GitRequest) -> bool:
    """The operator's git is git's own program (``git/2.x``); Flux's is go-git."""
    return request.user_agent.startswith("git/") and "go-git" not in request.user_agent


@dataclass
class OutsideWriter:
    """A thread that appends a line to ``NOTES.md`` and pushes it every ``period`` seconds,
    straight into the bare repository, until stopped, ``limit`` pushes or ``budget``
    seconds; the shas of its commits, in order."""

    git: GitServer
    repo: str
    period: float = WRITER_PERIOD
    limit: int = WRITER_LIMIT
    budget: float = ROLLOUT_TIMEOUT + 60
    shas: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outside-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the outside writer did not stop"

    def _run(self) -> None:
        deadline = time.monotonic() + self.budget
        while len(self.shas) < self.limit and time.monotonic() < deadline:
            if self._stop.wait(self.period):
                return
            line = f"- note {len(self.shas) + 1} from the outside writer\n"
            try:
                sha = self.git.commit_local(
                    self.repo, {NOTES: line}, message=f"Note {len(self.shas) + 1}", append=True
                )
            except Exception as exc:  # the test reads it; a thread cannot fail it
                self.error = exc
                return
            self.shas.append(sha)
            self.lines.append(line)


@dataclass
class Interloper:
    """A git server hook: after the answer to each of imagedrift's first ``times`` fetches
    is made, and before it is sent, a commit lands on the branch, so the push that follows
    that fetch is refused. A fetch is an upload-pack advertisement then one or more
    upload-pack POSTs (protocol v2: ``ls-refs`` first, which names the head): the first
    POST after an advertisement is the one."""

    git: GitServer
    repo: str
    times: int
    shas: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _armed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: GitRequest) -> None:
        if not (
            request.repository == self.repo
            and request.service == "git-upload-pack"
            and request.status == 200
            and from_imagedrift(request)
        ):
            return
        with self._lock:
            if request.advertisement:
                self._armed = True
            elif request.method == "POST" and self._armed and len(self.shas) < self.times:
                self._armed = False
                line = f"- interloper {len(self.shas) + 1}, right behind imagedrift's fetch\n"
                self.shas.append(
                    self.git.commit_local(
                        self.repo,
                        {NOTES: line},
                        message=f"Interloper {len(self.shas) + 1}",
                        append=True,
                    )
                )
                self.lines.append(line)


@dataclass
class Race:
    world: World
    app: FluxApp
    git: GitServer
    policy: str
    env: dict[str, str]
    old: str  # the image every Deployment runs first
    files: dict[str, str]  # the repository's first files

    @property
    def repo(self) -> str:
        return self.app.name

    def ours(self) -> list[str]:
        """The shas of the commits imagedrift made, newest first."""
        return [c.sha for c in self.git.log(self.repo) if c.author == AUTHOR]


@pytest.fixture
def race(
    world: World,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
    kube: Kube,
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> Iterator[Race]:
    """Base v1, app 1.0.0 on it; 20 Deployments of it in git, applied by Flux and rolled
    out; the operator's credentials for the repository (an index Secret naming a Secret)."""
    old = base_image("v1")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    policy = f"race-{world.suffix}"
    image = f"{world.ref('app')}:1.0.0"
    files = {**manifests(image, policy), NOTES: "# Notes, appended by other hands\n"}
    app = FluxApp(
        kube, flux, git_server, git_repo, world.namespace, interval="5s", deployment="web-00"
    )
    app.deploy(files, image)
    wait_for(
        lambda: all(rolled_out(world, name, image) for name in names()),
        what="every Deployment applied by Flux and rolled out",
        timeout=90,
    )

    env = git_access(operator_secrets, git_server)
    yield Race(world, app, git_server, policy, env, image, files)
    flux.check_alive()


def metric(operator: OperatorProcess, name: str, repository: str) -> float:
    return sum(
        value
        for (n, labels), value in operator.metrics().items()
        if n == name and ("repository", repository) in labels
    )


def complete_rows(world: World, policy: str, errors: set[str]) -> dict[str, dict[str, Any]] | None:
    """Every Deployment's Complete lineage row, by name, once all 20 have one; the reasons
    of workloads the policy lists in Error meanwhile are added to ``errors``."""
    status = world.get_policy(policy).get("status") or {}
    for item in (status.get("workloads") or {}).get("items") or []:
        if item.get("state") == "Error":
            errors.add(str(item.get("reason")))
    rows = {
        str(r["workload"]).rsplit("/", 1)[1]: dict(r)
        for entry in status.get("lineage") or []
        for r in entry.get("rollouts") or []
        if r.get("result") == "Complete"
    }
    return rows if set(rows) == set(names()) else None


def test_every_change_lands_while_an_outside_writer_pushes_every_second(
    race: Race,
    operator_factory: Callable[..., OperatorProcess],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    g, world = race, race.world
    policy = world.policy(
        "race",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"maxConcurrent": MAX_CONCURRENT, "verifyTimeout": "2m"},
            "gitops": {
                "mode": "Commit",
                "author": {"name": "imagedrift-bot", "email": "bot@example.invalid"},
            },
        },
    )
    assert policy == g.policy
    operator = operator_factory(env=g.env)
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert g.ours() == []

    writer = OutsideWriter(g.git, g.repo)
    interloper = Interloper(g.git, g.repo, FORCED)
    with g.git.intercept(interloper):
        writer.start()
        try:
            started = time.monotonic()
            new = base_image("v2")
            world.publish("base", "1", new)
            rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
            errors: set[str] = set()
            rows = wait_for(
                lambda: complete_rows(world, policy, errors),
                what="every Deployment's lineage row Complete",
                timeout=ROLLOUT_TIMEOUT,
                interval=1.0,
            )
            wall = time.monotonic() - started
        finally:
            writer.stop()
    assert writer.error is None, writer.error
    assert g.git.hook_errors == [], g.git.hook_errors
    target = f"{world.ref('app')}:1.0.1@{rebuilt}"
    ours = g.ours()

    # What the server saw of imagedrift's pushes: one advertisement and one POST for each
    # push tried; every push tried that is not one of its commits was refused.
    receive = g.git.requests_for(g.repo, service="git-receive-pack", status=200)
    offers = [r for r in receive if from_imagedrift(r) and r.advertisement]
    pushes = [
        r
        for r in receive
        if from_imagedrift(r) and r.method == "POST" and r.body_bytes > len(FLUSH_PKT)
    ]
    refused = len(pushes) - len(ours)
    url = g.git.url(g.repo)
    retries = metric(operator, "imagedrift_git_push_retries_total", url)
    commits = metric(operator, "imagedrift_git_commits_total", url)
    failures = metric(operator, "imagedrift_git_write_failures_total", url)
    figures = (
        f"git race: {len(ours)} imagedrift commits (metric {commits:g}) for "
        f"{len(names())} workloads, {retries:g} push retries counted, {refused} refused "
        f"pushes seen by the server ({FORCED} forced), {failures:g} failed writes, "
        f"{len(writer.shas)} outside-writer pushes, {wall:.1f}s wall time"
        + "".join(f"\n  a workload in Error meanwhile: {reason}" for reason in sorted(errors))
    )
    record_property("git_race", figures)
    with capsys.disabled():  # in the CI log, passed or not
        print(f"\n{figures}")

    # Every change landed: in git, each file as it was but for the image, and in the cluster.
    files = g.git.files(g.repo)
    for path, text in g.files.items():
        if path != NOTES:
            assert files[path] == text.replace(g.old, target), path
    for name in names():
        assert world.image_of(name) == target, name

    # Each row names a commit of imagedrift on the branch; the waves made several commits,
    # each of at most MAX_CONCURRENT workloads, and none that no row names.
    log = g.git.log(g.repo)
    history = {c.sha for c in log}
    per_commit = Counter(row.get("commit") for row in rows.values())
    assert set(per_commit) == set(ours) and set(ours) <= history, (per_commit, ours)
    assert len(ours) >= len(names()) // MAX_CONCURRENT, ours
    assert max(per_commit.values()) <= MAX_CONCURRENT, per_commit

    # Nothing lost: every outside commit is in the history, every line in the notes.
    outside = [*writer.shas, *interloper.shas]
    assert len(interloper.shas) == FORCED, interloper.shas
    assert set(outside) <= history
    assert sum(1 for c in log if c.author == WRITER) == len(outside) + 1  # + the first commit
    notes = files[NOTES].splitlines(keepends=True)
    assert sorted(notes[1:]) == sorted([*writer.lines, *interloper.lines]), notes

    # Counted: every refused push is a retry, whether its write then landed or not.
    assert len(pushes) == len(offers), (pushes, offers)
    assert refused >= FORCED, figures
    assert retries == refused, figures
    assert commits == len(ours), figures

    # And nothing more: two more checks commit nothing.
    touched_checks(world, operator, policy, "Deployment", "web-00", 2)
    assert g.ours() == ours
