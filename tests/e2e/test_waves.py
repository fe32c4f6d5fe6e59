"""Safe rollouts end to end: a canary wave first, a pause after a healthy wave, and
maintenance windows. A failed canary, rolled back with the remaining waves stopped, runs on
the real node (``test_real_node_waves.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.e2e.scenario import World
from tests.e2e.support import (
    base_spec,
    checks_pass,
    drift,
    rollouts,
    wait_rolled,
)
from tests.harness.operator import OperatorProcess
from tests.harness.registry import Registry


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_canary_first_then_the_rest_after_a_healthy_pause(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _, new, target = drift(world, "app")
    name = f"waves-{world.suffix}"
    names = [f"w{i}" for i in range(5)]
    for n in names:
        world.deployment(n, f"{world.ref('app')}:1.0.0", policy=name, replicas=1)
    policy = world.policy(
        "waves",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {
                "waves": [{"count": 1}, {"percent": 100}],
                "pauseBetweenWaves": "6s",
            },
        },
    )
    world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    operator_factory()

    wait_rolled(world, "w0", target)
    # The canary is healthy; the pause holds the rest back, and says so.
    body = world.wait_policy(
        policy,
        lambda b: (b.get("status") or {}).get("waves", {}).get("done") == 1,
        "canary recorded as done",
    )
    waves = body["status"]["waves"]
    assert (waves["current"], waves["total"]) == (2, 2), waves
    held = world.item(policy, "w3")
    assert held["state"] == "Waiting" and "pause of 6s" in held["reason"], held
    assert all(world.image_of(n).endswith(":1.0.0") for n in names[1:])

    for n in names[1:]:
        wait_rolled(world, n, target)
    world.wait_ready(policy, reason="UpToDate")
    done = {
        r["workload"].rsplit("/", 1)[1]: r
        for r in rollouts(world, policy)
        if r["result"] == "Complete"
    }
    assert set(done) == set(names)
    canary_finished = _time(done["w0"]["finishedAt"])
    for n in names[1:]:
        started = _time(done[n]["startedAt"])
        assert started >= canary_finished + timedelta(seconds=6), (n, started, canary_finished)


def test_nothing_rolls_outside_the_maintenance_window(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _, new, target = drift(world, "app")
    name = f"window-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name, replicas=1)
    hour = (datetime.now(UTC).hour + 12) % 24
    closed = [{"schedule": f"0 {hour} * * *", "duration": "1h", "timeZone": "UTC"}]
    policy = world.policy(
        "window",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"maintenanceWindows": closed},
        },
    )
    world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    operator = operator_factory()

    body = world.wait_ready(policy, reason="RolloutWaiting")
    item = world.item(policy, "web")
    assert item["state"] == "Waiting" and "outside maintenance windows" in item["reason"], item
    assert "outside maintenance windows" in body["status"]["waves"]["message"]
    checks_pass(operator, policy, 2)  # two more checks: still nothing rolled
    assert world.image_of("web").endswith(":1.0.0")

    # Every minute, two minutes long: always open.
    world.kube.custom.patch_cluster_custom_object(
        "imagedrift.io",
        "v1alpha1",
        "imagepolicies",
        policy,
        {
            "spec": {
                "rollout": {"maintenanceWindows": [{"schedule": "* * * * *", "duration": "2m"}]}
            }
        },
    )
    wait_rolled(world, "web", target)
