"""What a tag-referenced container runs, on the real node: the digest the kubelet reports
it pulled (``imageID``), never the tag's digest now and never a digest written by the test.

- A tag re-pushed after the pods pulled it changes nothing while they run; once the pods
  are replaced and re-pull it (``imagePullPolicy: Always`` and a restart), imagedrift
  records the new digest and, the re-pushed image being on an old base, says ``Drifted``.
- An image the node first pulled under another name (a mirror's) is reported by the kubelet
  under that name; imagedrift still records its imageID's digest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client import V1Pod

from tests.e2e.on_node import (
    SERVE,
    app_on,
    on_real_node,
    pod_states,
    runnable_base,
    running_digests,
    wait_running,
)
from tests.e2e.promised import detail_rows
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, touched_checks
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")
SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}


def recorded(world: World, name: str) -> dict[str, Any]:
    """The container row imagedrift wrote on the workload (its running digest, state)."""
    rows = detail_rows(world.get_deployment(name))
    return rows[0] if rows else {}


def always_pull(image: str) -> dict[str, Any]:
    extra = on_real_node(image, probe=False)
    extra["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    return extra


def test_pods_that_re_pull_a_re_pushed_tag_are_seen_to_run_its_new_digest(
    real_node: RealNode, world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", new)
    pulled = world.publish("app", "1.0.0", app_on(world, new, "1.0.0", SERVE))
    tagged = f"{world.ref('app')}:1.0.0"
    name = f"repull-{world.suffix}"
    world.deployment("web", tagged, policy=name, replicas=2, extra=always_pull(tagged))
    wait_running(world, "web", pulled, 2)
    policy = world.policy("repull", {"base": base_spec(world), "app": SEMVER})
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    row = wait_for(lambda: recorded(world, "web"), what="web's running digest", timeout=30)
    assert row["digest"] == pulled, row

    # A stale build is pushed over the tag (it sits on the old base). The pods still run
    # what they pulled: over further checks nothing changes.
    repushed = world.publish("app", "1.0.0", app_on(world, old, "1.0.0 stale", SERVE))
    touched_checks(world, operator, [policy], "Deployment", "web", 2)
    assert recorded(world, "web")["digest"] == pulled
    assert world.item(policy, "web").get("state") in (None, "UpToDate")

    # A restart: the new pods pull the tag again and run the stale build.
    world.kube.apps.patch_namespaced_deployment(
        "web",
        world.namespace,
        {
            "spec": {
                "template": {
                    "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}
                }
            }
        },
    )
    wait_running(world, "web", repushed, 2)
    # Within one interval (2s here) of the pods settling, imagedrift says so.
    row = wait_for(
        lambda: (lambda r: r if r.get("digest") == repushed else None)(recorded(world, "web")),
        what=f"web's recorded digest to follow the re-pull (pods: {pod_states(world, 'web')})",
        timeout=30,
    )
    assert row["state"] == "Drifted", row
    assert world.item(policy, "web")["state"] == "Drifted"


def test_an_image_first_pulled_under_a_mirror_s_name_is_recorded_by_its_image_id(
    real_node: RealNode, world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    base = runnable_base("v1")
    world.publish("base", "1", base)
    app = app_on(world, base, "1.0.0", SERVE)
    running = world.publish("mirror", "1.0.0", app)  # the same image under a mirror's name
    assert world.publish("app", "1.0.0", app) == running
    # The node pulls it first as the mirror's image...
    world.kube.core.create_namespaced_pod(
        world.namespace,
        V1Pod.model_validate(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "warm", "labels": {"app": "warm"}},
                "spec": {
                    "containers": [{"name": "app", "image": f"{world.ref('mirror')}:1.0.0"}],
                    "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                    "tolerations": [
                        {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "terminationGracePeriodSeconds": 2,
                    "automountServiceAccountToken": False,
                },
            }
        ),
    )
    wait_for(lambda: running_digests(world, "warm"), what="the mirror's image running", timeout=90)
    # ...then the workload asks for it by its own name; the node has it already.
    tagged = f"{world.ref('app')}:1.0.0"
    name = f"mirror-{world.suffix}"
    extra = on_real_node(tagged, probe=False)
    extra["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    world.deployment("web", tagged, policy=name, replicas=1, extra=extra)
    wait_running(world, "web", running, 1)
    reported = {
        str(c.get("image"))
        for p in world.kube.core.list_namespaced_pod(world.namespace, label_selector="app=web")
        .to_dict()
        .get("items", [])
        for c in (p.get("status") or {}).get("container_statuses") or []
    }
    # The tag moves on before imagedrift first looks: only the imageID tells what runs.
    moved = world.publish("app", "1.0.0", app_on(world, base, "1.0.0 moved", SERVE))
    assert moved != running
    policy = world.policy("mirror", {"base": base_spec(world), "app": SEMVER})
    operator_factory()
    world.wait_ready(policy, reason="UpToDate", timeout=60)
    row = wait_for(lambda: recorded(world, "web"), what="web's running digest", timeout=30)
    assert row["digest"] == running, (row, reported)
