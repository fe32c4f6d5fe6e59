"""Helpers of the end-to-end tests that hold the README to its word: scan reports as the
scanners write them (the Trivy Operator's VulnerabilityReport resource, Trivy's SARIF),
StatefulSets with their update strategies, and what a policy or a workload says."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from imagedrift.core.workloads import STATE_ANNOTATION, STATUS_ANNOTATION
from tests.e2e.scenario import World
from tests.e2e.support import rollouts
from tests.harness.controlplane import ControlPlane
from tests.harness.procs import wait_for

# -- time --------------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """``2025-01-02T03:04:05Z``: how scanners and Kubernetes write a time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the policy's verdict on its candidate ------------------------------------------------------


def candidate_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict((body.get("status") or {}).get("candidate") or {})


def verdict_with(verdict: str, needle: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_policy`` check: ``status.candidate`` has ``verdict`` and a reason holding
    ``needle``."""

    def check(body: dict[str, Any]) -> bool:
        candidate = candidate_of(body)
        return candidate.get("verdict") == verdict and any(
            needle in str(r) for r in candidate.get("reasons") or []
        )

    return check


# -- the Trivy Operator's VulnerabilityReport ---------------------------------------------------

TRIVY_GROUP, TRIVY_VERSION, TRIVY_PLURAL = (
    "aquasecurity.github.io",
    "v1alpha1",
    "vulnerabilityreports",
)
_STRING = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}
# The Trivy Operator's CRD (deploy/helm/crds/aquasecurity.github.io_vulnerabilityreports.yaml
# in aquasecurity/trivy-operator), trimmed to the fields and required keys a report carries.
VULNERABILITY_REPORT_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{TRIVY_PLURAL}.{TRIVY_GROUP}"},
    "spec": {
        "group": TRIVY_GROUP,
        "names": {
            "kind": "VulnerabilityReport",
            "listKind": "VulnerabilityReportList",
            "plural": TRIVY_PLURAL,
            "singular": "vulnerabilityreport",
            "shortNames": ["vuln", "vulns"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": TRIVY_VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["report"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "apiVersion": _STRING,
                            "kind": _STRING,
                            "metadata": {"type": "object"},
                            "report": {
                                "type": "object",
                                "required": [
                                    "artifact",
                                    "os",
                                    "scanner",
                                    "summary",
                                    "updateTimestamp",
                                    "vulnerabilities",
                                ],
                                "properties": {
                                    "artifact": {
                                        "type": "object",
                                        "properties": {
                                            "digest": _STRING,
                                            "repository": _STRING,
                                            "tag": _STRING,
                                            "mimeType": _STRING,
                                        },
                                    },
                                    "os": {
                                        "type": "object",
                                        "properties": {"family": _STRING, "name": _STRING},
                                    },
                                    "registry": {
                                        "type": "object",
                                        "properties": {"server": _STRING},
                                    },
                                    "scanner": {
                                        "type": "object",
                                        "required": ["name", "vendor", "version"],
                                        "properties": {
                                            "name": _STRING,
                                            "vendor": _STRING,
                                            "version": _STRING,
                                        },
                                    },
                                    "summary": {
                                        "type": "object",
                                        "required": [
                                            "criticalCount",
                                            "highCount",
                                            "lowCount",
                                            "mediumCount",
                                            "unknownCount",
                                        ],
                                        "properties": {
                                            "criticalCount": _COUNT,
                                            "highCount": _COUNT,
                                            "lowCount": _COUNT,
                                            "mediumCount": _COUNT,
                                            "noneCount": _COUNT,
                                            "unknownCount": _COUNT,
                                        },
                                    },
                                    "updateTimestamp": {"type": "string", "format": "date-time"},
                                    "vulnerabilities": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "fixedVersion",
                                                "installedVersion",
                                                "lastModifiedDate",
                                                "publishedDate",
                                                "resource",
                                                "severity",
                                                "title",
                                                "vulnerabilityID",
                                            ],
                                            "properties": {
                                                "fixedVersion": _STRING,
                                                "installedVersion": _STRING,
                                                "lastModifiedDate": _STRING,
                                                "publishedDate": _STRING,
                                                "resource": _STRING,
                                                "score": {"type": "number"},
                                                "severity": {
                                                    "type": "string",
                                                    "enum": [
                                                        "CRITICAL",
                                                        "HIGH",
                                                        "MEDIUM",
                                                        "LOW",
                                                        "UNKNOWN",
                                                    ],
                                                },
                                                "title": _STRING,
                                                "vulnerabilityID": _STRING,
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@contextmanager
def trivy_operator_crd(controlplane: ControlPlane) -> Iterator[None]:
    """The VulnerabilityReport resource type, as installing the Trivy Operator adds it
    (deploy/ does not: imagedrift only reads it); removed afterwards with its reports."""
    controlplane.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump(VULNERABILITY_REPORT_CRD)
    )
    name = VULNERABILITY_REPORT_CRD["metadata"]["name"]
    try:
        controlplane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        yield
    finally:
        controlplane.kubectl("delete", f"crd/{name}", "--ignore-not-found", "--wait=false")


def vulnerability_report(
    world: World,
    replicaset: str,
    image: str,
    findings: Sequence[tuple[str, str]],
    updated: datetime,
) -> dict[str, Any]:
    """A VulnerabilityReport as the Trivy Operator writes it for container ``app`` of
    ReplicaSet ``replicaset`` (named ``replicaset-<name>-app``), a scan of ``image``
    (``host/repo@sha256:…``) with (id, severity) ``findings``, updated at ``updated``."""
    registry, _, rest = image.partition("/")
    repository, _, digest = rest.partition("@")
    counts = {
        s: sum(1 for _, sev in findings if sev == s)
        for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
    }
    return {
        "apiVersion": f"{TRIVY_GROUP}/{TRIVY_VERSION}",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": f"replicaset-{replicaset}-app",
            "namespace": world.namespace,
            "labels": {
                "trivy-operator.resource.kind": "ReplicaSet",
                "trivy-operator.resource.name": replicaset,
                "trivy-operator.resource.namespace": world.namespace,
                "trivy-operator.container.name": "app",
            },
        },
        "report": {
            "artifact": {
                "repository": repository,
                "digest": digest,
                "mimeType": "application/vnd.oci.image.manifest.v1+json",
            },
            "os": {"family": "debian", "name": "12.5"},
            "registry": {"server": registry},
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.52.0"},
            "summary": {
                "criticalCount": counts["CRITICAL"],
                "highCount": counts["HIGH"],
                "mediumCount": counts["MEDIUM"],
                "lowCount": counts["LOW"],
                "unknownCount": counts["UNKNOWN"],
                "noneCount": 0,
            },
            "updateTimestamp": rfc3339(updated),
            "vulnerabilities": [
                {
                    "vulnerabilityID": cve,
                    "severity": severity,
                    "resource": "openssl",
                    "installedVersion": "3.0.11-1",
                    "fixedVersion": "3.0.13-1",
                    "lastModifiedDate": "2024-03-01T00:00:00Z",
                    "publishedDate": "2024-02-01T00:00:00Z",
                    "score": 9.8 if severity == "CRITICAL" else 3.1,
                    "title": f"openssl: {cve}",
                }
                for cve, severity in findings
            ],
        },
    }


def put_vulnerability_report(world: World, report: Mapping[str, Any]) -> None:
    """Create the report, or replace the one of that name (a rescan updates it in place)."""
    meta = report["metadata"]
    api = world.kube.custom
    try:
        current: Any = api.get_namespaced_custom_object(
            TRIVY_GROUP, TRIVY_VERSION, meta["namespace"], TRIVY_PLURAL, meta["name"]
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
        api.create_namespaced_custom_object(
            TRIVY_GROUP, TRIVY_VERSION, meta["namespace"], TRIVY_PLURAL, dict(report)
        )
        return
    body = {
        **report,
        "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
    }
    api.replace_namespaced_custom_object(
        TRIVY_GROUP, TRIVY_VERSION, meta["namespace"], TRIVY_PLURAL, meta["name"], body
    )


# -- SARIF, as ``trivy image -f sarif`` writes it -------------------------------------------------

_SCORES = {"CRITICAL": "9.8", "HIGH": "7.5", "MEDIUM": "5.3", "LOW": "3.1"}
_LEVELS = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}


def sarif_report(image: str, findings: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A SARIF 2.1.0 log of a Trivy image scan with (id, severity) ``findings``: each rule
    carries Trivy's severity tag and CVSS ``security-severity``, each result its level."""
    rules = [
        {
            "id": cve,
            "name": "OsPackageVulnerability",
            "shortDescription": {"text": f"openssl: {cve}"},
            "defaultConfiguration": {"level": _LEVELS[severity]},
            "properties": {
                "precision": "very-high",
                "security-severity": _SCORES[severity],
                "tags": ["vulnerability", "security", severity],
            },
        }
        for cve, severity in findings
    ]
    results = [
        {
            "ruleId": cve,
            "ruleIndex": i,
            "level": _LEVELS[severity],
            "message": {"text": f"Package: openssl\nVulnerability {cve}\nSeverity: {severity}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": image, "uriBaseId": "ROOTPATH"},
                        "region": {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 1},
                    }
                }
            ],
        }
        for i, (cve, severity) in enumerate(findings)
    ]
    return {
        "version": "2.1.0",
        "$schema": "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/main/sarif-2.1/schema/sarif-schema-2.1.0.json",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "fullName": "Trivy Vulnerability Scanner",
                        "informationUri": "https://github.com/aquasecurity/trivy",
                        "name": "Trivy",
                        "rules": rules,
                        "version": "0.52.0",
                    }
                },
                "results": results,
                "columnKind": "utf16CodeUnits",
                "originalUriBaseIds": {"ROOTPATH": {"uri": "file:///"}},
                "properties": {"imageName": image, "repoDigests": [image]},
            }
        ],
    }


