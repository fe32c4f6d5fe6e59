"""The drift loop on the real node: a base is re-published, the rebuilt app image passes its
gates but crashes, and imagedrift sees it in what the pods do, not in an annotation.

Every image here really runs (busybox base, a shell entrypoint); no ``imagedrift.test/*``
annotation steers anything. The three ways a rebuilt image goes down:
- it crashes at start behind a readiness probe (never Ready);
- it crashes at start with no probe: the kubelet reports it Ready after every restart, so
  the Deployment's own conditions call the rollout complete (``NewReplicaSetAvailable``)
  while the service is down;
- it serves for a few seconds, then crashes: inside the settling window.
Each must fail its rollout, be rolled back to the exact digest that ran before, run that
digest again (by the kubelet's imageID), and never be tried again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from imagedrift.core.refs import ImageRef
from imagedrift.registry.push import Layer, base_marks
from tests.e2e.promised import pods, wait_lineage_row
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, checks_pass, policy_status, rollouts
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.runnable_images import RunnableImage, busybox_image

pytestmark = pytest.mark.usefixtures("crds_installed")

# sh as PID 1 ignores SIGTERM unless trapped: exit at once so replaced pods go quickly.
SERVE = "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1 & wait $!; done"
CRASH_AT_START = "echo 'config missing' >&2; exit 1"
CRASH_AFTER_4S = "trap 'exit 0' TERM; touch /tmp/ready; sleep 4; echo 'out of memory' >&2; exit 1"
SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}
REVISION = "deployment.kubernetes.io/revision"


def runnable_base(fixes: str) -> RunnableImage:
    """busybox plus a layer standing for the base's fixes (a re-publish changes it)."""
    return busybox_image().run(["/bin/sh"], Layer.from_files({"etc/fixes": fixes}))


def app_on(world: World, base: RunnableImage, version: str, script: str) -> RunnableImage:
    """An app image built FROM ``base`` (OCI base annotations), running ``script``.

    Its files name the test: containerd keys images by their config, so two tests' images
    with equal configs would be one image to the node, reported (imageID) under whichever
    name it pulled first, as an image pulled through a mirror is."""
    return base.run(
        # "app" is the script's $0: the container's args (a smoke test's --selftest) are $1...
        ["/bin/sh", "-c", script, "app"],
        Layer.from_files({"app/version": f"{version} ({world.suffix})"}),
        annotations=base_marks(base.digest, f"{world.ref('base')}:1"),
    )


def on_real_node(image: str, *, probe: bool, app: str = "web") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if probe:
        container["readinessProbe"] = {
            "exec": {"command": ["/bin/busybox", "cat", "/tmp/ready"]},
            "periodSeconds": 1,
        }
    return {
        "progressDeadlineSeconds": 60,
        "template": {
            "metadata": {"labels": {"app": app}},
            "spec": {
                "containers": [container],
                "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 2,
                "automountServiceAccountToken": False,
            },
        },
    }


def running_digests(world: World, app: str, container_name: str = "app") -> dict[str, str]:
    """Pod name -> the digest its container ``container_name`` runs, as the kubelet
    reports it (imageID), for the Ready pods of ``app``."""
    out: dict[str, str] = {}
    for pod in pods(world, app):
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        for container in status.get("containerStatuses") or []:
            image_id = str(container.get("imageID") or "")
            if ready and "@" in image_id and container.get("name") == container_name:
                out[pod["metadata"]["name"]] = image_id.rsplit("@", 1)[1]
    return out


def pod_states(world: World, app: str) -> list[str]:
    """One line per pod of ``app``: its phase and each container's state, for a timeout's
    message."""
    out = []
    for pod in pods(world, app):
        status = pod.get("status") or {}
        containers = [
            f"{c.get('name')}:{next(iter(c.get('state') or {}), '?')}"
            f"({c.get('restartCount', 0)} restarts, {str(c.get('imageID', ''))[-12:]})"
            for c in status.get("containerStatuses") or []
        ]
        out.append(f"{pod['metadata']['name']} {status.get('phase')} {' '.join(containers)}")
    return out


def wait_running(world: World, app: str, digest: str, replicas: int) -> None:
    def running() -> bool:
        if sorted(running_digests(world, app).values()) == [digest] * replicas:
            return True
        raise AssertionError(f"pods now: {pod_states(world, app)}")

    wait_for(
        running,
        what=f"{replicas} Ready pod(s) of {app} running {digest[:19]} by imageID",
        timeout=120,
    )


CASES = {
    "crashes at start behind a readiness probe": (CRASH_AT_START, True),
    "crashes at start with no readiness probe": (CRASH_AT_START, False),
    "crashes after serving 4s, inside the settling window": (CRASH_AFTER_4S, False),
}


@pytest.mark.parametrize(("script", "probe"), CASES.values(), ids=list(CASES))
def test_a_rebuilt_image_that_crashes_is_rolled_back_to_the_exact_digest_that_ran(
    script: str,
    probe: bool,
    real_node: RealNode,
    world: World,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)
    first = world.publish("app", "1.0.0", app_on(world, old, "1.0.0", SERVE))
    tagged = f"{world.ref('app')}:1.0.0"
    world.deployment(
        "web", tagged, policy=None, replicas=2, extra=on_real_node(tagged, probe=probe)
    )
    wait_running(world, "web", first, 2)

    policy = world.policy(
        "crash",
        {
            "base": base_spec(world),
            "app": SEMVER,
            "rollout": {"settleTime": "20s", "verifyTimeout": "3m"},
        },
    )
    world.kube.apps.patch_namespaced_deployment(
        "web", world.namespace, {"metadata": {"labels": {"imagedrift.io/policy": policy}}}
    )
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate", timeout=60)

    # The base is re-published with fixes and the app rebuilt on it: the rebuild passes
    # its gates (it sits on the new base) but does not stay up.
    world.publish("base", "1", new)
    crashing = world.publish("app", "1.0.1", app_on(world, new, "1.0.1", script))

    workload = f"deployment/{world.namespace}/web"
    row = wait_lineage_row(world, policy, workload, "RolledBack", timeout=150)
    entry = next(
        e for e in policy_status(world, policy)["lineage"] if row in (e.get("rollouts") or [])
    )
    assert entry["appDigest"] == crashing, entry
    # "crashed: restarted once, last exit code 1" or, caught before the restart, "stopped".
    assert "container app " in row["reason"], row
    assert "exit code 1 (Error)" in row["reason"], row
    world.wait_event("web", "RolledBack", type="Warning", needle="exit code 1 (Error)")

    # Back on exactly the digest that ran before (not the tag, which may have moved), and
    # the kubelet runs that digest again.
    restored = str(ImageRef.parse(tagged).with_digest(first))
    assert world.image_of("web") == restored
    wait_running(world, "web", first, 2)
    settled = wait_for(
        lambda: next(
            (r for r in rollouts(world, policy) if r.get("rollback") in ("Complete", "Failed")),
            None,
        ),
        what="the rollback's own outcome recorded",
        timeout=90,
    )
    assert settled["rollback"] == "Complete", settled

    # Never tried again: over further checks, no new ReplicaSet revision (the template is
    # not patched; annotation writes do not make one).
    revision = world.get_deployment("web")["metadata"]["annotations"][REVISION]
    checks_pass(operator, policy, 3)
    assert world.get_deployment("web")["metadata"]["annotations"][REVISION] == revision
    assert world.image_of("web") == restored
    assert [r["result"] for r in rollouts(world, policy)] == ["RolledBack"]
