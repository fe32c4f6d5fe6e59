"""GitOps write-back end to end, with Flux's own controllers and the real node.

A Deployment lives in a git repository on the loopback git server and Flux applies it
(GitRepository + Kustomization, every 5 s). The policy says ``gitops.mode: Commit``, so
imagedrift never patches it: it commits the validated digest to the branch Flux reads,
waits for Flux to apply the commit, then verifies the rollout by what the real node's
pods do, and records the commit in the lineage.

- The rebuild serves: imagedrift's commit -> Flux applies it -> the pods run the rebuilt
  digest -> Complete, with the commit's sha in the lineage. A human then reverts the
  commit: Flux applies the old image and imagedrift leaves it (Overridden), writing
  nothing more to git.
- The rebuild crashes: imagedrift's commit -> Flux applies it -> the pods never get Ready
  -> a rollback commit restoring the exact digest that ran -> Flux applies it -> the pods
  run that digest again -> RolledBack, the rollback complete, the candidate never again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.on_node import SERVE, app_on, on_real_node, runnable_base, wait_running
from tests.e2e.promised import wait_lineage_row
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, checks_pass, git_access, policy_status
from tests.harness.controlplane import Kube
from tests.harness.flux import Flux
from tests.harness.flux_app import MANIFESTS, FluxApp, deployment_yaml
from tests.harness.git_server import GitServer
from tests.harness.node import RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

CRASH_AT_START = "echo 'config missing' >&2; exit 1"
SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}
AUTHOR = "imagedrift-bot <bot@example.invalid>"


@dataclass
class GitOpsWorld:
    world: World
    app: FluxApp
    git: GitServer
    policy_name: str
    env: dict[str, str]

    @property
    def repo(self) -> str:
        return self.app.name

    @property
    def workload(self) -> str:
        return f"deployment/{self.world.namespace}/web"

    def ours(self) -> list[str]:
        """The shas of the commits imagedrift made, newest first."""
        return [c.sha for c in self.git.log(self.repo) if c.author == AUTHOR]


def manifest(world: World, image: str, policy: str) -> str:
    """The Deployment as a team keeps it in git: comments, and the image where they set it."""
    return deployment_yaml(
        "web",
        image,
        labels={"app": "web", "imagedrift.io/policy": policy},
        replicas=2,
        spec=on_real_node(image, probe=True),
        comment="web: owned by the shop team",
    )


@pytest.fixture
def gitops(
    real_node: RealNode,
    world: World,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
    kube: Kube,
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> Iterator[GitOpsWorld]:
    """Base v1, app 1.0.0 serving, its Deployment in git and applied by Flux; the
    operator's credentials for the repository (an index Secret naming a Secret)."""
    old = runnable_base("v1")
    world.publish("base", "1", old)
    first = world.publish("app", "1.0.0", app_on(world, old, "1.0.0", SERVE))
    policy = f"gitops-{world.suffix}"
    tagged = f"{world.ref('app')}:1.0.0"
    app = FluxApp(kube, flux, git_server, git_repo, world.namespace, interval="5s")
    app.deploy({f"{MANIFESTS}/web.yaml": manifest(world, tagged, policy)}, tagged)
    wait_running(world, "web", first, 2)

    yield GitOpsWorld(world, app, git_server, policy, git_access(operator_secrets, git_server))
    flux.check_alive()


def policy_spec(world: World, verify: str) -> dict[str, Any]:
    return {
        "base": base_spec(world),
        "app": SEMVER,
        "rollout": {"settleTime": "10s", "verifyTimeout": verify},
        "gitops": {
            "mode": "Commit",
            "author": {"name": "imagedrift-bot", "email": "bot@example.invalid"},
        },
    }


def create_policy(g: GitOpsWorld, verify: str) -> str:
    spec = policy_spec(g.world, verify)
    name = g.world.policy("gitops", spec)
    assert name == g.policy_name
    return name


