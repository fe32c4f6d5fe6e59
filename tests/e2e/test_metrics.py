"""The metrics endpoint after a real drift loop, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.scenario import World, base_image, rolled_out
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, lbls), v in found.items() if n == name and set(labels.items()) <= lbls)


def test_metrics_after_a_drift_loop(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1"))
    name = f"metrics-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name)
    policy = world.policy(
        "metrics",
        {
            "base": {"image": world.ref("base"), "tag": "1", "interval": "2s", "insecure": True},
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
        },
    )
    # The harness serves the operator's /metrics on a loopback port of its own.
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate")
    world.publish("base", "1", new_base)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new_base, "2"))
    wait_for(
        lambda: rolled_out(world, "web", f"{world.ref('app')}@{rebuilt}"),
        what="rollout",
        timeout=90,
    )
    world.wait_ready(policy, reason="UpToDate")

    found = wait_for(
        lambda: (
            lambda s: (
                s
                if value(s, "imagedrift_rollouts_total", policy=policy, outcome="complete")
                else None
            )
        )(operator.metrics()),
        what="a completed rollout counted",
        timeout=30,
    )
    assert value(found, "imagedrift_policies", condition="Ready") >= 1
    assert value(found, "imagedrift_workloads", policy=policy, state="UpToDate") == 1
    assert value(found, "imagedrift_workloads", policy=policy, state="Drifted") == 0
    assert (
        value(
            found,
            "imagedrift_registry_requests_total",
            registry=world.host,
            method="HEAD",
            code="200",
        )
        > 0
    )
    assert value(found, "imagedrift_rollouts_total", policy=policy, outcome="started") == 1
    assert value(found, "imagedrift_gate_verdicts_total", policy=policy, verdict="Passed") == 1
    assert value(found, "imagedrift_base_to_rollout_seconds_count") >= 1
    assert value(found, "imagedrift_base_detection_seconds_count") >= 1
    assert value(found, "imagedrift_checks_total", policy=policy, result="ok") >= 2
