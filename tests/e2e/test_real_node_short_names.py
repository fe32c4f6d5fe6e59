"""Short names on the real node: ``webapp:1.0`` means ``docker.io/library/webapp:1.0``,
which the node pulls through the loopback registry standing in as the Docker Hub mirror
(containerd's ``certs.d/docker.io``), and the operator reads there too
(``IMAGEDRIFT_REGISTRY_MIRRORS``). The digest recorded is what the kubelet reports it pulled
(``imageID``), not the tag's digest when imagedrift first looks.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagedrift.registry.push import push
from tests.e2e.on_node import (
    SERVE,
    app_on,
    on_real_node,
    runnable_base,
    wait_running,
)
from tests.e2e.scenario import World, rolled_out
from tests.e2e.support import base_spec
from tests.harness.node import RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.runnable_images import RunnableImage

pytestmark = pytest.mark.usefixtures("crds_installed")


def test_a_short_name_keeps_the_digest_its_pods_pulled_across_tag_re_pushes(
    real_node: RealNode, world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    short = f"webapp-{world.suffix}"
    repository = f"library/{short}"  # where docker.io/library/<short> lives on the mirror
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)

    def publish_app(base: RunnableImage, marker: str) -> str:
        return push(world.client, repository, app_on(world, base, marker, SERVE), "1.0")

    pulled = publish_app(old, "as the nodes pulled it")
    world.deployment(
        "web",
        f"{short}:1.0",
        policy=f"pulled-{world.suffix}",
        replicas=2,
        extra=on_real_node(f"{short}:1.0", probe=False),
    )
    wait_running(world, "web", pulled, 2)
    reported = {
        s.image_id
        for p in world.kube.core.list_namespaced_pod(
            world.namespace, label_selector="app=web"
        ).items
        for s in (p.status.container_statuses if p.status else None) or ()
    }
    assert reported == {f"docker.io/{repository}@{pulled}"}, reported
    # The tag moves on before imagedrift first looks; the pods still run what they pulled.
    repushed = publish_app(old, "re-pushed, not pulled")
    assert repushed != pulled
    policy = world.policy("pulled", {"base": base_spec(world)})  # sameTag: follow 1.0
    operator_factory(env={"IMAGEDRIFT_REGISTRY_MIRRORS": f"docker.io=http://{world.host}"})

    world.wait_ready(policy, reason="UpToDate", timeout=60)
    item = wait_for(
        lambda: (lambda i: i if i.get("digest") else None)(world.item(policy, "web")),
        what="web's running digest recorded",
        timeout=30,
    )
    assert item["digest"] == pulled, "the digest the pods pulled, not the tag's digest now"
    assert item["image"] == f"docker.io/{repository}:1.0" and item["state"] == "UpToDate", item

    # The base is re-published and 1.0 rebuilt on it: the pods still run what they pulled,
    # so the workload is drifted and rolls to the rebuild, pinned by digest, and the node
    # pulls and runs exactly that.
    world.publish("base", "1", new)
    rebuilt = publish_app(new, "rebuilt on the new base")
    target = f"docker.io/{repository}@{rebuilt}"
    wait_for(lambda: rolled_out(world, "web", target), what="web on the rebuild", timeout=120)
    wait_running(world, "web", rebuilt, 2)
    entry = world.wait_ready(policy, reason="UpToDate", timeout=90)["status"]["lineage"][0]
    assert (entry["appDigest"], entry["tag"]) == (rebuilt, "1.0"), entry