def test_a_commit_is_applied_by_flux_verified_and_a_human_revert_is_respected(
    gitops: GitOpsWorld, operator_factory: Callable[..., OperatorProcess]
) -> None:
    g, world = gitops, gitops.world
    policy = create_policy(g, "3m")
    operator = operator_factory(env=g.env)
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert g.ours() == []

    new = runnable_base("v2")
    base_digest = world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", app_on(world, new, "1.0.1", SERVE))
    target = f"{world.ref('app')}:1.0.1@{rebuilt}"

    # imagedrift commits; Flux applies; the real node's pods run the rebuilt digest.
    row = wait_lineage_row(world, policy, g.workload, "Complete", timeout=240)
    (commit,) = g.ours()
    assert row["commit"] == commit, row
    wait_running(world, "web", rebuilt, 2)
    assert world.image_of("web") == target
    # Only the image changed in git: the comment and everything else stay as written.
    text = g.git.files(g.repo)[f"{MANIFESTS}/web.yaml"]
    before = manifest(world, f"{world.ref('app')}:1.0.0", policy)
    assert text == before.replace(f"{world.ref('app')}:1.0.0", target)
    message = g.git.message(g.repo, commit)
    assert f"Base {world.ref('base')}:1 is now {base_digest}." in message, message
    assert f"- {g.workload} app: {world.ref('app')}:1.0.0 -> {target}" in message, message
    assert "Passed" in message and f"Imagedrift-Policy: {policy}" in message, message
    # The workload was never patched by imagedrift: Flux's field manager set the image.
    managers = {
        m["manager"]
        for m in world.get_deployment("web")["metadata"]["managedFields"]
        if "f:spec" in (m.get("fieldsV1") or {})
    }
    assert "imagedrift" not in managers, managers
    world.wait_event("web", "RolloutComplete")

    # A human reverts imagedrift's commit; Flux applies the old image again.
    g.git.revert(g.repo, commit)
    g.app.request_reconcile()
    wait_for(
        lambda: world.item(policy, "web").get("state") == "Overridden",
        what="web Overridden after the human revert",
        timeout=90,
    )
    assert world.image_of("web").endswith(":1.0.0")
    checks_pass(operator, policy, 3)
    assert g.ours() == [commit], "imagedrift wrote again after a human reverted it"
    assert world.image_of("web").endswith(":1.0.0")
    assert "kustomize-controller" in world.item(policy, "web")["reason"]


def test_a_rebuild_that_crashes_is_rolled_back_by_a_commit_flux_applies(
    gitops: GitOpsWorld, operator_factory: Callable[..., OperatorProcess]
) -> None:
    g, world = gitops, gitops.world
    previous = running_digest(world)
    policy = create_policy(g, "90s")
    operator = operator_factory(env=g.env)
    world.wait_ready(policy, reason="UpToDate", timeout=60)

    new = runnable_base("v2")
    world.publish("base", "1", new)
    crashing = world.publish("app", "1.0.1", app_on(world, new, "1.0.1", CRASH_AT_START))

    row = wait_lineage_row(world, policy, g.workload, "RolledBack", timeout=300)
    commit, rolled = g.ours()[1], g.ours()[0]
    assert row["commit"] == commit, row
    wait_for(
        lambda: next(
            (
                r
                for r in policy_status(world, policy).get("lineage", [{}])[0].get("rollouts", [])
                if r.get("workload") == g.workload and r.get("rollback") == "Complete"
            ),
            None,
        ),
        what="the rollback followed to Complete",
        timeout=180,
    )
    row = wait_lineage_row(world, policy, g.workload, "RolledBack")
    assert row["rollbackCommit"] == rolled, row
    # Back on exactly the digest that ran, in git and on the node.
    restored = f"{world.ref('app')}:1.0.0@{previous}"
    assert restored in g.git.files(g.repo)[f"{MANIFESTS}/web.yaml"]
    assert world.image_of("web") == restored
    wait_running(world, "web", previous, 2)
    assert "roll back" in g.git.message(g.repo, rolled)
    world.wait_event("web", "RolledBack")
    # The candidate is never written again.
    checks_pass(operator, policy, 3)
    assert g.ours() == [rolled, commit]
    assert world.item(policy, "web")["state"] == "RolledBack"
    assert crashing not in world.image_of("web")


def running_digest(world: World) -> str:
    from tests.e2e.on_node import running_digests

    (digest,) = set(running_digests(world, "web").values())
    return digest
