"""Safe rollouts end to end: a canary wave first, a pause after a healthy wave, a failed
rollout rolled back with the remaining waves stopped, and maintenance windows."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import yaml

from imagedrift.core.workloads import STATE_ANNOTATION
from imagedrift.engine.controller import RETRY_CAP
from tests.e2e.scenario import World, rolled_out
from tests.e2e.support import (
    base_spec,
    checks_pass,
    drift,
    policy_status,
    rollouts,
    wait_rolled,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
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


def failing_canary(world: World) -> tuple[str, str, str]:
    """Canary a0 (its pods never get ready on the candidate) and b1, b2 on app:1.0.0, in
    waves of one and then the rest; the rebuilt 1.0.1 published. Returns (policy, the
    candidate pinned by digest, the digest 1.0.0 ran)."""
    old, new, target = drift(world, "app")
    digest = target.split("@", 1)[1]
    ran = f"{world.ref('app')}@{world.app_on(old, '1.0.0').digest}"  # what 1.0.0 ran
    name = f"fail-{world.suffix}"
    previous = f"{world.ref('app')}:1.0.0"
    # a0 sorts first: the canary. Its pods never get ready on the candidate image.
    world.deployment(
        "a0",
        previous,
        policy=name,
        replicas=1,
        extra={
            "progressDeadlineSeconds": 3,
            "template": {
                "metadata": {
                    "labels": {"app": "a0"},
                    "annotations": {"imagedrift.test/never-ready": digest},
                },
                "spec": {"containers": [{"name": "app", "image": previous}]},
            },
        },
    )
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
    world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    return policy, target, ran


def test_failed_canary_is_rolled_back_and_stops_the_waves(
    world: World, operator_factory: Callable[..., OperatorProcess]
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
    assert rolled_out(world, "a0", ran)
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
