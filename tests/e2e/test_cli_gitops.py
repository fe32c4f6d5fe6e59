"""``imagedrift plan`` of a policy that commits, end to end: a Deployment in git that Flux's
own controllers apply (kwok runs it), its base re-published and the app rebuilt; the CLI
(a subprocess, as an SRE runs it) shows the exact diff the operator would commit to the
branch Flux reads, and the message, and pushes nothing: the git server sees no
receive-pack request, the branch stays where it was, the Deployment is not patched."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, git_access, ok_json
from tests.harness.controlplane import Kube
from tests.harness.flux import Flux
from tests.harness.flux_app import MANIFESTS, FluxApp, deployment_yaml
from tests.harness.git_server import GitServer

pytestmark = pytest.mark.usefixtures("crds_installed")


def manifest(image: str, policy: str) -> str:
    """The Deployment as a team keeps it in git: a comment, and the image where they set it."""
    labels = {"app": "web", "imagedrift.io/policy": policy}
    return deployment_yaml("web", image, labels=labels, comment="web: owned by the shop team")


def changed_lines(diff: str) -> list[str]:
    """The ``-``/``+`` lines of a unified diff, without its file headers."""
    return [
        line
        for line in diff.splitlines()
        if line[:1] in ("-", "+") and not line.startswith(("--- ", "+++ "))
    ]


def test_plan_shows_the_diff_it_would_commit_and_pushes_nothing(
    world: World,
    kube: Kube,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
    operator_secrets: Callable[[str, dict[str, str]], str],
    cli: Callable[..., subprocess.CompletedProcess[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    policy = f"gitops-{world.suffix}"
    tagged = f"{world.ref('app')}:1.0.0"
    path = f"{MANIFESTS}/web.yaml"
    app = FluxApp(kube, flux, git_server, git_repo, world.namespace, interval="5s")
    app.deploy({path: manifest(tagged, policy)}, tagged)
    _, password = git_server.credentials
    for variable, value in git_access(operator_secrets, git_server).items():
        monkeypatch.setenv(variable, value)  # as the operator is told
    name = world.policy(
        "gitops",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "gitops": {
                "mode": "Commit",
                "author": {"name": "imagedrift-bot", "email": "bot@example.invalid"},
            },
        },
    )
    assert name == policy

    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    target = f"{world.ref('app')}:1.0.1@{rebuilt}"
    head, since = git_server.head(git_repo), time.monotonic()
    deployed = world.get_deployment("web")["metadata"]["resourceVersion"]

    planned = cli("plan", policy, "-o", "json")
    plan = ok_json(planned)
    workload = f"deployment/{world.namespace}/web"
    [rollout] = plan["rollouts"]
    assert (rollout["workload"], rollout["action"]) == (workload, "roll")
    assert rollout["git"]["repository"] == git_server.url(git_repo)
    assert rollout["containers"] == [
        {"container": "app", "from": tagged, "to": target, "tag": "1.0.1"}
    ]
    assert "spec" not in rollout["patch"], "a workload applied by Flux is never patched"
    [commit] = plan["commits"]
    assert (commit["repository"], commit["branch"], commit["parent"]) == (
        git_server.url(git_repo),
        "main",
        head,
    )
    assert commit["author"] == "imagedrift-bot <bot@example.invalid>"
    [written] = commit["workloads"]
    assert (written["workload"], written["outcome"], written["files"]) == (
        workload,
        "Committed",
        [path],
    )
    assert written["reason"].startswith(f"set {target} at web.yaml:"), written
    assert f"- {workload} app: {tagged} -> {target}" in commit["message"], commit["message"]
    assert f"Imagedrift-Policy: {policy}" in commit["message"], commit["message"]
    diff = commit["diff"]
    assert diff.startswith(f"--- a/{path}\n+++ b/{path}\n@@ "), diff
    [line] = [x for x in manifest(tagged, policy).splitlines() if "image:" in x]
    assert changed_lines(diff) == [f"-{line}", f"+{line.replace(tagged, target)}"], diff

    table = cli("plan", policy)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert f"  {git_server.url(git_repo)}  branch main  at {head[:12]}\n" in out, out
    assert f"      --- a/{path}\n      +++ b/{path}\n" in out, out
    shown = out.split("\n    diff:\n", 1)[1].split("\n\n", 1)[0].rstrip("\n")
    assert shown == "\n".join(f"      {line}" for line in diff.splitlines()), out
    assert password not in planned.stdout + planned.stderr + out + table.stderr

    # Nothing was written: no push (not even one refused), the branch and the workload as
    # they were; the branch was read.
    assert git_server.requests_for(git_repo, service="git-receive-pack") == []
    assert git_server.head(git_repo) == head
    assert git_server.fetches(git_repo, since=since) >= 2, "each plan reads the branch"
    assert world.get_deployment("web")["metadata"]["resourceVersion"] == deployed
    assert world.image_of("web") == tagged
