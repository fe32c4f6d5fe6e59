"""Private OCI registries: credentials from a docker-config Secret, refusals that name who we
were, throttling that delays instead of failing."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from imagedrift.core.images import Platform
from imagedrift.registry.push import Index
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry
from tests.harness.registry_proxy import RegistryProxy

OPERATOR_NS = "imagedrift-system"
PLATFORMS = [
    Platform.parse(p)
    for p in (
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/386",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
    )
]


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


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}s" for v in values)


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

    mark = len(registry_proxy.requests)
    registry_proxy.fail_next(1000, status=429, retry_after="3")
    body = world.wait_policy(
        policy,
        lambda b: "throttled" in (b.get("status") or {}).get("lastError", ""),
        "throttling recorded",
    )
    assert world.condition(policy, "Stalled") == {}
    assert world.condition(policy)["reason"] in ("Throttled", "UpToDate"), body["status"]
    # Only delays, and by as much as asked: after each 429 the next request comes no sooner
    # than its Retry-After, timed by the proxy (its answer, its receipt of the next request),
    # over more 429s than the client retries in place (3 attempts), so the engine's own
    # retry is measured too. The operator may count from when it sent the request, a round
    # trip before the answer: half a second covers that on a loaded machine.
    wait_for(
        lambda: sum(r.status == 429 for r in registry_proxy.requests[mark:]) >= 4,
        what="four 429 answers",
        timeout=60,
    )
    seen = sorted(registry_proxy.requests[mark:], key=lambda r: r.received)
    gaps = [b.received - a.answered for a, b in itertools.pairwise(seen) if a.status == 429]
    print("after each 429 (Retry-After: 3), the next request came in", _seconds(gaps))
    registry_proxy.clear_faults()
    world.wait_policy(
        policy, lambda b: not (b.get("status") or {}).get("lastError"), "throttling over"
    )
    world.wait_ready(policy, reason="UpToDate")
    # Timed by the proxy: from its 429 answer to the next request it received.
    assert min(gaps) >= 3 - 0.5, f"requests came {_seconds(gaps)} after 429s with Retry-After: 3"


def budget_refusals(operator: OperatorProcess, host: str) -> float:
    """``imagedrift_registry_budget_exhausted_total{registry=host}`` on the operator's /metrics."""
    return sum(
        value
        for (name, labels), value in operator.metrics().items()
        if name == "imagedrift_registry_budget_exhausted_total" and ("registry", host) in labels
    )


def throttled(world: World, policy: str) -> bool:
    """The README's condition table for a throttled policy: Ready=False and
    Reconciling=True, both with reason Throttled."""
    ready, reconciling = world.condition(policy), world.condition(policy, "Reconciling")
    return (ready.get("status"), ready.get("reason")) == ("False", "Throttled") and (
        reconciling.get("status"),
        reconciling.get("reason"),
    ) == ("True", "Throttled")


def test_a_spent_request_budget_delays_and_never_fails(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    world.publish("base", "1", base_image("v1"))
    first = world.policy("budget0", {"base": {**base_spec(world, interval="1s"), "tag": "1"}})
    # 30 requests a minute: a burst of 10, then one every 2 s, against a lookup a second.
    operator = operator_factory(env={"IMAGEDRIFT_REGISTRY_BUDGET": "30"})
    world.wait_ready(first, reason="UpToDate")

    # The base moves to an index of 8 platforms: the tag, the index, 8 manifests and 8
    # configs are 18 requests, more than the burst, so no lookup can read it in one go and
    # the budget is spent whatever it held. From the first lookup that saw the move, at
    # least 8 more requests (16 s) are needed: a policy created then cannot have its first
    # check served, and says so as the README's condition table does for Throttled.
    v2 = world.publish("base", "1", Index.of(*(base_image("v2", p) for p in PLATFORMS)))
    mark = registry.mark()
    wait_for(
        lambda: registry.requests_since(mark, method="HEAD", path=f"/{world.repo('base')}/"),
        what="a lookup of the base after it moved",
        timeout=30,
    )
    second = world.policy("budget1", {"base": {**base_spec(world, interval="1s"), "tag": "1"}})
    wait_for(lambda: throttled(world, second), what=f"{second} Throttled", timeout=30)
    assert world.condition(second, "Stalled") == {}
    body = world.wait_policy(
        first,
        lambda b: "request budget" in (b.get("status") or {}).get("lastError", ""),
        "the budget refusing a lookup",
        timeout=30,
    )
    assert budget_refusals(operator, world.host) >= 1, "the metric did not count the refusal"
    # A 429 on the base lookup is no news about a policy that already has conditions: it
    # is delayed, never failed.
    assert world.condition(first, "Stalled") == {}
    assert world.condition(first)["reason"] in ("UpToDate", "Throttled"), body["status"]

    # Once the budget gives requests again, v2 is picked up by both and neither failed.
    try:
        for policy in (first, second):
            world.wait_policy(
                policy,
                lambda b: ((b.get("status") or {}).get("base") or {}).get("digest") == v2,
                "base v2 picked up once the budget refills",
                timeout=90,
            )
    except TimeoutError as exc:
        refusals = budget_refusals(operator, world.host)
        raise AssertionError(
            f"base v2 never picked up: {exc}; {refusals:g} requests held back by the budget"
        ) from exc
    for policy in (first, second):
        world.wait_ready(policy, reason="UpToDate")
        assert world.condition(policy, "Stalled") == {}
