"""How often imagedrift writes a workload it rolls: every write of a Deployment's
annotations bumps its ``metadata.generation`` (the Deployment strategy counts annotations
as well as the spec) and is copied onto its ReplicaSets, so a rollout that completes is
written at most three times: the patch, the outcome, and nothing in steady state. The
progress in between ("1 of 2 replicas updated") lives in the policy's status."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.scenario import World
from tests.e2e.support import base_spec, drift, publish_rebuild, rollouts, touched_checks
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}


def generation(world: World, name: str) -> int:
    return int(world.get_deployment(name)["metadata"]["generation"])


def test_a_completed_rollout_writes_the_workload_at_most_three_times(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _, new, target = drift(world, "app")
    name = f"writes-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name, replicas=3)
    before = generation(world, "web")
    # A settling window the rollout really waits through, checked every few seconds.
    policy = world.policy(
        "writes", {"base": base_spec(world), "app": SEMVER, "rollout": {"settleTime": "6s"}}
    )
    publish_rebuild(world, "app", new)
    operator = operator_factory()
    wait_for(
        lambda: [r["result"] for r in rollouts(world, policy)] == ["Complete"],
        what="the rollout recorded Complete",
        timeout=90,
    )
    assert world.image_of("web") == target
    world.wait_ready(policy, reason="UpToDate")
    # Steady state over three more checks: no write.
    settled = generation(world, "web")
    touched_checks(world, operator, [policy], "Deployment", "web", 3)
    assert generation(world, "web") == settled, "steady state writes nothing"
    writes = settled - before
    assert 2 <= writes <= 3, f"{writes} writes of the workload for one rollout"
