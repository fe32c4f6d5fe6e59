"""Other hands on the image field: a human's rollout undo, a GitOps controller's apply,
and a second policy. imagedrift yields, says so, and never patches twice.

Absence is proven over checks that ran: the operator finishes at least three more checks
of the policy (counted on its /metrics) while the workload's revision and image stay where
the other hand put them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from imagedrift.core.gitops import owned_images
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec, checks_pass, touched_checks
from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry

REVISION = "deployment.kubernetes.io/revision"


def revision(world: World, name: str) -> int:
    return int(world.get_deployment(name)["metadata"]["annotations"].get(REVISION, "0"))


def image_owner(world: World, name: str) -> str:
    """The field manager that owns the first container's image (newest writer)."""
    body = world.get_deployment(name)
    owners = owned_images(body["metadata"].get("managedFields"), "Deployment")
    return owners.get("app", {}).get("manager", "")


def rolled_once(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> tuple[str, str, str, OperatorProcess]:
    """web on app:1.0.0 rolled by imagedrift to 1.0.1 on the new base: (policy, old,
    target, the operator)."""
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1.0.0"))
    old = f"{world.ref('app')}:1.0.0"
    world.deployment("web", old, policy=f"hands-{world.suffix}", replicas=1)
    policy = world.policy(
        "hands", {"base": base_spec(world), "app": {"tags": {"semver": {"range": ">=1.0.0"}}}}
    )
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate")
    world.publish("base", "1", new_base)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new_base, "1.0.1"))
    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(lambda: rolled_out(world, "web", target), what="web rolled", timeout=90)
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert image_owner(world, "web") == "imagedrift"
    return policy, old, target, operator


def overridden(world: World, policy: str) -> dict[str, Any]:
    return wait_for(
        lambda: (lambda i: i if i.get("state") == "Overridden" else None)(
            world.item(policy, "web")
        ),
        what="web Overridden",
        timeout=60,
    )


def test_rollout_undo_is_respected_and_never_re_patched(
    world: World,
    registry: Registry,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    policy, old, _, operator = rolled_once(world, operator_factory)
    assert revision(world, "web") == 2
    controlplane.kubectl("rollout", "undo", "deployment/web", "-n", world.namespace)
    wait_for(lambda: rolled_out(world, "web", old), what="the undo rolled out", timeout=60)
    item = overridden(world, policy)
    assert old in item["reason"] and "kubectl" in item["reason"], item
    assert "will not fight" in item["reason"]
    wait_for(
        lambda: ("Warning", "Overridden") in {(t, r) for t, r, _ in world.events("web")},
        what="a Warning Event Overridden on web",
        timeout=30,
    )
    checks_pass(operator, policy, 3)
    assert world.image_of("web") == old, "imagedrift patched the undone image again"
    assert revision(world, "web") == 3, "only the undo made a revision after imagedrift's"
    assert image_owner(world, "web") != "imagedrift"
    rollouts = [r for e in world.get_policy(policy)["status"]["lineage"] for r in e["rollouts"]]
    assert [r["result"] for r in rollouts] == ["Overridden"], rollouts


def test_a_gitops_apply_of_the_old_image_is_not_fought(
    world: World,
    registry: Registry,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    policy, old, _, operator = rolled_once(world, operator_factory)
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": world.namespace,
            "labels": {"app": "web", "imagedrift.io/policy": policy},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": old}]},
            },
        },
    }
    for _ in range(4):  # as Flux re-applies on every reconcile
        controlplane.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kustomize-controller",
            "-f",
            "-",
            input=yaml.safe_dump(manifest),
        )
        checks_pass(operator, policy, 1)
    item = overridden(world, policy)
    assert "kustomize-controller" in item["reason"], item
    checks_pass(operator, policy, 3)
    assert world.image_of("web") == old
    assert revision(world, "web") == 3, "imagedrift patched once in all (revision 2)"
    assert image_owner(world, "web") == "kustomize-controller"


def test_two_policies_selecting_one_workload_both_report_conflict_and_neither_patches(
    world: World, controlplane: ControlPlane, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1.0.0"))
    world.publish("base", "1", new_base)
    world.publish("app", "1.0.1", world.app_on(new_base, "1.0.1"))
    old = f"{world.ref('app')}:1.0.0"
    world.deployment("web", old, policy=f"mine-{world.suffix}", replicas=1)
    tags = {"tags": {"semver": {"range": ">=1.0.0"}}}
    mine = world.policy("mine", {"base": base_spec(world), "app": tags})
    theirs = world.policy(
        "theirs",
        {
            "base": base_spec(world),
            "app": tags,
            "rollout": {"selector": {"matchLabels": {"app": "web"}}},
        },
    )
    operator = operator_factory()

    def conflict(policy: str, other: str) -> bool:
        item = world.item(policy, "web")
        return item.get("state") == "Conflict" and other in item.get("reason", "")

    wait_for(lambda: conflict(mine, theirs), what=f"{mine} reports the conflict", timeout=60)
    wait_for(lambda: conflict(theirs, mine), what=f"{theirs} reports the conflict", timeout=60)
    # A Conflict waits for a human: nothing re-checks it on a schedule. Touching the
    # workload (a change its watch reports) makes both policies check it again, three
    # times, and neither may patch it on any of those checks.
    touched_checks(world, operator, [mine, theirs], "Deployment", "web", 3)
    assert conflict(mine, theirs) and conflict(theirs, mine)
    assert world.image_of("web") == old
    assert revision(world, "web") == 1, "neither policy patched it"
