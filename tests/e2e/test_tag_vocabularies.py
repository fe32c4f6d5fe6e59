"""Tag vocabularies end to end on the real registry: what users bring from Flux, Argo CD
Image Updater and Keel means here what it means there.

Flux's ``exclusionList`` (default ``^.*\\.sig$``): a repository holding cosign signature
tags never yields one as a candidate, and no request is spent on such a tag.
"""

from __future__ import annotations

from collections.abc import Callable

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
