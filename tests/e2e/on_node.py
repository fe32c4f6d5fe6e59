"""Apps that really run on the real node (``tests/harness/node.py``): a busybox base, app
images built on it whose entrypoint script decides what they do, Deployments placed on the
node, and what the kubelet says the pods run."""

from __future__ import annotations

from typing import Any

from imagedrift.registry.push import Layer, base_marks
from tests.e2e.promised import pods
from tests.e2e.scenario import World
from tests.harness.node import NODE_NAME, TAINT_KEY
from tests.harness.procs import wait_for
from tests.harness.runnable_images import RunnableImage, busybox_image

# sh as PID 1 ignores SIGTERM unless trapped: exit at once so replaced pods go quickly.
SERVE = "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1 & wait $!; done"


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
