"""Tag vocabularies end to end on the real registry: what users bring from Flux, Argo CD
Image Updater and Keel means here what it means there.

Flux's ``exclusionList`` (default ``^.*\\.sig$``): a repository holding cosign signature
tags never yields one as a candidate, and no request is spent on such a tag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


def test_cosign_signature_tags_are_never_candidates_and_cost_no_request(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"sig-{world.suffix}", replicas=1)
    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    # A signature as cosign stores it: tag sha256-<digest of the signed image>.sig. It is
    # built on the new base too, so nothing but the exclusion keeps it from qualifying.
    signature = f"sha256-{rebuilt.split(':', 1)[1]}.sig"
    world.publish("app", signature, world.app_on(new, "signature"))
    mark = registry.mark()
    # Alphabetical order, newest last: "sha256-…" sorts after "1.0.1", so without the
    # exclusion list the signature would be the first tag inspected.
    policy = world.policy(
        "sig",
        {
            "base": base_spec(world),
            "app": {"tags": {"regex": {"pattern": "^.*$", "order": "alphabetical"}}},
        },
    )
    operator_factory()

    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(lambda: rolled_out(world, "web", target), what="web rolled to 1.0.1", timeout=90)
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert body["status"]["lineage"][0]["tag"] == "1.0.1"
    spent = registry.requests_since(mark, path=signature)
    assert spent == [], [f"{r.method} {r.path}" for r in spent]
    listed = registry.requests_since(mark, path=f"/v2/{world.repo('app')}/tags/list")
    assert listed, "the tags were listed (the exclusion applies to what the list returned)"


def following_patches(
    world: World, operator_factory: Callable[..., OperatorProcess], mode: str
) -> str:
    """A policy on base tag 1 with ``patches: mode``, Ready on the original tag."""
    original = world.publish("base", "1", base_image("v1"))
    policy = world.policy(mode, {"base": base_spec(world, patches=mode)})
    operator_factory()
    base = world.wait_ready(policy, reason="UpToDate")["status"]["base"]
    assert (base["tag"], base["digest"]) == ("1", original)
    return policy


def base_moves_to(world: World, policy: str, digest: str) -> dict[str, Any]:
    body = world.wait_policy(
        policy,
        lambda b: (b.get("status") or {}).get("base", {}).get("digest") == digest,
        f"the base moved to {digest[:19]}",
        timeout=60,
    )
    return dict(body["status"]["base"])


def test_a_base_followed_with_incremental_patch_tags_moves_to_t2_and_not_to_t1000(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """ACR continuous patching pushes ``T-1`` … ``T-999`` made from ``T``; ``T-1000`` is no
    patch (ACR treats a suffix above 999 as an original tag)."""
    policy = following_patches(world, operator_factory, "incremental")
    patched = world.publish("base", "1-2", base_image("v1-patched-2"))
    assert base_moves_to(world, policy, patched)["tag"] == "1-2"
    assert "BaseChanged" in {r for _, r, _ in world.all_events(policy)}

    world.publish("base", "1-1000", base_image("v1-not-a-patch"))
    # Three more lookups (each lists the tags, then reads the newest patch): still on 1-2.
    mark = registry.mark()
    listing = f"/v2/{world.repo('base')}/tags/list"
    wait_for(
        lambda: len(registry.requests_since(mark, path=listing)) >= 3,
        what="three more lookups of the base's tags",
        timeout=60,
    )
    base = world.wait_ready(policy, reason="UpToDate")["status"]["base"]
    assert (base["tag"], base["digest"]) == ("1-2", patched)
    assert not registry.requests_since(mark, path=f"/v2/{world.repo('base')}/manifests/1-1000")


def test_a_base_followed_with_the_floating_patch_tag_moves_when_it_appears(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    policy = following_patches(world, operator_factory, "floating")
    patched = world.publish("base", "1-patched", base_image("v1-patched"))
    assert base_moves_to(world, policy, patched)["tag"] == "1-patched"
