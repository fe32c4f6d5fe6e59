"""GitOps write-back through pull requests, against GitHub's, GitLab's and Azure DevOps'
API shapes (TLS servers on 127.0.0.1) and the real loopback git server, at the check.

One branch per (policy, base digest, candidate), and one pull request from it:
- none on an empty diff (the files already hold the candidate: no branch, no request);
- opened once; later checks with nothing new push nothing and send no write to the API;
- an operator restart (every client, cache and clone new) finds it again by its branch;
- a workload that joins later is added to it: the branch is pushed again and the pull
  request updated, never a second one;
- merged by a human and applied by Flux: verified, the lineage names the pull request; the
  merged branch is never pushed again;
- closed by a human without merging: the candidate is not proposed again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagedrift.core.workloads import WorkloadState
from imagedrift.engine.commits import Committer
from imagedrift.engine.git_preview import GitPreview
from imagedrift.engine.git_writes import GitWriter
from imagedrift.engine.gitops_sources import GitCredentialStore
from imagedrift.engine.proposals import PullRequestClients
from tests.harness.git_server import GitServer
from tests.harness.pr_servers import PrServer
from tests.harness.registry import Registry
from tests.harness.tlsca import TestCA
from tests.integration.checker_world import NAMESPACE, CheckerWorld, base_image
from tests.integration.gitops_cluster import FakeCluster, dump, flux_labels, manifest, write_back

PROVIDER_NAMES = {"github": "GitHub", "gitlab": "GitLab", "azure": "AzureDevOps"}
WRITES = ("POST", "PATCH", "PUT")


class PrWorld:
    """A CheckerWorld whose policy proposes, on the git server and one API server."""

    def __init__(
        self,
        world: CheckerWorld,
        git: GitServer,
        server: PrServer,
        tls: TestCA,
        root: Path,
        repo: str,
    ) -> None:
        self.world, self.git, self.server, self.tls, self.root, self.repo = (
            world,
            git,
            server,
            tls,
            root,
            repo,
        )
        self.cluster = FakeCluster()
        self.cluster.flux("apps", git.url(repo))
        user, password = git.credentials
        self.cluster.secrets["index"] = {"repositories": f"{git.base_url}/ creds".encode()}
        self.cluster.secrets["creds"] = {
            "username": user.encode(),
            "password": password.encode(),
            "token": server.token.encode(),
        }
        self.restarts = 0
        self.told: list[str] = []  # what the metrics' hook heard: opened, updated
        self.restart()

    def restart(self) -> None:
        """A new operator process: new clients, caches and clones; only the cluster, git
        and the API server remember anything."""
        self.restarts += 1
        credentials = GitCredentialStore(self.cluster, index="index")
        writer = GitWriter(self.root / f"clones-{self.restarts}", credentials)
        prs = PullRequestClients(
            credentials, verify=self.tls.ca_cert, clock=lambda: self.world.clock
        )
        committer = Committer(
            writer, prs, on_pull_request=lambda url, action: self.told.append(action)
        )
        write_back(self.world, self.cluster, committer)

    def api_writes(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.server.requests() if r.method in WRITES]

    def heads(self) -> list[str]:
        refs = self.git.git("ls-remote", "--heads", self.git.url(self.repo)).stdout
        return sorted(line.split("refs/heads/", 1)[1] for line in refs.splitlines())

    def merge(self, number: int, head: str) -> None:
        """A human merges the pull request: its branch lands on main, and is deleted."""
        self.server.merge(number)
        url = self.git.url(self.repo)
        clone = self.root / f"merge-{number}"
        self.git.git("clone", "--quiet", url, str(clone))
        self.git.git("fetch", "--quiet", "origin", head, cwd=clone)
        self.git.git("merge", "--quiet", "--ff-only", "FETCH_HEAD", cwd=clone)
        self.git.git(
            "push", "--quiet", "origin", "HEAD:refs/heads/main", f":refs/heads/{head}", cwd=clone
        )

    def applied(self, name: str, image: str) -> None:
        """Flux applied what main now says, and the Deployment rolled."""
        self.world.kube.patch_as(
            self.world.workload(name),
            {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}},
            "kustomize-controller",
        )
        self.world.complete(name)


@pytest.fixture(params=sorted(PROVIDER_NAMES))
def prw(
    request: pytest.FixtureRequest,
    registry: Registry,
    git_server: GitServer,
    git_repo: str,
    pr_servers: dict[str, PrServer],
    acr_tls: TestCA,
    tmp_path: Path,
) -> Iterator[PrWorld]:
    provider = str(request.param)
    client = registry.client()
    world = CheckerWorld(registry.host, client, f"gitops_prs_{provider}")
    try:
        server = pr_servers[provider]
        yield PrWorld(world, git_server, server, acr_tls, tmp_path, git_repo)
    finally:
        world.close()
        client.close()


def item(world: CheckerWorld, name: str) -> dict[str, Any]:
    items = world.status["workloads"]["items"]
    return next(i for i in items if i["workload"] == f"deployment/{NAMESPACE}/{name}")


def setup(p: PrWorld) -> tuple[str, str]:
    """Base v1 and app 1.0.0 in git for ahead, web and api; then the base moves and the app
    is rebuilt. (old image, target)"""
    w = p.world
    w.publish("base", "1", base_image("v1"), "base-v1")
    w.publish("app", "1.0.0", w.app_on(base_image("v1"), "1.0.0"), "app-1.0.0")
    old = f"{w.ref('app')}:1.0.0"
    files = {f"apps/{n}.yaml": f"# {n}\n" + dump(manifest(n, old)) for n in ("ahead", "web", "api")}
    p.git.create_repo(p.repo, files)
    w.policy(
        {
            "base": w.base_spec(),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"settleTime": "1s"},
            "gitops": {
                "mode": "PullRequest",
                "pullRequest": {
                    "provider": PROVIDER_NAMES[p.server.provider],
                    "apiURL": p.server.url,
                    "repositoryURL": p.server.repository_url,
                },
            },
        }
    )
    w.deployment("ahead", old, labels=flux_labels("apps"))
    w.check("before the base moves")
    w.publish("base", "1", base_image("v2"), "base-v2")
    rebuilt = w.publish("app", "1.0.1", w.app_on(base_image("v2"), "1.0.1"), "app-1.0.1")
    return old, f"{w.ref('app')}:1.0.1@{rebuilt}"


def test_one_pull_request_per_candidate_across_checks_and_restarts(prw: PrWorld) -> None:
    p, w = prw, prw.world
    old, target = setup(p)

    # Someone already wrote the candidate into ahead's file: nothing to propose.
    p.git.commit(p.repo, {"apps/ahead.yaml": f"# ahead\n{dump(manifest('ahead', target))}"})
    w.check("the files already hold the candidate", advance=60)
    assert p.server.pulls() == [] and p.api_writes() == [], "a pull request on an empty diff"
    assert p.heads() == ["main"]

    w.deployment("web", old, labels=flux_labels("apps"))
    w.check("web is proposed", advance=10)
    (pr,) = p.server.pulls()
    assert pr.state == "open" and pr.base == "main", pr
    heads = [h for h in p.heads() if h != "main"]
    assert heads == [pr.head] and pr.head.startswith(f"imagedrift/{w.policy_name}/"), heads
    assert target in p.git.files(p.repo, branch=pr.head)["apps/web.yaml"]
    assert old in p.git.files(p.repo)["apps/web.yaml"], "main changed before any merge"
    assert item(w, "web")["state"] == "RollingOut"
    record = WorkloadState.decode(w.kube.bodies[w.workload("web")]).rollout
    assert record is not None and record.git is not None, record
    assert record.git.pull_request.endswith(str(pr.number)), record.git
    assert (record.git.head, record.git.commit) == (pr.head, p.git.head(p.repo, branch=pr.head))
    writes, tip = p.api_writes(), p.git.head(p.repo, branch=pr.head)
    assert len(writes) == 1 and writes[0].startswith("POST"), writes

    w.check("nothing new", advance=10)
    p.restart()
    w.check("after a restart", advance=10)
    assert p.api_writes() == writes, "a later check or a restart wrote to the API"
    assert p.git.head(p.repo, branch=pr.head) == tip, "the branch was pushed again"
    assert [x.number for x in p.server.pulls()] == [pr.number]

    # api joins: the branch carries both now; the pull request is updated, not doubled.
    w.deployment("api", old, labels=flux_labels("apps"))
    w.check("api joins", advance=10)
    (updated,) = p.server.pulls()
    assert updated.number == pr.number and updated.head == pr.head
    on_branch = p.git.files(p.repo, branch=pr.head)
    assert target in on_branch["apps/web.yaml"] and target in on_branch["apps/api.yaml"]
    later = p.api_writes()[len(writes) :]
    assert len(later) == 1 and not later[0].startswith("POST"), later
    assert "deployment/shop/api" in updated.body and "deployment/shop/web" in updated.body
    assert p.told == ["opened", "updated"], "pull requests counted wrong"

    # Merged by a human, applied by Flux: verified, the lineage names the pull request.
    p.merge(pr.number, pr.head)
    w.check("merged, not applied yet", advance=20)  # its state is read again after 15 s
    assert "merged" in item(w, "web")["reason"], item(w, "web")
    for name in ("ahead", "web", "api"):
        p.applied(name, target)
    w.check("applied", advance=10)
    w.check("settled", advance=10)
    rows = {
        r["workload"].rsplit("/", 1)[1]: r
        for e in w.status["lineage"]
        for r in e.get("rollouts", [])
    }
    assert {n: rows[n]["result"] for n in ("web", "api")} == {"web": "Complete", "api": "Complete"}
    url = rows["web"]["pullRequest"]
    assert url == rows["api"]["pullRequest"] and url.endswith(str(pr.number)), rows
    assert "pullRequest" not in rows["ahead"], rows["ahead"]
    w.check("after the merge", advance=10)
    assert len(p.server.pulls()) == 1 and p.heads() == ["main"], "the merged branch came back"


def test_a_pull_request_closed_without_merging_is_not_proposed_again(prw: PrWorld) -> None:
    p, w = prw, prw.world
    old, target = setup(p)
    w.check("ahead is proposed", advance=60)
    (pr,) = p.server.pulls()
    p.server.close(pr.number)
    w.check("a human closed it", advance=30)
    w.check("nothing to restore: main never had it", advance=10)
    w.check("settled", advance=10)
    assert item(w, "ahead")["state"] == "RolledBack", item(w, "ahead")
    (row,) = [r for e in w.status["lineage"] for r in e.get("rollouts", [])]
    assert row["result"] == "RolledBack" and "closed without merging" in row["reason"], row
    writes = p.api_writes()
    w.check("later", advance=60)
    assert p.api_writes() == writes and len(p.server.pulls()) == 1
    assert old in p.git.files(p.repo)["apps/ahead.yaml"] and target not in str(p.git.files(p.repo))


def test_a_dry_run_looks_pull_requests_up_and_opens_none(prw: PrWorld) -> None:
    """What ``imagedrift plan`` wires: the diff and the branch it would propose, read-only."""
    p, w = prw, prw.world
    old, target = setup(p)
    credentials = GitCredentialStore(p.cluster, index="index")
    preview = GitPreview(credentials)
    prs = PullRequestClients(credentials, verify=p.tls.ca_cert, clock=lambda: w.clock)
    write_back(w, p.cluster, Committer(preview, prs, read_only=True))
    w.check("planned", advance=60)
    assert p.api_writes() == [] and p.server.pulls() == [] and p.heads() == ["main"]
    (commit,) = preview.commits
    assert f"-        image: {old}\n" in commit.diff, commit.diff
    assert f"+        image: {target}\n" in commit.diff, commit.diff
    assert commit.proposed_on.startswith(f"imagedrift/{w.policy_name}/"), commit
    assert any(r.method == "GET" for r in p.server.requests()), "the pull request was not looked up"
