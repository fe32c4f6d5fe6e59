"""Pods that really run: a kubelet + containerd node (``real_node``) pulls an app image by
tag from the loopback registry and starts it.

What kwok never shows and rollout verification needs: the digest the runtime pulled
(``imageID``) and a crashing container's restarts and exit code.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from imagedrift.registry.push import Layer, push_image
from tests.harness.controlplane import Kube
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode
from tests.harness.procs import wait_for
from tests.harness.registry import Registry
from tests.harness.runnable_images import busybox_image

# The e2e conftest snapshots ImagePolicies after each test: their CRD must exist.
pytestmark = pytest.mark.usefixtures("crds_installed")

# sh as PID 1 ignores SIGTERM unless trapped: exit at once so pods go quickly.
SERVE = "trap 'exit 0' TERM; echo up | tee /tmp/ready; while true; do sleep 1 & wait $!; done"


def deployment(name: str, image: str, *, probe: bool) -> client.V1Deployment:
    container = client.V1Container(name="app", image=image, image_pull_policy="Always")
    if probe:
        container.readiness_probe = client.V1Probe(
            _exec=client.V1ExecAction(command=["/bin/busybox", "cat", "/tmp/ready"]),
            period_seconds=1,
        )
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[container],
                    node_selector={"kubernetes.io/hostname": NODE_NAME},
                    tolerations=[
                        client.V1Toleration(key=TAINT_KEY, operator="Exists", effect="NoSchedule")
                    ],
                    termination_grace_period_seconds=2,
                    automount_service_account_token=False,
                ),
            ),
        ),
    )


def pods_of(kube: Kube, namespace: str, name: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(namespace, label_selector=f"app={name}").items)


def test_deployment_runs_the_tag_s_digest(
    real_node: RealNode, kube: Kube, namespace: str, registry: Registry, registry_repo: str
) -> None:
    app = busybox_image().run(
        ["/bin/sh", "-c", SERVE], Layer.from_files({"app/version": "1.0.0\n"})
    )
    with registry.client() as registry_client:
        digest = push_image(registry_client, registry_repo, app, tag="1.0.0")
    image = f"{registry.host}/{registry_repo}:1.0.0"
    kube.apps.create_namespaced_deployment(namespace, deployment("web", image, probe=True))

    def running() -> Any:
        for pod in pods_of(kube, namespace, "web"):
            statuses = pod.status.container_statuses or []
            conditions = pod.status.conditions or []
            ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
            if ready and statuses and statuses[0].state.running is not None:
                return pod
        return None

    pod = wait_for(running, what="web's pod Ready and running on the real node", timeout=90)
    assert pod.spec.node_name == NODE_NAME
    status = pod.status.container_statuses[0]
    assert status.ready is True
    assert status.restart_count == 0
    # imageID is repo@<the digest the registry returned for the tag>.
    assert status.image_id == f"{registry.host}/{registry_repo}@{digest}"
    assert status.image_id.rsplit("@", 1)[1] == digest
    # The API server reaches the kubelet on 127.0.0.1 (by Hostname) for logs.
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, container="app")
    assert log.strip() == "up"


def test_crashing_container_shows_restarts_and_exit_code(
    real_node: RealNode, kube: Kube, namespace: str, registry: Registry, registry_repo: str
) -> None:
    app = busybox_image().run(["/bin/sh", "-c", "echo crash; exit 1"])
    with registry.client() as registry_client:
        push_image(registry_client, registry_repo, app, tag="1.0.0")
    image = f"{registry.host}/{registry_repo}:1.0.0"
    kube.apps.create_namespaced_deployment(namespace, deployment("crash", image, probe=False))

    def restarted() -> Any:
        for pod in pods_of(kube, namespace, "crash"):
            for status in pod.status.container_statuses or []:
                terminated = status.last_state.terminated if status.last_state else None
                if status.restart_count > 0 and terminated is not None:
                    return status
        return None

    status = wait_for(restarted, what="crash's container restarted", timeout=90)
    assert status.restart_count > 0
    assert status.last_state.terminated.exit_code == 1
    assert status.last_state.terminated.reason == "Error"
