"""The operator stops as a pod is stopped: SIGTERM, and it must exit 0 within the grace.

A stop that lands while a worker is inside a check (here: right after the patch, while
the rollout is being followed) once aborted the interpreter (exit -6), and a watch read
held the stop for 10 s until SIGKILL; either way the Lease was not handed over. The
harness (``operator_factory``) holds every test to a clean stop; this test makes the
hardest moment happen on purpose, more than once, and lets a new operator finish.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.scenario import World, base_image
from tests.e2e.support import base_spec, wait_rolled
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for


def test_sigterm_mid_rollout_exits_zero_and_a_new_operator_finishes(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    for i in range(2):
        old_base, new_base = base_image(f"stop-v1-{i}"), base_image(f"stop-v2-{i}")
        world.publish("base", "1", old_base)
        app, web = f"app{i}", f"web{i}"
        world.publish(app, "1.0.0", world.app_on(old_base, "1.0.0"))
        world.deployment(web, f"{world.ref(app)}:1.0.0", policy=f"stop{i}-{world.suffix}")
        policy = world.policy(
            f"stop{i}",
            {"base": base_spec(world), "app": {"tags": {"semver": {"range": ">=1.0.0"}}}},
        )
        operator = operator_factory()
        world.wait_ready(policy, reason="UpToDate")
        world.publish("base", "1", new_base)
        rebuilt = world.publish(app, "1.0.1", world.app_on(new_base, "1.0.1"))
        target = f"{world.ref(app)}@{rebuilt}"

        def patched(web: str = web, target: str = target) -> bool:
            return world.image_of(web) == target

        wait_for(patched, what="the patch", timeout=60)
        assert operator.stop() is None, "the operator did not stop cleanly mid-rollout"

        successor = operator_factory()

        wait_rolled(world, web, target)
        world.wait_ready(policy, reason="UpToDate", timeout=60)
        assert successor.stop() is None
