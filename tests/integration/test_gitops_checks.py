"""GitOps write-back at the check: what each workload of a policy becomes when its commit
lands, is refused by the files, or fails on its repository, on the real loopback git server
and registry (``CheckerWorld``'s recording Kubernetes port plays the cluster and Flux).

One policy, six Flux-managed Deployments, four repositories:
- ``web`` (repository good): committed, recorded with the commit, then followed: waiting
  until "Flux" applies it, verified, Complete with the commit in the lineage;
- ``marked``: its image carries a Flux ``$imagepolicy`` marker: left to Flux, says so;
- ``twice``: two manifests in the repository define it: refused, names both;
- ``ghost``: nothing in the repository sets its image: says so;
- ``downed``: its repository's server does not answer: an Error naming git, retried;
- ``denied``: the credentials for its repository are refused: an Error saying so, with no
  credential in it.
Nothing is half-written: only ``web`` has a record, only its file changed, in one commit, and
checks after it commit nothing again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagedrift.core.workloads import STATE_ANNOTATION, WorkloadState
from imagedrift.engine.commits import Committer
from imagedrift.engine.git_writes import GitWriter
from imagedrift.engine.gitops_sources import GitCredentialStore
from tests.harness.git_server import GitServer
from tests.harness.procs import LOOPBACK, free_port
from tests.harness.registry import Registry
from tests.integration.checker_world import NAMESPACE, CheckerWorld, base_image
from tests.integration.gitops_cluster import (
    AUTHOR,
    FakeCluster,
    dump,
    flux_labels,
    manifest,
    write_back,
)


@pytest.fixture
def world(registry: Registry, tmp_path: Path) -> Iterator[CheckerWorld]:
    client = registry.client()
    w = CheckerWorld(registry.host, client, "gitops_faults")
    try:
        yield w
    finally:
        w.close()
        client.close()


def state_of(world: CheckerWorld, name: str) -> WorkloadState:
    return WorkloadState.decode(world.kube.bodies[world.workload(name)])


def item(world: CheckerWorld, name: str) -> dict[str, Any]:
    items = world.status["workloads"]["items"]
    return next(i for i in items if i["workload"] == f"deployment/{NAMESPACE}/{name}")


def test_each_workload_gets_its_own_outcome_and_nothing_is_half_written(
    world: CheckerWorld, git_server: GitServer, tmp_path: Path
) -> None:
    world.publish("base", "1", base_image("v1"), "base-v1")
    world.publish("app", "1.0.0", world.app_on(base_image("v1"), "1.0.0"), "app-1.0.0")
    old = f"{world.ref('app')}:1.0.0"
    good, denied, suffix = "good", "denied", tmp_path.name[-8:].replace("_", "")
    good, denied = f"{good}-{suffix}", f"{denied}-{suffix}"
    marker = '# {"$imagepolicy": "flux-system:app"}'
    files = {
        "apps/web.yaml": "# the shop's web tier\n" + dump(manifest("web", old)),
        "apps/marked.yaml": dump(manifest("marked", old)).replace(old, f"{old} {marker}"),
        "apps/twice-a.yaml": dump(manifest("twice", old)),
        "apps/twice-b.yaml": dump(manifest("twice", old)),
    }
    git_server.create_repo(good, files)
    git_server.create_repo(denied, {"apps/denied.yaml": dump(manifest("denied", old))})
    cluster = FakeCluster()
    cluster.flux("good", git_server.url(good))
    cluster.flux("down", f"http://{LOOPBACK}:{free_port()}/down.git")
    cluster.flux("denied", git_server.url(denied))
    user, password = git_server.credentials
    cluster.secrets["index"] = {
        "repositories": (
            f"{git_server.base_url}/ creds\n"
            f"{git_server.url(denied)} wrong  # a rotated password nobody updated\n"
        ).encode()
    }
    cluster.secrets["creds"] = {"username": user.encode(), "password": password.encode()}
    cluster.secrets["wrong"] = {"username": user.encode(), "password": b"not-the-password"}
    writer = GitWriter(tmp_path / "clones", GitCredentialStore(cluster, index="index"))
    write_back(world, cluster, Committer(writer))
    for name, repo in (
        ("web", "good"),
        ("marked", "good"),
        ("twice", "good"),
        ("ghost", "good"),
        ("downed", "down"),
        ("denied", "denied"),
    ):
        world.deployment(name, old, labels=flux_labels(repo))
    world.policy(
        {
            "base": world.base_spec(),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"settleTime": "1s"},
            "gitops": {"mode": "Commit"},
        }
    )
    world.check("before the base moves")
    before = git_server.head(good)

    world.publish("base", "1", base_image("v2"), "base-v2")
    rebuilt = world.publish("app", "1.0.1", world.app_on(base_image("v2"), "1.0.1"), "app-1.0.1")
    target = f"{world.ref('app')}:1.0.1@{rebuilt}"
    result = world.check("the rebuild is validated: commits", advance=60)

    # web: one commit by imagedrift, only its file changed, the record names it.
    log = git_server.log(good)
    assert [c.author for c in log[:1]] == [AUTHOR] and log[1].sha == before, log
    commit = log[0].sha
    after = git_server.files(good)
    assert after["apps/web.yaml"] == files["apps/web.yaml"].replace(old, target)
    assert {p: t for p, t in after.items() if p != "apps/web.yaml"} == {
        p: t for p, t in files.items() if p != "apps/web.yaml"
    }
    record = state_of(world, "web").rollout
    assert record is not None and record.git is not None and record.git.commit == commit
    assert record.target == {"app": target}
    assert world.images_of("web") == {"app": old}, "a workload by commit was patched"
    web = item(world, "web")
    assert web["state"] == "RollingOut", web

    # The others: a reason each, no record, nothing in git.
    reasons = {name: item(world, name) for name in ("marked", "twice", "ghost", "downed", "denied")}
    assert reasons["marked"]["state"] == "ManagedByGitOps"
    assert "$imagepolicy" in reasons["marked"]["reason"], reasons["marked"]
    assert reasons["twice"]["state"] == "ManagedByGitOps"
    assert "2 manifests match" in reasons["twice"]["reason"], reasons["twice"]
    assert reasons["ghost"]["state"] == "ManagedByGitOps"
    assert "cannot commit to git" in reasons["ghost"]["reason"], reasons["ghost"]
    assert reasons["downed"]["state"] == "Error", reasons["downed"]["reason"]
    assert reasons["downed"]["reason"].startswith("git: "), reasons["downed"]
    assert reasons["denied"]["state"] == "Error"
    assert "credentials" in reasons["denied"]["reason"], reasons["denied"]
    for name in reasons:
        assert state_of(world, name).rollout is None, name
        assert STATE_ANNOTATION not in world.annotations_of(name) or not (
            state_of(world, name).rollout
        )
    assert git_server.log(denied)[0].author != AUTHOR
    everything = repr(world.status) + repr([e.message for e in result.events])
    assert "not-the-password" not in everything and password not in everything
    assert result.next_check_in is not None, "faults are retried"
    # Only git failed: the policy says so, and the controller backs off (a fault).
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == (False, "GitUnavailable"), ready
    assert result.fault == "GitUnavailable"

    # Nothing applied yet: web waits for Flux, nothing is committed again.
    world.check("Flux has not applied it yet", advance=10)
    assert "waiting for Flux Kustomization flux-system/good" in item(world, "web")["reason"]
    assert git_server.head(good) == commit
    # Flux applies it (its field manager), the Deployment rolls.
    world.kube.patch_as(
        world.workload("web"),
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": target}]}}}},
        "kustomize-controller",
    )
    world.complete("web")
    world.check("applied and rolled", advance=10)
    world.check("settled", advance=10)
    # Up to date: no longer among the workloads that need attention.
    assert all(not i["workload"].endswith("/web") for i in world.status["workloads"]["items"])
    (row,) = [
        r
        for entry in world.status["lineage"]
        for r in entry.get("rollouts", [])
        if r["workload"].endswith("/web")
    ]
    assert (row["result"], row["commit"]) == ("Complete", commit), row
    assert git_server.head(good) == commit, "committed again"
    assert item(world, "downed")["state"] == "Error"
