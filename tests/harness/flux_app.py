"""One repository applied by Flux's own controllers (``tests.harness.flux``) into a
namespace: its credentials Secret, GitRepository and Kustomization, and what tests read of
them (the image Flux applied, the revision it applied, a reconcile requested at once); and
the Deployment manifests such a repository holds (``deployment_yaml``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import Kube
from tests.harness.flux import KUSTOMIZE_GROUP, SOURCE_GROUP, Flux
from tests.harness.git_server import GitServer

MANIFESTS = "deploy"
DEPLOYMENT = "web"


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def deployment_yaml(
    name: str,
    image: str,
    *,
    labels: Mapping[str, str] | None = None,
    replicas: int = 1,
    container: str = "app",
    spec: Mapping[str, Any] | None = None,
    comment: str = "",
) -> str:
    """A Deployment as a team keeps it in git: ``# comment`` on the first line (when given),
    then the YAML of Deployment ``name`` (with ``labels``, when given): ``replicas`` pods
    labelled ``app: name``, one container ``container`` running ``image``. The keys of
    ``spec`` follow ``replicas`` and ``selector``; a ``template`` among them replaces the
    pod, image included."""
    body_spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        **(spec or {}),
    }
    body_spec.setdefault(
        "template",
        {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": container, "image": image}]},
        },
    )
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": body_spec}
    text = yaml.safe_dump(body, sort_keys=False)
    return f"# {comment}\n{text}" if comment else text


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FluxApp:
    """One repository applied by Flux into ``namespace``: its Secret, GitRepository and
    Kustomization, and what the tests read of them."""

    def __init__(
        self,
        kube: Kube,
        flux: Flux,
        git_server: GitServer,
        name: str,
        namespace: str,
        *,
        interval: str = "10s",
        deployment: str = DEPLOYMENT,
    ) -> None:
        self.kube, self.flux, self.git = kube, flux, git_server
        self.name, self.namespace = name, namespace
        self.secret = f"{name}-auth"
        self.interval = interval  # how often Flux fetches and applies
        self.deployment = deployment

    def apply(self) -> None:
        user, password = self.git.credentials
        self.kube.core.create_namespaced_secret(
            self.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=self.secret),
                string_data={"username": user, "password": password},
            ),
        )
        self.kube.custom.create_namespaced_custom_object(
            SOURCE_GROUP,
            "v1",
            self.namespace,
            "gitrepositories",
            {
                "apiVersion": f"{SOURCE_GROUP}/v1",
                "kind": "GitRepository",
                "metadata": {"name": self.name},
                "spec": {
                    "url": self.git.url(self.name),
                    "ref": {"branch": "main"},
                    "interval": self.interval,
                    "timeout": "20s",
                    "secretRef": {"name": self.secret},
                },
            },
        )
        self.kube.custom.create_namespaced_custom_object(
            KUSTOMIZE_GROUP,
            "v1",
            self.namespace,
            "kustomizations",
            {
                "apiVersion": f"{KUSTOMIZE_GROUP}/v1",
                "kind": "Kustomization",
                "metadata": {"name": self.name},
                "spec": {
                    "sourceRef": {"kind": "GitRepository", "name": self.name},
                    "path": f"./{MANIFESTS}",
                    "prune": True,
                    "interval": self.interval,
                    "timeout": "30s",
                    "targetNamespace": self.namespace,
                },
            },
        )

    def deploy(self, files: Mapping[str, str], image: str, timeout: float = 90) -> None:
        """``files`` (path -> text) as the repository's first commit, applied by Flux;
        returns once the Deployment runs ``image`` (within ``timeout`` seconds)."""
        self.git.create_repo(self.name, files)
        self.apply()
        self.wait_image(image, timeout)

    def git_repository(self) -> dict[str, Any]:
        obj = self.kube.custom.get_namespaced_custom_object(
            SOURCE_GROUP, "v1", self.namespace, "gitrepositories", self.name
        )
        assert isinstance(obj, dict), obj
        return obj

    def kustomization(self) -> dict[str, Any]:
        obj = self.kube.custom.get_namespaced_custom_object(
            KUSTOMIZE_GROUP, "v1", self.namespace, "kustomizations", self.name
        )
        assert isinstance(obj, dict), obj
        return obj

    def request_reconcile(self) -> None:
        """What ``flux reconcile source git`` does: fetch now, not at the next interval."""
        self.kube.custom.patch_namespaced_custom_object(
            SOURCE_GROUP,
            "v1",
            self.namespace,
            "gitrepositories",
            self.name,
            {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": _now()}}},
        )

    def deployed_image(self) -> str | None:
        try:
            deployment = self.kube.apps.read_namespaced_deployment(self.deployment, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        pod = deployment.spec.template.spec if deployment.spec else None
        assert pod is not None, deployment  # the API server always sends both
        return str(pod.containers[0].image)

    def wait_image(self, image: str, timeout: float) -> float:
        """Seconds until the Deployment runs ``image`` (bounded by ``timeout``)."""
        started = time.monotonic()
        self.flux.wait(
            lambda: self.deployed_image() == image,
            what=f"Deployment {self.namespace}/{self.deployment} with image {image}",
            timeout=timeout,
        )
        return time.monotonic() - started

    def wait_revision(self, sha: str, timeout: float) -> None:
        def applied() -> bool:
            source = self.git_repository()
            artifact = (source.get("status") or {}).get("artifact") or {}
            kustomization = self.kustomization()
            return bool(
                artifact.get("revision") == f"main@sha1:{sha}"
                and (kustomization.get("status") or {}).get("lastAppliedRevision")
                == f"main@sha1:{sha}"
                and condition(kustomization, "Ready").get("status") == "True"
            )

        self.flux.wait(applied, what=f"revision {sha} of {self.name} applied", timeout=timeout)
