"""A failed canary on the real node: the rebuilt image's pods never get ready, the
rollout misses its deadline, the canary is rolled back to the exact digest it ran (its pod
runs it again), the candidate is rejected and the remaining waves stop, also when the
status write carrying the rejection is lost."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import yaml

from imagedrift.core.workloads import STATE_ANNOTATION
from imagedrift.engine.controller import RETRY_CAP
from tests.e2e.on_node import (
    SERVE,
    app_on,
    on_real_node,
    runnable_base,
    wait_running,
)
from tests.e2e.scenario import World, rolled_out
from tests.e2e.support import base_spec, policy_status, rollouts
from tests.harness.controlplane import ControlPlane
from tests.harness.node import RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def failing_canary(world: World) -> tuple[str, str, str]:
    """Canary a0 on the real node, whose candidate's pods never get ready (its readiness
    probe finds no /tmp/ready: the rebuilt app never says it is up), and b1, b2 on
    app:1.0.0, in waves of one and then the rest; the rebuilt 1.0.1 published. Returns
    (policy, the candidate pinned by digest, the digest 1.0.0 ran)."""
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)
    ran = f"{world.ref('app')}@{world.publish('app', '1.0.0', app_on(world, old, '1.0.0', SERVE))}"
    world.publish("base", "1", new)
    never_ready = app_on(world, new, "1.0.1", "trap 'exit 0' TERM; while true; do sleep 1; done")
    target = f"{world.ref('app')}@{never_ready.digest}"
    name = f"fail-{world.suffix}"
    previous = f"{world.ref('app')}:1.0.0"
    # a0 sorts first: the canary.
    world.deployment(
        "a0",
        previous,
        policy=name,
        replicas=1,
        extra={
            **on_real_node(previous, probe=True, app="a0"),
            "progressDeadlineSeconds": 3,
        },
    )
    wait_running(world, "a0", ran.split("@", 1)[1], 1)
    # b1 and b2 never roll (the waves stop): kwok's pods stand in for theirs.
    for n in ("b1", "b2"):
        world.deployment(n, previous, policy=name, replicas=1)
    policy = world.policy(
        "fail",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"waves": [{"count": 1}, {"percent": 100}], "verifyTimeout": "30s"},
        },
    )
    world.publish("app", "1.0.1", never_ready)
    return policy, target, ran


def test_failed_canary_is_rolled_back_and_stops_the_waves(
    real_node: RealNode, world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    policy, target, ran = failing_canary(world)
    digest = target.split("@", 1)[1]
    previous = f"{world.ref('app')}:1.0.0"
    operator_factory()

    wait_for(lambda: world.image_of("a0") == target, what="canary patched", timeout=60)
    body = world.wait_policy(
        policy,
        lambda b: bool((b.get("status") or {}).get("waves", {}).get("rejected")),
        "candidate rejected after the failed canary",
        timeout=90,
    )
    # Back to exactly the digest that ran, not to whatever the tag means now.
    assert world.image_of("a0") == ran, "the canary was rolled back to the digest it ran"
    rejected = body["status"]["waves"]["rejected"]
    assert rejected[0]["digest"] == digest and "ProgressDeadlineExceeded" in rejected[0]["reason"]
    # The rollback is followed like any rollout, over several more checks: meanwhile
    # nothing else may start on the rejected candidate.
    wait_for(
        lambda: [r.get("rollback") for r in rollouts(world, policy)] == ["Complete"],
        what="the rollback followed to Complete in the lineage",
        timeout=60,
    )
    # Events are posted after the status write that shows the lineage: wait for it.
    wait_for(
        lambda: any(r == "RollbackComplete" for _, r, _ in world.events("a0")),
        what="a RollbackComplete Event on a0",
        timeout=30,
    )
    # imagedrift's own record of the outcome bumps the generation: the controller observes
    # it a moment later.
    wait_for(lambda: rolled_out(world, "a0", ran), what="a0 back on what it ran", timeout=30)
    status = policy_status(world, policy)
    assert status["candidate"]["verdict"] == "Rejected"
    assert any("rollout: rolled back on" in r for r in status["candidate"]["reasons"])
    assert status["lineage"][0]["verdict"] == "Rejected"
    for n in ("b1", "b2"):
        assert world.image_of(n) == previous
        assert not [e for e in world.events(n) if e[1] == "RolloutStarted"], n
    assert any(t == "Warning" and r == "RolledBack" and ran in m for t, r, m in world.events("a0"))
    state = json.loads(world.get_deployment("a0")["metadata"]["annotations"][STATE_ANNOTATION])
    assert state["rollout"]["previous"] == {"app": previous}  # the reference as it was written
    assert state["rollout"]["previousDigests"] == {"app": ran.split("@", 1)[1]}
    assert state["rollout"]["rollback"]["phase"] == "Complete"
    assert world.item(policy, "a0")["state"] == "RolledBack"
    assert any(
        r == "CandidateRejected" and "remaining waves stopped" in m
        for _, r, m in world.all_events(policy)
    )
    assert [r["result"] for r in rollouts(world, policy)] == ["RolledBack"]


def refuse_status_with_rejection(controlplane: ControlPlane, policy: str) -> Callable[[], None]:
    """Make every status write of ``policy`` that carries a rejection fail (an admission
    policy denies it, as a flaky API or a lost write would); returns the undo."""
    name = f"refuse-rejection-{policy}"
    objects = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["imagedrift.io"],
                            "apiVersions": ["v1alpha1"],
                            "operations": ["UPDATE"],
                            "resources": ["imagepolicies/status"],
                        }
                    ]
                },
                "matchConditions": [
                    {"name": "this-policy", "expression": f"object.metadata.name == '{policy}'"}
                ],
                "validations": [
                    {
                        "expression": "!has(object.status.waves) || "
                        "!has(object.status.waves.rejected) || "
                        "size(object.status.waves.rejected) == 0",
                        "message": "test: the status write carrying a rejection is lost",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]
    controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def undo() -> None:
        controlplane.kubectl(
            "delete",
            f"validatingadmissionpolicybinding/{name}",
            f"validatingadmissionpolicy/{name}",
            "--ignore-not-found",
        )

    return undo


def test_a_lost_status_write_never_lets_the_next_wave_take_a_rejected_candidate(
    real_node: RealNode,
    world: World,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    policy, target, ran = failing_canary(world)
    previous = f"{world.ref('app')}:1.0.0"
    undo = refuse_status_with_rejection(controlplane, policy)
    try:
        operator = operator_factory()
        wait_for(lambda: world.image_of("a0") == target, what="canary patched", timeout=60)
        wait_for(lambda: world.image_of("a0") == ran, what="canary rolled back", timeout=90)
        refused = f"[WARNING ] policy {policy}: writing status of imagepolicy {policy}: 422"
        # The rejection's status write fails, and keeps failing: count the checks that
        # tried (each one decides the next wave again) while b1 and b2 stay where they are.
        wait_for(
            lambda: operator.log().count(refused) >= 3,
            what="three checks whose status write (carrying the rejection) was refused",
            timeout=90,
        )
        status = policy_status(world, policy)
        assert not (status.get("waves") or {}).get("rejected"), "the write was really lost"
        for n in ("b1", "b2"):
            assert world.image_of(n) == previous, n
            assert not [e for e in world.events(n) if e[1] == "RolloutStarted"], n
        item = world.item(policy, "b1")
        assert "rejected for this base" in item["reason"], item
    finally:
        undo()
    # Once status can be written again, the rejection the workloads kept is in it.
    body = world.wait_policy(
        policy,
        lambda b: bool((b.get("status") or {}).get("waves", {}).get("rejected")),
        "the rejection written once the API takes it (at the latest after the backoff cap)",
        timeout=RETRY_CAP + 30,
    )
    assert body["status"]["waves"]["rejected"][0]["digest"] == target.split("@", 1)[1]
    assert world.image_of("b1") == previous and world.image_of("b2") == previous
