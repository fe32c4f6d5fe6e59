"""Reads and patches workloads and reads Secrets through the official Kubernetes client.

Bodies are returned as plain JSON dicts (camelCase, as the API serves them) because the core
reads them that way. Patches are strategic-merge (containers merge by name) under the field
manager ``imagedrift``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from imagedrift.core.sandbox import Sandbox
from imagedrift.core.workloads import WorkloadRef
from imagedrift.errors import KubeConflict, KubeError

FIELD_MANAGER = "imagedrift"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
TIMEOUT = (10.0, 30.0)  # connect, read (seconds): no call may park a worker for long
GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
COMPONENT = "imagedrift"
# The GitOps controllers' objects imagedrift reads to find where a workload's manifests live.
GITOPS_KINDS = {
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "GitRepository": ("source.toolkit.fluxcd.io", "v1", "gitrepositories"),
    "Application": ("argoproj.io", "v1alpha1", "applications"),
}
POD_PAGE = 20  # pods read per workload when its running digest is not yet known


def load_api_client() -> k8s.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def _call(
    what: str, call: Any, *args: Any, timeout: tuple[float, float] = TIMEOUT, **kwargs: Any
) -> Any:
    """``call`` with a timeout; transport faults become ``KubeError`` like API errors."""
    try:
        return call(*args, _request_timeout=timeout, **kwargs)
    except ApiException:
        raise
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        raise KubeError(f"{what}: {type(exc).__name__}: {exc}") from exc


class KubeAdapter:
    def __init__(self, api: k8s.ApiClient, namespace: str, sandbox: Sandbox | None = None) -> None:
        self.namespace = namespace
        self.sandbox = sandbox or Sandbox()  # where and as whom smoke-test Jobs run
        self._apps = k8s.AppsV1Api(api)
        self._batch = k8s.BatchV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._custom = k8s.CustomObjectsApi(api)
        self._coordination = k8s.CoordinationV1Api(api)

    def _methods(self, kind: str) -> tuple[Any, Any]:
        if kind == "CronJob":
            return self._batch.read_namespaced_cron_job, self._batch.patch_namespaced_cron_job
        snake = {
            "Deployment": "deployment",
            "StatefulSet": "stateful_set",
            "DaemonSet": "daemon_set",
        }[kind]
        return getattr(self._apps, f"read_namespaced_{snake}"), getattr(
            self._apps, f"patch_namespaced_{snake}"
        )

    @staticmethod
    def _body(response: Any, kind: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(response.data)
        body.setdefault("kind", kind)
        body.setdefault("apiVersion", "batch/v1" if kind == "CronJob" else "apps/v1")
        return body

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        read, _ = self._methods(ref.kind)
        try:
            return self._body(
                _call(f"reading {ref}", read, ref.name, ref.namespace, _preload_content=False),
                ref.kind,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"reading {ref}: {exc.status} {exc.reason}") from exc

    def patch_workload(self, ref: WorkloadRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        _, write = self._methods(ref.kind)
        try:
            response = _call(
                f"patching {ref}",
                write,
                ref.name,
                ref.namespace,
                dict(patch),
                field_manager=FIELD_MANAGER,
                _content_type=STRATEGIC,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise KubeConflict(f"{ref} changed since it was read") from exc
            raise KubeError(f"patching {ref}: {exc.status} {exc.reason}: {exc.body}") from exc
        return self._body(response, ref.kind)

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        try:
            secret = _call(
                f"reading secret {self.namespace}/{name}",
                self._core.read_namespaced_secret,
                name,
                self.namespace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(
                f"reading secret {self.namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def get_gitops_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = GITOPS_KINDS[kind]
        what = f"reading {kind} {namespace}/{name}"
        try:
            custom: Any = self._custom
            response = _call(
                what,
                custom.get_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None  # not there, or the controller is not installed
            raise KubeError(f"{what}: {exc.status} {exc.reason}") from exc
        return dict(json.loads(response.data))

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            batch: Any = self._batch
            response = _call(
                f"creating job in {namespace}",
                batch.create_namespaced_job,
                namespace,
                dict(body),
                field_manager=FIELD_MANAGER,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise KubeConflict(f"job {namespace}/{body['metadata']['name']} exists") from exc
            raise KubeError(
                f"creating job in {namespace}: {exc.status} {exc.reason}: {exc.body}"
            ) from exc
        return self._body(response, "Job")

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            batch: Any = self._batch
            response = _call(
                f"reading job {namespace}/{name}",
                batch.read_namespaced_job,
                name,
                namespace,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"reading job {namespace}/{name}: {exc.status} {exc.reason}") from exc
        body: dict[str, Any] = json.loads(response.data)
        return body

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The first ``POD_PAGE`` pods matching ``selector``: enough to see what most of a
        workload's pods pulled, never a fleet-sized read."""
        try:
            response = _call(
                f"listing pods in {namespace}",
                self._core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                limit=POD_PAGE,
                _preload_content=False,
            )
        except ApiException as exc:
            raise KubeError(f"listing pods in {namespace}: {exc.status} {exc.reason}") from exc
        return list(json.loads(response.data).get("items") or [])

    def list_vulnerability_reports(self, digest: str) -> list[dict[str, Any]]:
        try:
            custom: Any = self._custom
            response = _call(
                "listing vulnerabilityreports",
                custom.list_cluster_custom_object,
                "aquasecurity.github.io",
                "v1alpha1",
                "vulnerabilityreports",
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return []  # the Trivy Operator is not installed
            raise KubeError(f"listing vulnerabilityreports: {exc.status} {exc.reason}") from exc
        items = json.loads(response.data).get("items") or []
        return [
            dict(item)
            for item in items
            if ((item.get("report") or {}).get("artifact") or {}).get("digest") == digest
        ]

    # -- the leader-election Lease (in the operator's namespace) ----------------------------

    def read_lease(self, name: str, timeout: float) -> tuple[dict[str, Any], str] | None:
        """The Lease's spec and resourceVersion; None when there is none."""
        what = f"reading lease {self.namespace}/{name}"
        try:
            response = _call(
                what,
                self._coordination.read_namespaced_lease,
                name,
                self.namespace,
                timeout=(timeout, timeout),
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"{what}: {exc.status} {exc.reason}") from exc
        body = json.loads(response.data)
        return dict(body.get("spec") or {}), str(body["metadata"]["resourceVersion"])

    def write_lease(
        self, name: str, spec: Mapping[str, Any], resource_version: str | None, timeout: float
    ) -> str:
        """Create the Lease (``resource_version`` None) or replace the version read, and
        return the new resourceVersion. A 409 (someone wrote it meanwhile, or created it
        first) is ``KubeConflict``."""
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": dict(spec),
        }
        what = f"writing lease {self.namespace}/{name}"
        call: Any
        args: tuple[Any, ...]
        if resource_version is None:
            call, args = self._coordination.create_namespaced_lease, (self.namespace, body)
        else:
            body["metadata"]["resourceVersion"] = resource_version
            call = self._coordination.replace_namespaced_lease
            args = (name, self.namespace, body)
        try:
            response = _call(
                what,
                call,
                *args,
                field_manager=FIELD_MANAGER,
                timeout=(timeout, timeout),
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 409:
                changed = f"lease {self.namespace}/{name} changed since it was read"
                raise KubeConflict(changed) from exc
            raise KubeError(f"{what}: {exc.status} {exc.reason}") from exc
        return str(json.loads(response.data)["metadata"]["resourceVersion"])

    # -- the policy's own status and Events ------------------------------------------------

    def list_policies(self) -> list[dict[str, Any]]:
        """Every ImagePolicy as it is now (once, at startup: the controller must know all
        of them before it decides anything, or two overlapping ones could both act)."""
        try:
            response = _call(
                "listing imagepolicies",
                self._custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                _preload_content=False,
            )
        except ApiException as exc:
            raise KubeError(f"listing imagepolicies: {exc.status} {exc.reason}") from exc
        items = json.loads(response.data).get("items") or []
        return [dict(item) for item in items]

    def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch ``status`` of ImagePolicy ``name`` (keys set to None are removed)."""
        try:
            _call(
                f"writing status of imagepolicy {name}",
                self._custom.patch_cluster_custom_object_status,
                GROUP,
                VERSION,
                PLURAL,
                name,
                {"status": dict(status)},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing to record
            raise KubeError(
                f"writing status of imagepolicy {name}: {exc.status} {exc.reason}: {exc.body}"
            ) from exc

    def post_event(
        self, target: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
    ) -> None:
        """Post a core/v1 Event about ``target`` (cluster-scoped ones go to "default",
        where the API server accepts them and kopf put them too)."""
        meta = target.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {
                "generateName": f"{meta.get('name', 'imagedrift')}.",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": target.get("apiVersion", ""),
                "kind": target.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace") or None,
                "uid": meta.get("uid") or None,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            _call(
                f"posting event {reason}",
                self._core.create_namespaced_event,
                namespace,
                body,
                _preload_content=False,
            )
        except ApiException as exc:
            raise KubeError(f"posting event {reason}: {exc.status} {exc.reason}") from exc
