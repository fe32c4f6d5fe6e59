"""Other hands on the image field: a human's rollout undo, a GitOps controller's apply,
and a second policy. imagedrift yields, says so, and never patches twice.

Absence is proven over checks that ran: the operator finishes at least three more checks
of the policy (counted on its /metrics) while the workload's revision and image stay where
the other hand put them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from imagedrift.core.gitops import owned_images
from imagedrift.core.workloads import STATE_ANNOTATION, STATUS_ANNOTATION
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec, checks_pass, rollouts, touched_checks
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


def test_a_container_changed_mid_rollout_is_left_alone_by_the_rollback(
    world: World,
    registry: Registry,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """Two containers rolled in one patch; someone sets one of them back while the rollout
    runs; the rollout then fails. The rollback restores only the other (to the digest it
    ran), is followed to Complete, and the changed one is never patched again."""
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    app_ran = world.publish("app", "1.0.0", world.app_on(old_base, "app-1.0.0"))
    world.publish("side", "1.0.0", world.app_on(old_base, "side-1.0.0"))
    world.publish("base", "1", new_base)
    app_new = world.publish("app", "1.0.1", world.app_on(new_base, "app-1.0.1"))
    side_new = world.publish("side", "1.0.1", world.app_on(new_base, "side-1.0.1"))
    app_old, side_old = f"{world.ref('app')}:1.0.0", f"{world.ref('side')}:1.0.0"
    name = f"pair-{world.suffix}"
    world.deployment(
        "pair",
        app_old,
        policy=name,
        replicas=1,
        extra={
            # Long enough for the other hand to act before the deadline fails the rollout.
            "progressDeadlineSeconds": 10,
            "template": {
                "metadata": {
                    "labels": {"app": "pair"},
                    # Pods running the rebuilt app never get ready: the rollout fails.
                    "annotations": {"imagedrift.test/never-ready": app_new},
                },
                "spec": {
                    "containers": [
                        {"name": "app", "image": app_old},
                        {"name": "side", "image": side_old},
                    ]
                },
            },
        },
    )
    policy = world.policy(
        "pair",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"verifyTimeout": "60s"},
        },
    )
    operator = operator_factory()

    def images() -> dict[str, str]:
        spec = world.get_deployment("pair")["spec"]["template"]["spec"]
        return {c["name"]: c["image"] for c in spec["containers"]}

    targets = {"app": f"{world.ref('app')}@{app_new}", "side": f"{world.ref('side')}@{side_new}"}
    wait_for(lambda: images() == targets, what="both containers patched at once", timeout=60)
    # The deployment controller numbers the new ReplicaSet a moment after the patch.
    wait_for(lambda: revision(world, "pair") == 2, what="pair at revision 2", timeout=30)
    # The other hand: the sidecar set back, as `kubectl set image` would.
    controlplane.kubectl(
        "set", "image", "deployment/pair", f"side={side_old}", "-n", world.namespace
    )
    restored = {"app": f"{world.ref('app')}@{app_ran}", "side": side_old}
    wait_for(lambda: images() == restored, what="app rolled back, side left alone", timeout=90)

    def rollback_settled() -> dict[str, Any] | None:
        note = world.get_deployment("pair")["metadata"]["annotations"].get(STATE_ANNOTATION)
        record = (json.loads(note) if note else {}).get("rollout") or {}
        return record if (record.get("rollback") or {}).get("phase") == "Complete" else None

    record = wait_for(rollback_settled, what="the rollback followed to Complete", timeout=60)
    assert record["phase"] == "RolledBack" and "ProgressDeadlineExceeded" in record["reason"]
    world.wait_event("pair", "RollbackComplete")
    messages = [m for _, r, m in world.events("pair") if r == "RolledBack"]
    assert messages and "left alone (changed meanwhile): side" in messages[0], messages
    lineage = {r["container"]: r for r in rollouts(world, policy)}
    assert {c: (r["result"], r.get("rollback")) for c, r in lineage.items()} == {
        "app": ("RolledBack", "Complete"),
        "side": ("RolledBack", "Complete"),
    }, lineage

    # Three more checks: nothing is patched again, the sidecar stays the other hand's.
    before = revision(world, "pair")
    checks_pass(operator, policy, 3)
    assert images() == restored and revision(world, "pair") == before
    detail = json.loads(world.get_deployment("pair")["metadata"]["annotations"][STATUS_ANNOTATION])
    states = {c["container"]: c["state"] for c in detail["containers"]}
    assert states == {"app": "RolledBack", "side": "Overridden"}, detail
