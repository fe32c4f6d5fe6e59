"""Other hands on the real node: a container set back by someone while imagedrift's
rollout runs is left alone by the rollback of the rest, and never patched again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from imagedrift.core.workloads import STATE_ANNOTATION, STATUS_ANNOTATION
from tests.e2e.on_node import (
    SERVE,
    app_on,
    on_real_node,
    runnable_base,
    wait_running,
)
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, checks_pass, rollouts
from tests.e2e.test_hands import revision
from tests.harness.controlplane import ControlPlane
from tests.harness.node import RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def test_a_container_changed_mid_rollout_is_left_alone_by_the_rollback(
    real_node: RealNode,
    world: World,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """Two containers rolled in one patch; someone sets one of them back while the rollout
    runs; the rollout then fails (the rebuilt app never gets ready). The rollback restores
    only the other (to the digest it ran), is followed to Complete, and the changed one is
    never patched again."""
    old_base, new_base = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old_base)
    app_ran = world.publish("app", "1.0.0", app_on(world, old_base, "app-1.0.0", SERVE))
    world.publish("side", "1.0.0", app_on(world, old_base, "side-1.0.0", SERVE))
    world.publish("base", "1", new_base)
    app_new = world.publish(
        "app", "1.0.1", app_on(world, new_base, "app-1.0.1", "trap 'exit 0' TERM; sleep 3600")
    )
    side_new = world.publish("side", "1.0.1", app_on(world, new_base, "side-1.0.1", SERVE))
    app_old, side_old = f"{world.ref('app')}:1.0.0", f"{world.ref('side')}:1.0.0"
    name = f"pair-{world.suffix}"
    extra = on_real_node(app_old, probe=True, app="pair")
    side = {**extra["template"]["spec"]["containers"][0], "name": "side", "image": side_old}
    extra["template"]["spec"]["containers"].append(side)
    # Long enough for the other hand to act before the deadline fails the rollout.
    extra["progressDeadlineSeconds"] = 10
    world.deployment("pair", app_old, policy=name, replicas=1, extra=extra)
    wait_running(world, "pair", app_ran, 1)
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
