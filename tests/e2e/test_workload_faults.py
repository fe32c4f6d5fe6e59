"""A fault on one workload is that workload's observation, never the end of the check.

The base's registry stays up while one app's registry goes away: the policy's status is
still written, the other workload still rolls, the failing one is ``Error`` with its
registry named, and everything recovers when the registry returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagedrift.registry.push import base_marks, push
from tests.e2e.scenario import World, base_image, layer, rolled_out
from tests.e2e.support import base_spec
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


def test_one_apps_registry_failing_leaves_the_rest_of_the_policy_working(
    world: World,
    registry_factory: Callable[[], Registry],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    private = registry_factory()
    other = private.client()
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    marks = base_marks(old.digest, f"{world.ref('base')}:1")
    push(other, "team/far", old.derive(layer("far 1.0.0"), annotations=marks), "1.0.0")
    policy_name = f"split-{world.suffix}"
    world.deployment("near", f"{world.ref('app')}:1.0.0", policy=policy_name, replicas=1)
    world.deployment("far", f"{private.host}/team/far:1.0.0", policy=policy_name, replicas=1)
    policy = world.policy(
        "split",
        {
            "base": base_spec(world, interval="2s"),
            "app": {
                "tags": {"semver": {"range": ">=1.0.0"}},
                "insecureRegistries": [private.host],  # far's registry is plain HTTP too
            },
        },
    )
    operator_factory()
    world.wait_ready(policy, reason="UpToDate")

    private.stop()
    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    near_target = f"{world.ref('app')}@{rebuilt}"

    def far_in_error(body: dict[str, Any]) -> bool:
        items = (body.get("status") or {}).get("workloads", {}).get("items") or []
        return any(
            i.get("workload", "").endswith("/far") and i.get("state") == "Error" for i in items
        )

    body = world.wait_policy(policy, far_in_error, "far in Error while its registry is down")
    status = body["status"]
    far = next(i for i in status["workloads"]["items"] if i["workload"].endswith("/far"))
    assert private.host in far["reason"], far
    assert status["base"]["digest"] == new.digest, "the base's registry answered: recorded"
    assert status["workloads"]["errors"] == 1
    ready = world.condition(policy)
    assert (ready["status"], ready["reason"]) == ("False", "RegistryUnavailable")
    assert "1 of 2 workload(s) could not be checked" in ready["message"]
    assert private.host in ready["message"]
    assert world.condition(policy, "Stalled") == {}, "an outage is retried, not Stalled"
    # The healthy workload is not held back by the other one's registry.
    wait_for(
        lambda: rolled_out(world, "near", near_target),
        what="near rolled while far's registry is down",
        timeout=90,
    )

    private.start()
    far_rebuilt = push(
        other,
        "team/far",
        new.derive(layer("far 1.0.1"), annotations=base_marks(new.digest, world.ref("base"))),
        "1.0.1",
    )
    wait_for(
        lambda: rolled_out(world, "far", f"{private.host}/team/far@{far_rebuilt}"),
        what="far rolled once its registry returned",
        timeout=120,
    )
    body = world.wait_ready(policy, reason="UpToDate", timeout=90)
    assert body["status"]["workloads"]["errors"] == 0
    assert body["status"]["lastError"] == ""
    other.close()
