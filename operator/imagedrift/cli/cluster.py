"""The CLI's connection to the cluster: kubeconfig and context, reads, and the two writes
(pause and resume). Every failure becomes a ``CliError`` carrying the exit code.

Exit codes: 0 ok, 1 not found or bad usage, 2 the API (or a registry) failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from imagedrift.core.workloads import KINDS, WorkloadRef
from imagedrift.kube.adapter import KubeAdapter

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"
FIELD_MANAGER = "imagedrift-cli"
MERGE = "application/merge-patch+json"
REQUEST_TIMEOUT = 30.0
EXIT_OK, EXIT_NOT_FOUND, EXIT_API = 0, 1, 2

# kubectl's names for the kinds imagedrift rolls, with and without the API group.
KIND_ALIASES = {
    **{alias: "Deployment" for alias in ("deploy", "deployment", "deployments")},
    **{alias: "StatefulSet" for alias in ("sts", "statefulset", "statefulsets")},
    **{alias: "DaemonSet" for alias in ("ds", "daemonset", "daemonsets")},
    **{alias: "CronJob" for alias in ("cj", "cronjob", "cronjobs")},
}
_GROUPS = {"Deployment": "apps", "StatefulSet": "apps", "DaemonSet": "apps", "CronJob": "batch"}


class CliError(Exception):
    """A failure to report on stderr; ``code`` is the process exit code."""

    def __init__(self, message: str, code: int = EXIT_API) -> None:
        super().__init__(message)
        self.code = code


def parse_workload(text: str, namespace: str) -> WorkloadRef:
    """``deploy/web`` (or ``deployment.apps/web``, ``sts/db``, ``cj/nightly``) in ``namespace``."""
    kind_text, sep, name = text.partition("/")
    kind_text = kind_text.lower()
    group = ""
    if "." in kind_text:
        kind_text, group = kind_text.split(".", 1)
    kind = KIND_ALIASES.get(kind_text)
    if not sep or not name or "/" in name or kind is None:
        raise CliError(
            f"{text!r} is not a workload: use KIND/NAME with KIND one of "
            "deploy, sts, ds, cj (deployment, statefulset, daemonset, cronjob)",
            EXIT_NOT_FOUND,
        )
    if group and group != _GROUPS[kind]:
        raise CliError(f"{text!r}: {kind} is in API group {_GROUPS[kind]}", EXIT_NOT_FOUND)
    return WorkloadRef(kind, namespace, name)


def describe(ref: WorkloadRef) -> str:
    """kubectl spelling: ``deployment/web -n shop``."""
    return f"{ref.kind.lower()}/{ref.name} -n {ref.namespace}"


@dataclass
class Cluster:
    api: k8s.ApiClient
    namespace: str  # the kubeconfig context's namespace (default "default")
    operator_namespace: str

    @classmethod
    def connect(
        cls, kubeconfig: str | None, context: str | None, operator_namespace: str
    ) -> Cluster:
        """Load ``kubeconfig`` (else KUBECONFIG, ~/.kube/config, then in-cluster)."""
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        default_path = Path.home() / ".kube" / "config"
        try:
            if path or default_path.exists() or context:
                api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=context
                )
                contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=path
                )
                chosen = active
                if context:
                    chosen = next(c for c in contexts if c.get("name") == context)
                namespace = str((chosen.get("context") or {}).get("namespace") or "default")
                return cls(api, namespace, operator_namespace)
            configuration = k8s.Configuration()
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except (k8s_config.ConfigException, OSError, StopIteration, TypeError) as exc:
            raise CliError(f"cannot load the Kubernetes configuration: {exc}") from exc
        namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
        return cls(k8s.ApiClient(configuration), namespace, operator_namespace)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    # -- reads -----------------------------------------------------------------------------

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one API call; 404 -> exit 1, any other failure -> exit 2."""
        try:
            return call(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise CliError(f"{what} not found", EXIT_NOT_FOUND) from exc
            raise CliError(f"{what}: the API server answered {exc.status} {exc.reason}") from exc
        except (HTTPError, OSError) as exc:
            raise CliError(f"{what}: cannot reach the API server: {exc}") from exc

    def _json(self, what: str, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = self._call(what, call, *args, _preload_content=False, **kwargs)
        body: dict[str, Any] = json.loads(response.data)
        return body

    def get_policy(self, name: str) -> dict[str, Any]:
        custom = k8s.CustomObjectsApi(self.api)
        return self._json(
            f"imagepolicy {name!r}", custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name
        )

    def list_policies(self) -> list[dict[str, Any]]:
        custom = k8s.CustomObjectsApi(self.api)
        body = self._json(
            "listing imagepolicies", custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
        )
        items = [dict(i) for i in body.get("items") or []]
        return sorted(items, key=lambda p: str((p.get("metadata") or {}).get("name", "")))

    def _workload_methods(self, kind: str) -> tuple[Any, Any, Any, Any]:
        """(read, list in a namespace, list in all namespaces, patch) of ``kind``."""
        if kind == "CronJob":
            batch = k8s.BatchV1Api(self.api)
            return (
                batch.read_namespaced_cron_job,
                batch.list_namespaced_cron_job,
                batch.list_cron_job_for_all_namespaces,
                batch.patch_namespaced_cron_job,
            )
        apps = k8s.AppsV1Api(self.api)
        s = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[
            kind
        ]
        return (
            getattr(apps, f"read_namespaced_{s}"),
            getattr(apps, f"list_namespaced_{s}"),
            getattr(apps, f"list_{s}_for_all_namespaces"),
            getattr(apps, f"patch_namespaced_{s}"),
        )

    @staticmethod
    def _typed(body: dict[str, Any], kind: str) -> dict[str, Any]:
        body.setdefault("kind", kind)
        body.setdefault("apiVersion", f"{_GROUPS[kind]}/v1")
        return body

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any]:
        read, _, _, _ = self._workload_methods(ref.kind)
        body = self._json(describe(ref), read, ref.name, ref.namespace)
        return self._typed(body, ref.kind)

    def list_workloads(self, namespaces: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        """Every Deployment, StatefulSet, DaemonSet and CronJob (in ``namespaces`` if given)."""
        for kind in KINDS:
            _, list_in, list_all, _ = self._workload_methods(kind)
            pages = (
                [self._json(f"listing {kind}s in {ns}", list_in, ns) for ns in namespaces]
                if namespaces
                else [self._json(f"listing {kind}s", list_all)]
            )
            for page in pages:
                for item in page.get("items") or []:
                    yield self._typed(dict(item), kind)

    def adapter(self) -> KubeAdapter:
        """The operator's own adapter, bound to the operator namespace (for Secrets)."""
        return KubeAdapter(self.api, self.operator_namespace)

    # -- writes (pause / resume only) -------------------------------------------------------

    def patch_policy(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        custom = k8s.CustomObjectsApi(self.api)
        return self._json(
            f"imagepolicy {name!r}",
            custom.patch_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            name,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE,
        )

    def patch_workload(self, ref: WorkloadRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        _, _, _, write = self._workload_methods(ref.kind)
        body = self._json(
            describe(ref),
            write,
            ref.name,
            ref.namespace,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE,
        )
        return self._typed(body, ref.kind)
