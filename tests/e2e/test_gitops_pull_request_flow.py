"""Pull-request write-back end to end: the operator as a process, Flux's controllers, the
loopback git server and a TLS server speaking GitHub's pull-request API.

The base moves: imagedrift pushes its branch and opens one pull request; more checks and an
operator restart find it again (by its branch, through the API) and write nothing; a human
merges it, Flux applies main, the rollout is verified and the lineage names the pull request;
the merged branch is never pushed again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.promised import wait_lineage_row
from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, checks_pass, git_access
from tests.harness.controlplane import Kube
from tests.harness.flux import Flux
from tests.harness.flux_app import MANIFESTS, FluxApp, deployment_yaml
from tests.harness.git_server import GitServer
from tests.harness.operator import OperatorProcess
from tests.harness.pr_servers import PrServer
from tests.harness.procs import wait_for
from tests.harness.tlsca import TestCA

pytestmark = pytest.mark.usefixtures("crds_installed")

WRITES = ("POST", "PATCH", "PUT")


def deployment(image: str, policy: str) -> str:
    labels = {"imagedrift.io/policy": policy}
    return deployment_yaml("web", image, labels=labels, comment="web, reviewed by the shop team")


def test_one_pull_request_across_checks_and_a_restart_then_merged_and_verified(
    world: World,
    kube: Kube,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
    pr_servers: dict[str, PrServer],
    acr_tls: TestCA,
    operator_secrets: Callable[[str, dict[str, str]], str],
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    github = pr_servers["github"]
    old = base_image("v1")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    tagged = f"{world.ref('app')}:1.0.0"
    policy = f"prs-{world.suffix}"
    app = FluxApp(kube, flux, git_server, git_repo, world.namespace, interval="5s")
    app.deploy({f"{MANIFESTS}/web.yaml": deployment(tagged, policy)}, tagged)

    access = git_access(operator_secrets, git_server, token=github.token)
    world.policy(
        "prs",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "gitops": {
                "mode": "PullRequest",
                "pullRequest": {
                    "provider": "GitHub",
                    "apiURL": github.url,
                    "repositoryURL": github.repository_url,
                },
            },
        },
    )
    env = {**access, "IMAGEDRIFT_CA_BUNDLE": str(acr_tls.ca_cert)}
    operator = operator_factory(env=env)
    world.wait_ready(policy, reason="UpToDate", timeout=60)

    new = base_image("v2")
    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    target = f"{world.ref('app')}:1.0.1@{rebuilt}"
    (pr,) = wait_for(lambda: github.pulls() or None, what="a pull request opened", timeout=90)
    assert pr.base == "main" and pr.head.startswith(f"imagedrift/{policy}/"), pr
    assert target in git_server.files(git_repo, branch=pr.head)[f"{MANIFESTS}/web.yaml"]
    assert tagged in git_server.files(git_repo)[f"{MANIFESTS}/web.yaml"], "main changed"
    assert "deployment/" in pr.body and "Passed" in pr.body, pr.body
    writes = [r for r in github.requests() if r.method in WRITES]
    tip = git_server.head(git_repo, branch=pr.head)
    assert world.image_of("web") == tagged, "a proposed image reached the cluster"

    # More checks, then a new operator process: nothing is written again.
    checks_pass(operator, policy, 3)
    assert operator.stop() is None
    operator = operator_factory(env=env)
    checks_pass(operator, policy, 3)
    assert [r for r in github.requests() if r.method in WRITES] == writes
    assert [p.number for p in github.pulls()] == [pr.number]
    assert git_server.head(git_repo, branch=pr.head) == tip

    # A human merges it (the branch lands on main and is deleted); Flux applies main.
    github.merge(pr.number)
    clone = tmp_path / "merge"
    git_server.git("clone", "--quiet", git_server.url(git_repo), str(clone))
    git_server.git("fetch", "--quiet", "origin", pr.head, cwd=clone)
    git_server.git("merge", "--quiet", "--ff-only", "FETCH_HEAD", cwd=clone)
    git_server.git(
        "push", "--quiet", "origin", "HEAD:refs/heads/main", f":refs/heads/{pr.head}", cwd=clone
    )
    app.request_reconcile()
    row = wait_lineage_row(world, policy, f"deployment/{world.namespace}/web", "Complete")
    assert row["pullRequest"].endswith(f"/pull/{pr.number}"), row
    assert world.image_of("web") == target
    # The checks that saw the merge and verified the rollout pushed nothing again.
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert len(github.pulls()) == 1
    heads = git_server.git("ls-remote", "--heads", git_server.url(git_repo)).stdout
    assert "imagedrift/" not in heads, "the merged branch was pushed again"
