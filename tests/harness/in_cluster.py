"""The operator installed in the cluster from its own image, as a user installs it:
``kubectl apply --server-side -k`` of a test overlay of ``deploy/`` on the real node.

``InClusterOperator`` writes a kustomization per run (the image by digest, the API
server's and the registry's loopback ports) on top of ``tests/deploy/real-node``, gives
the node's bridge the pod network's gateway address (kubelet probes and the API server's
service proxy reach the pods), answers the loopback ports inside every operator pod
(``tests/harness/pod_loopback.py``) and applies. ``uninstall()`` deletes what the overlay
added beyond the session's namespaces and RBAC (``deploy_rbac``): the Deployment, its pods,
the Service, PDB and NetworkPolicy, and the Lease the replicas elected with.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import yaml

from tests.harness.pod_loopback import PodLoopback, follow_pods, pod_network_gateway
from tests.harness.procs import wait_for

if TYPE_CHECKING:
    from kubernetes import client as k8s

    from tests.harness.controlplane import ControlPlane, Kube
    from tests.harness.node import RealNode

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
OVERLAY: Final = REPO_ROOT / "tests" / "deploy" / "real-node"
NAMESPACE: Final = "imagedrift-system"
NAME: Final = "imagedrift"
LEASE: Final = "imagedrift"
SELECTOR: Final = "app.kubernetes.io/name=imagedrift,app.kubernetes.io/component=operator"
# What the overlay adds beyond deploy_rbac's objects (kind, API path segment).
OWN_KINDS: Final = ("deployment", "service", "poddisruptionbudget", "networkpolicy")
GONE_TIMEOUT: Final = 120.0


class InClusterOperator:
    def __init__(
        self,
        controlplane: ControlPlane,
        kube: Kube,
        node: RealNode,
        image: str,
        registry_host: str,
        workdir: Path,
    ) -> None:
        self.controlplane = controlplane
        self.kube = kube
        self.node = node
        self.image = image  # host/repository@sha256:...
        self.registry_host = registry_host
        self.workdir = workdir
        server = urlsplit(controlplane.server or "")
        self.api_port = int(server.port or 443)
        self.registry_port = int(registry_host.rsplit(":", 1)[1])
        self.forward: PodLoopback | None = None
        self._stack = contextlib.ExitStack()

    def kustomization(self) -> Path:
        """This run's overlay: tests/deploy/real-node with the image and the ports."""
        repository, digest = self.image.split("@", 1)
        ports = f"{self.api_port} {self.registry_port}"
        patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [
                            {
                                "name": "wait-for-loopback",
                                "env": [{"name": "WAIT_PORTS", "value": ports}],
                            }
                        ],
                        "containers": [
                            {
                                "name": "operator",
                                "env": [
                                    {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.api_port)}
                                ],
                            }
                        ],
                    }
                }
            },
        }
        directory = self.workdir / "overlay"
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # kustomize takes no absolute path: the overlay relative to this directory.
            "resources": [os.path.relpath(OVERLAY, directory)],
            "images": [{"name": "imagedrift", "newName": repository, "digest": digest}],
            "patches": [{"patch": yaml.safe_dump(patch, sort_keys=False)}],
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        return directory

    def install(self) -> None:
        """Apply the overlay with the loopback ports answered in every operator pod."""
        try:
            self._stack.enter_context(pod_network_gateway(self.node))
            self.forward = self._stack.enter_context(
                PodLoopback([self.api_port, self.registry_port])
            )
            self._stack.enter_context(
                follow_pods(self.forward, self.kube, self.node, NAMESPACE, SELECTOR)
            )
            self.controlplane.kubectl(
                "apply", "--server-side", "-k", str(self.kustomization()), timeout=120
            )
        except BaseException:
            self.uninstall()
            raise

    def uninstall(self) -> None:
        """Delete what the overlay added (pods gone first), then close the loopback relay
        and take the gateway address off the bridge."""
        from kubernetes.client.exceptions import ApiException

        try:
            for kind in OWN_KINDS:
                self.controlplane.kubectl(
                    "delete", kind, NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=false"
                )
            wait_for(
                lambda: not self.pods(),
                what="the operator's pods gone",
                timeout=GONE_TIMEOUT,
                interval=0.5,
            )
            with contextlib.suppress(ApiException):
                self.kube.coordination.delete_namespaced_lease(LEASE, NAMESPACE)
        finally:
            self._stack.close()

    # -- what a test reads ----------------------------------------------------------------

    def pods(self) -> list[k8s.V1Pod]:
        return list(self.kube.core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items)

    def ready_pods(self) -> list[k8s.V1Pod]:
        return [
            pod
            for pod in self.pods()
            if pod.metadata
            and pod.status
            and pod.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        ]

    def lease_holder(self) -> str:
        lease = self.kube.coordination.read_namespaced_lease(LEASE, NAMESPACE)
        return str((lease.spec.holder_identity if lease.spec else None) or "")

    def leader(self) -> str:
        """The pod whose replica holds the Lease (its identity is ``<pod>_<suffix>``)."""
        return self.lease_holder().rsplit("_", 1)[0]

    def pod_metrics(self, pod: str) -> str:
        """/metrics of one replica, through the API server's pod proxy."""
        return self.kube.core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod}:9090", NAMESPACE, "metrics"
        )

    def service_metrics(self) -> str:
        """/metrics through the Service (the API server's service proxy picks an endpoint:
        without kube-proxy a ClusterIP routes nowhere)."""
        return self.kube.core.connect_get_namespaced_service_proxy_with_path(
            f"{NAME}:metrics", NAMESPACE, "metrics"
        )

    def logs(self) -> dict[str, str]:
        """Each current operator pod's log (for failure messages)."""
        out: dict[str, str] = {}
        for pod in self.pods():
            name = str(pod.metadata.name if pod.metadata else "")
            with contextlib.suppress(Exception):
                out[name] = self.kube.core.read_namespaced_pod_log(
                    name, NAMESPACE, container="operator", tail_lines=40
                )
        return out


def metrics_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page: {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


__all__ = ["NAMESPACE", "InClusterOperator", "metrics_samples"]