# -- StatefulSets -------------------------------------------------------------------------------


def as_dict(world: World, obj: object) -> dict[str, Any]:
    """A Kubernetes client model as the JSON the API server sent."""
    client: Any = world.kube.api_client
    return dict(client.sanitize_for_serialization(obj))


def statefulset(
    world: World,
    name: str,
    image: str,
    *,
    policy: str,
    replicas: int,
    strategy: Mapping[str, Any],
) -> None:
    """An opted-in StatefulSet of ``replicas`` pods running ``image``, updated by
    ``strategy`` (its ``spec.updateStrategy``); pods start in parallel."""
    body: Any = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"imagedrift.io/policy": policy}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": dict(strategy),
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }
    world.kube.apps.create_namespaced_stateful_set(world.namespace, body)


def get_statefulset(world: World, name: str) -> dict[str, Any]:
    return as_dict(world, world.kube.apps.read_namespaced_stateful_set(name, world.namespace))


def pods(world: World, app: str) -> list[dict[str, Any]]:
    """The pods labelled ``app`` that are not being deleted."""
    found = as_dict(
        world, world.kube.core.list_namespaced_pod(world.namespace, label_selector=f"app={app}")
    )
    return [p for p in found.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def pod_images(world: World, app: str) -> dict[str, str]:
    """Pod name -> the image its container runs, for the pods labelled ``app``."""
    return {
        str(p["metadata"]["name"]): str(p["spec"]["containers"][0]["image"])
        for p in pods(world, app)
    }


def pod_uids(world: World, app: str) -> dict[str, str]:
    """Pod name -> its uid (a replaced pod has a new one), for the pods labelled ``app``."""
    return {str(p["metadata"]["name"]): str(p["metadata"]["uid"]) for p in pods(world, app)}


def pods_ready(world: World, app: str) -> dict[str, bool]:
    """Pod name -> whether it is Ready, for the pods labelled ``app``."""
    return {
        str(p["metadata"]["name"]): any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        for p in pods(world, app)
    }


# -- what imagedrift wrote on a workload ----------------------------------------------------------


def annotation(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(key, "")
    value = json.loads(raw) if raw else {}
    return dict(value) if isinstance(value, dict) else {}


def rollout_record(body: Mapping[str, Any]) -> dict[str, Any]:
    """The rollout imagedrift recorded on a workload (``imagedrift.io/state``)."""
    return dict(annotation(body, STATE_ANNOTATION).get("rollout") or {})


def detail_rows(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-container rows of a workload's own ``imagedrift.io/status`` note."""
    return [dict(r) for r in annotation(body, STATUS_ANNOTATION).get("containers") or []]


def wait_lineage_row(
    world: World, policy: str, workload: str, result: str, timeout: float = 90
) -> dict[str, Any]:
    """The lineage's rollout row of ``workload`` (``kind/namespace/name``) once its result
    is ``result``."""

    def row() -> dict[str, Any] | None:
        found = (r for r in rollouts(world, policy) if r.get("workload") == workload)
        return next((r for r in found if r.get("result") == result), None)

    return wait_for(row, what=f"lineage row of {workload}: {result}", timeout=timeout)
