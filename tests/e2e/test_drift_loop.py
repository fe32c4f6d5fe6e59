"""The drift loop end to end: real control plane, real registry, the operator as a process."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from imagedrift.registry.push import LINUX_AMD64, LINUX_ARM64, Index
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec, checks_pass
from tests.harness.admission import policy_refusal
from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


def test_rebuilt_app_is_rolled_out_by_digest(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old_base = base_image("v1")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1.0.0"))
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"py-{world.suffix}", replicas=3)
    world.deployment("bystander", f"{world.ref('app')}:1.0.0", policy=None)
    policy = world.policy(
        "py", {"base": base_spec(world), "app": {"tags": {"semver": {"range": ">=1.0.0"}}}}
    )
    operator_factory()

    world.wait_ready(policy, reason="UpToDate")
    assert world.get_policy(policy)["status"]["workloads"]["upToDate"] == 1

    new_base = base_image("v2")
    new_base_digest = world.publish("base", "1", new_base)
    world.wait_ready(policy, reason="WaitingForRebuild")
    drifted = world.item(policy, "web")
    assert drifted["state"] == "Drifted" and "not the current" in drifted["reason"]

    rebuilt = world.publish("app", "1.0.1", world.app_on(new_base, "1.0.1"))
    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(
        lambda: rolled_out(world, "web", target),
        what="web rolled to the rebuilt digest",
        timeout=90,
    )
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)

    status = body["status"]
    assert status["base"]["digest"] == new_base_digest
    entry = status["lineage"][0]
    assert (entry["baseDigest"], entry["appDigest"], entry["tag"], entry["verdict"]) == (
        new_base_digest,
        rebuilt,
        "1.0.1",
        "Passed",
    )
    rollout = entry["rollouts"][0]
    assert rollout["workload"].endswith(f"/{world.namespace}/web")
    assert rollout["result"] == "Complete" and rollout["previousImage"].endswith(
        "app-" + world.suffix + ":1.0.0"
    )
    assert world.image_of("bystander").endswith(":1.0.0"), (
        "a workload without the label was touched"
    )
    world.wait_event("web", "RolloutComplete")
    assert "RolloutStarted" in {reason for _, reason, _ in world.events("web")}
    world.wait_event(policy, "RolloutComplete", anywhere=True)
    policy_reasons = {reason for _, reason, _ in world.all_events(policy)}
    assert {"BaseChanged", "RolloutStarted", "RolloutComplete"} <= policy_reasons


def test_what_is_not_rolled_says_why(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    name = f"strict-{world.suffix}"
    # other-base: the rebuild sits on another base image altogether.
    world.publish("other", "1.0.0", world.app_on(old_base, "o1"))
    world.deployment("other", f"{world.ref('other')}:1.0.0", policy=name)
    # lower: only a lower version was rebuilt on the new base.
    world.publish("lower", "2.0.0", world.app_on(old_base, "l2"))
    world.deployment("lower", f"{world.ref('lower')}:2.0.0", policy=name)
    # stale: the newer tag is still built on the old base.
    world.publish("stale", "1.0.0", world.app_on(old_base, "s1"))
    world.deployment("stale", f"{world.ref('stale')}:1.0.0", policy=name)
    policy = world.policy(
        "strict", {"base": base_spec(world), "app": {"tags": {"semver": {"range": "*"}}}}
    )

    world.publish("base", "1", new_base)
    world.publish(
        "other", "1.0.1", world.app_on(new_base, "o2", base_name="docker.io/library/alpine:3")
    )
    world.publish("lower", "1.9.0", world.app_on(new_base, "l1"))
    world.publish("stale", "1.0.1", world.app_on(old_base, "s2"))
    operator = operator_factory()

    def reasons_recorded(body: dict[str, Any]) -> bool:
        items = (body.get("status") or {}).get("workloads", {}).get("items", [])
        return len(items) == 3 and all(i.get("state") == "Drifted" for i in items)

    world.wait_policy(policy, reasons_recorded, "three drifted workloads with reasons")
    assert "different base image" in world.item(policy, "other")["reason"]
    assert "lower than the running 2.0.0" in world.item(policy, "lower")["reason"]
    assert "1.0.1: built on base digest" in world.item(policy, "stale")["reason"]
    checks_pass(operator, policy, 2)  # two more checks: still nothing rolled
    for name_, tag in (("other", "1.0.0"), ("lower", "2.0.0"), ("stale", "1.0.0")):
        assert world.image_of(name_).endswith(f":{tag}")
    assert world.condition(policy)["reason"] == "WaitingForRebuild"


def test_lineage_by_layer_prefix_on_multi_arch_images(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old = Index.of(base_image("v1", LINUX_AMD64), base_image("v1", LINUX_ARM64))
    new = Index.of(base_image("v2", LINUX_AMD64), base_image("v2", LINUX_ARM64))
    world.publish("base", "1", old)
    world.publish("app", "3.1", world.app_on(old, "a", annotate="none"))
    name = f"layers-{world.suffix}"
    world.deployment("api", f"{world.ref('app')}:3.1", policy=name)
    policy = world.policy("layers", {"base": base_spec(world)})  # sameTag by default
    operator_factory()
    world.wait_ready(policy, reason="UpToDate")
    assert world.item(policy, "api")["state"] == "UpToDate"

    new_digest = world.publish("base", "1", new)
    rebuilt = world.publish("app", "3.1", world.app_on(new, "a", annotate="none"))
    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(
        lambda: rolled_out(world, "api", target),
        what="api rolled by layer-prefix lineage",
        timeout=90,
    )
    body = world.wait_ready(policy, reason="UpToDate")
    assert body["status"]["lineage"][0]["baseDigest"] == new_digest
    assert {p["platform"] for p in body["status"]["base"]["platforms"]} == {
        "linux/amd64",
        "linux/arm64",
    }


@pytest.mark.parametrize(
    ("label", "spec", "message"),
    [
        (
            "bad range",
            {"base": {"image": "r.example/base", "semverRange": ">=1.0 <<2"}},
            "spec.base.semverRange",
        ),
        (
            "bad regex",
            {
                "base": {"image": "r.example/base", "tag": "1"},
                "app": {"tags": {"regex": {"pattern": "(unclosed"}}},
            },
            "error parsing regexp: missing closing )",
        ),
        (
            "interval too short",
            {"base": {"image": "r.example/base", "tag": "1", "interval": "100ms"}},
            "base.interval must be between 1s and 24h",
        ),
        (
            "interval too long",
            {"base": {"image": "r.example/base", "tag": "1", "interval": "48h"}},
            "base.interval must be between 1s and 24h",
        ),
        (
            "tag and range",
            {"base": {"image": "r.example/base", "tag": "1", "semverRange": "*"}},
            "set exactly one of base.tag or base.semverRange",
        ),
        ("uppercase image", {"base": {"image": "R.example/Base", "tag": "1"}}, "spec.base.image"),
        (
            "settling longer than the verify timeout",
            {
                "base": {"image": "r.example/base", "tag": "1"},
                "rollout": {"settleTime": "15m"},
            },
            "rollout.settleTime must be shorter than rollout.verifyTimeout",
        ),
        (
            "patching in the cluster and committing to git",
            {
                "base": {"image": "r.example/base", "tag": "1"},
                "rollout": {"patchGitOpsManaged": True},
                "gitops": {"mode": "Commit"},
            },
            "it contradicts gitops.mode",
        ),
        (
            "an unknown GitOps mode",
            {"base": {"image": "r.example/base", "tag": "1"}, "gitops": {"mode": "Push"}},
            "spec.gitops.mode",
        ),
        (
            "a repository without a URL",
            {"base": {"image": "r.example/base", "tag": "1"}, "gitops": {"repository": {}}},
            "spec.gitops.repository.url",
        ),
    ],
)
def test_invalid_policies_are_refused_at_admission(
    kube: Kube,
    crds_installed: None,
    label: str,
    spec: dict[str, object],
    message: str,
) -> None:
    refusal = policy_refusal(kube, "bad", spec)
    assert message in refusal, (label, refusal)


def test_unreachable_registry_goes_not_ready_and_recovers(
    world: World,
    registry_factory: Callable[[], Registry],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    private = registry_factory()
    client = private.client()
    from imagedrift.registry.push import push

    push(client, "outage/base", base_image("v1"), "1")
    policy = world.policy(
        "outage",
        {
            "base": {
                "image": f"{private.host}/outage/base",
                "tag": "1",
                "interval": "1s",
                "insecure": True,
            }
        },
    )
    operator_factory()
    world.wait_ready(policy, reason="UpToDate")
    private.stop()
    body = world.wait_ready(policy, status="False", reason="RegistryUnavailable")
    # Both say which registry failed: the condition for `kubectl get`, lastError for history.
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert private.host in ready["message"], ready
    assert private.host in body["status"]["lastError"], body["status"]["lastError"]
    assert world.condition(policy, "Stalled") == {}, "an outage is retried, not Stalled"
    private.start()
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    client.close()


# Two replicas electing through the Lease, with a short lease so the take-over takes seconds.
HA = {"IMAGEDRIFT_LEASE": "imagedrift", "IMAGEDRIFT_LEASE_SECONDS": "6"}


def lease_holder(world: World) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        lease = client.CoordinationV1Api(world.kube.api_client).read_namespaced_lease(
            "imagedrift", "imagedrift-system"
        )
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    assert lease.spec is not None, lease  # the operator always writes one
    return str(lease.spec.holder_identity or "")


@pytest.mark.parametrize("crash", ["restart", "standby", "apiserver"])
def test_a_crash_right_after_the_patch_finishes_the_rollout_without_a_second_patch(
    world: World,
    controlplane: ControlPlane,
    operator_factory: Callable[..., OperatorProcess],
    crash: str,
) -> None:
    """Something is SIGKILLed right after imagedrift's patch. ``restart``: the operator, and
    it comes back (a crashed pod). ``standby``: the operator, while a second replica waits
    on the Lease and takes over. ``apiserver``: kube-apiserver, restarted (the operator's
    watches and writes fail meanwhile). Every time the rollout is followed to Complete and
    recorded once, with one new ReplicaSet."""
    old_base, new_base = base_image("v1"), base_image("v2")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1"))
    name = f"restart-{world.suffix}"
    # minReadySeconds keeps the rollout going long enough to kill the operator inside it
    # (and, for the standby, to wait out the lease).
    world.deployment(
        "slow", f"{world.ref('app')}:1.0.0", policy=name, replicas=2, extra={"minReadySeconds": 10}
    )
    wait_for(
        lambda: rolled_out(world, "slow", f"{world.ref('app')}:1.0.0"),
        what="slow initially available",
        timeout=60,
    )
    policy = world.policy(
        "restart", {"base": base_spec(world), "app": {"tags": {"semver": {"range": "^1"}}}}
    )
    world.publish("base", "1", new_base)
    rebuilt = world.publish("app", "1.1.0", world.app_on(new_base, "2"))
    target = f"{world.ref('app')}@{rebuilt}"

    env = HA if crash == "standby" else None
    first = operator_factory(env=env)
    if crash == "standby":
        leader = wait_for(lambda: lease_holder(world), what="the first replica leads", timeout=30)
        second = operator_factory(env=env)
        wait_for(
            lambda: f"is held by {leader}" in second.log(),
            what="the second replica stands by",
            timeout=30,
        )
    wait_for(
        lambda: world.image_of("slow") == target, what="the operator patched the image", timeout=60
    )
    assert not rolled_out(world, "slow", target), (
        "rollout finished before the kill; the test proves nothing"
    )
    if crash == "apiserver":
        controlplane.crash_apiserver()
    else:
        first.kill()
    if crash == "restart":
        operator_factory()
    elif crash == "standby":
        wait_for(
            lambda: lease_holder(world) not in ("", leader),
            what="the standby took the Lease over",
            timeout=30,
        )
        assert "did not renew for" in second.log()
        assert not rolled_out(world, "slow", target), "the standby must finish the rollout"
    wait_for(
        lambda: rolled_out(world, "slow", target), what="rollout complete after restart", timeout=90
    )
    body = world.wait_policy(
        policy,
        lambda b: any(
            r.get("result") == "Complete"
            for e in b.get("status", {}).get("lineage", [])
            for r in e.get("rollouts", [])
        ),
        "rollout recorded as Complete",
    )
    # Deployments bump generation on annotation changes too, so the evidence of a single
    # image patch is the ReplicaSet history: exactly one new revision.
    final = world.get_deployment("slow")["metadata"]
    assert final["annotations"]["deployment.kubernetes.io/revision"] == "2"
    replica_sets = world.kube.apps.list_namespaced_replica_set(world.namespace).items
    assert len(replica_sets) == 2, [
        rs.spec.template.spec.containers[0].image
        for rs in replica_sets
        if rs.spec.template is not None and rs.spec.template.spec is not None
    ]
    # Events are posted asynchronously: the killed operator may have lost its RolloutStarted,
    # but there is never a second one, and the restarted operator reports the completion.
    reasons = [reason for _, reason, _ in world.events("slow")]
    assert reasons.count("RolloutStarted") <= 1, reasons
    wait_for(
        lambda: "RolloutComplete" in {r for _, r, _ in world.events("slow")},
        what="RolloutComplete posted",
        timeout=30,
    )
    rollouts = body["status"]["lineage"][0]["rollouts"]
    assert len(rollouts) == 1 and rollouts[0]["result"] == "Complete"


def test_many_policies_on_one_base_cost_one_lookup_per_interval(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    world.publish("base", "1", base_image("v1"))
    policies = [
        world.policy(f"dedup{i}", {"base": base_spec(world, interval="3s")}) for i in range(6)
    ]
    operator_factory()
    for policy in policies:
        world.wait_ready(policy, reason="UpToDate")
    mark = registry.mark()
    path = f"/v2/{world.repo('base')}/manifests/1"
    # Counted in lookups the registry logged, not slept through: four of them, each (by
    # the registry's own clock, whole seconds) about an interval after the one before.
    # Six policies polling alone would put several lookups in the same second.
    lookups = wait_for(
        lambda: (lambda found: found if len(found) >= 4 else None)(
            registry.requests_since(mark, path=path)
        ),
        what="four more lookups of the base",
        timeout=60,
    )
    gaps = [b.at - a.at for a, b in itertools.pairwise(lookups)]
    assert min(gaps) >= 2, [f"{r.method} {r.path} at {r.at}" for r in lookups]
