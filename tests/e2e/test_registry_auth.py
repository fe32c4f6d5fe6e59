"""Private OCI registries: credentials from a docker-config Secret, refusals that name who we
were, throttling that delays instead of failing."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry_proxy import RegistryProxy

OPERATOR_NS = "imagedrift-system"


def test_bearer_registry_with_docker_config_secret(
    world: World,
    registry_proxy: RegistryProxy,
    pull_secret: Callable[[str, str], str],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1"))
    registry_proxy.require_bearer({"robot": "s3cret"})
    behind_proxy = World(
        registry_proxy.host, world.client, world.kube, world.namespace, suffix=world.suffix
    )
    name = f"private-{world.suffix}"
    world.deployment("web", f"{behind_proxy.ref('app')}:1.0.0", policy=name)
    secret = pull_secret("robot", "s3cret")
    base = {
        "image": behind_proxy.ref("base"),
        "tag": "1",
        "interval": "2s",
        "insecure": True,
        "secretRef": {"name": secret},
    }
    policy = world.policy("private", {"base": base, "app": {"tags": {"semver": {"range": "^1"}}}})
    operator_factory()
    world.wait_ready(policy, reason="UpToDate")
    assert registry_proxy.token_requests, "the operator never used the bearer-token flow"

    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "2"))
    target = f"{behind_proxy.ref('app')}@{rebuilt}"
    wait_for(
        lambda: rolled_out(world, "web", target),
        what="rolled through the private registry",
        timeout=90,
    )
    # Steady state: the cached token serves every lookup, no new token per poll.
    tokens = len(registry_proxy.token_requests)
    world.wait_ready(policy, reason="UpToDate")
    mark = len(registry_proxy.requests)
    wait_for(lambda: len(registry_proxy.requests) >= mark + 3, what="three more polls", timeout=30)
    assert len(registry_proxy.token_requests) == tokens


def test_refused_credentials_name_the_identity_and_throttling_only_delays(
    world: World,
    registry_proxy: RegistryProxy,
    pull_secret: Callable[[str, str], str],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    world.publish("base", "1", base_image("v1"))
    registry_proxy.require_bearer({"robot": "s3cret"})
    behind_proxy = World(
        registry_proxy.host, world.client, world.kube, world.namespace, suffix=world.suffix
    )
    secret = pull_secret("robot", "wrong")
    base = {
        "image": behind_proxy.ref("base"),
        "tag": "1",
        "interval": "1s",
        "insecure": True,
        "secretRef": {"name": secret},
    }
    policy = world.policy("refused", {"base": base})
    operator_factory()
    world.wait_ready(policy, status="False", reason="AuthenticationFailed")
    assert f"secret {OPERATOR_NS}/{secret}" in world.condition(policy)["message"]
    # The Event is posted after the status write that carries the condition: wait for it.
    wait_for(
        lambda: (
            ("Warning", "AuthenticationFailed") in {(t, r) for t, r, _ in world.all_events(policy)}
        ),
        what="a Warning Event AuthenticationFailed",
        timeout=30,
    )

    good = pull_secret("robot", "s3cret")
    base["secretRef"] = {"name": good}
    world.kube.custom.patch_cluster_custom_object(
        "imagedrift.io", "v1alpha1", "imagepolicies", policy, {"spec": {"base": base}}
    )
    world.wait_ready(policy, reason="UpToDate")

    registry_proxy.fail_next(1000, status=429, retry_after="3")
    body = world.wait_policy(
        policy,
        lambda b: "throttled" in (b.get("status") or {}).get("lastError", ""),
        "throttling recorded",
    )
    assert world.condition(policy, "Stalled") == {}
    assert world.condition(policy)["reason"] in ("Throttled", "UpToDate"), body["status"]
    registry_proxy.clear_faults()
    world.wait_policy(
        policy, lambda b: not (b.get("status") or {}).get("lastError"), "throttling over"
    )
    world.wait_ready(policy, reason="UpToDate")


def test_a_spent_request_budget_delays_and_never_fails(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    world.publish("base", "1", base_image("v1"))
    policies = [
        world.policy(f"budget{i}", {"base": {**base_spec(world, interval="1s"), "tag": "1"}})
        for i in range(2)
    ]
    # 6 requests a minute (a burst of 10) against a lookup a second: spent within seconds.
    operator_factory(env={"IMAGEDRIFT_REGISTRY_BUDGET": "6"})
    for policy in policies:
        world.wait_ready(policy, reason="UpToDate")
    world.publish("base", "1", base_image("v2"))
    body = world.wait_policy(
        policies[0],
        lambda b: "request budget" in (b.get("status") or {}).get("lastError", ""),
        "the budget refusing a lookup",
        timeout=30,
    )
    for policy in policies:
        assert world.condition(policy, "Stalled") == {}
        assert world.condition(policy)["reason"] in ("Throttled", "UpToDate"), body["status"]
