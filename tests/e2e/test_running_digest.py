"""What a tag-referenced container runs is the digest its node pulled, end to end.

Short references (``webapp:1.0``, meaning ``docker.io/library/webapp:1.0``) are served by
the test registry standing in as the Docker Hub mirror the nodes pull through
(``IMAGEDRIFT_REGISTRY_MIRRORS``). kwok reports each pod's ``imageID`` from the pod's
``imagedrift.test/pulled`` annotation, as a node reports the digest it pulled.
"""

from __future__ import annotations

from collections.abc import Callable

from imagedrift.registry.push import Image, push
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import base_spec
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for


def test_a_short_name_keeps_the_digest_its_pods_pulled_across_tag_re_pushes(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    short = f"webapp-{world.suffix}"
    repository = f"library/{short}"  # where docker.io/library/<short> lives on the mirror
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)

    def publish_app(base: Image, marker: str) -> str:
        return push(world.client, repository, world.app_on(base, marker), "1.0")

    pulled = publish_app(old, "as the nodes pulled it")
    # The tag moves on before imagedrift first looks; the pods still run what they pulled.
    repushed = publish_app(old, "re-pushed, not pulled")
    assert repushed != pulled
    world.deployment(
        "web",
        f"{short}:1.0",
        policy=f"pulled-{world.suffix}",
        replicas=2,
        extra={
            "template": {
                "metadata": {
                    "labels": {"app": "web"},
                    "annotations": {"imagedrift.test/pulled": f"docker.io/{repository}@{pulled}"},
                },
                "spec": {"containers": [{"name": "app", "image": f"{short}:1.0"}]},
            }
        },
    )
    # The pods run, and report what they pulled, before imagedrift first looks at them.
    wait_for(lambda: rolled_out(world, "web", f"{short}:1.0"), what="web's pods up", timeout=60)
    reported: set[str] = set()
    for p in world.kube.core.list_namespaced_pod(world.namespace, label_selector="app=web").items:
        assert p.status is not None, p
        reported.update(s.image_id for s in p.status.container_statuses or ())
    assert reported == {f"docker.io/{repository}@{pulled}"}, reported
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
    # so the workload is drifted and rolls to the rebuild, pinned by digest.
    world.publish("base", "1", new)
    rebuilt = publish_app(new, "rebuilt on the new base")
    target = f"docker.io/{repository}@{rebuilt}"
    wait_for(lambda: rolled_out(world, "web", target), what="web on the rebuild", timeout=90)
    entry = world.wait_ready(policy, reason="UpToDate", timeout=60)["status"]["lineage"][0]
    assert (entry["appDigest"], entry["tag"]) == (rebuilt, "1.0"), entry
