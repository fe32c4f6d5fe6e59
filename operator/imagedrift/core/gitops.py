"""Who else writes a workload's image: GitOps controllers and the managers of the field.

Pure reads of a workload's labels, annotations and the managers of its containers' image
fields (from ``metadata.managedFields``, projected by the watch cache). imagedrift never
fights these writers: a workload a GitOps controller manages is reported, not patched
(unless the policy says so), and an image someone changed after imagedrift rolled it is
left as they set it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FIELD_MANAGER = "imagedrift"

# Field managers of GitOps controllers (Flux's kustomize- and helm-controller, Argo CD's
# application controller under the names its versions use).
GITOPS_MANAGERS = {
    "kustomize-controller": "Flux",
    "helm-controller": "Flux",
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
}
# Labels and annotations they stamp on what they apply.
GITOPS_LABELS = {
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}
GITOPS_ANNOTATIONS = {"argocd.argoproj.io/tracking-id": "Argo CD"}
MANAGERS_KEY = "imageManagers"  # in the watch cache's projection of a workload
GITOPS_KEY = "gitopsAnnotations"  # the GitOps annotations the projection keeps


def image_managers(obj: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """container -> {manager, operation, time} of the last writer of its image field."""
    raw = obj.get(MANAGERS_KEY) or {}
    return {str(k): dict(v) for k, v in raw.items()}


def managed_by(obj: Mapping[str, Any]) -> str:
    """Which GitOps controller manages ``obj`` and how we know ("" when none does)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = {**(meta.get("annotations") or {}), **(obj.get(GITOPS_KEY) or {})}
    for key, tool in GITOPS_LABELS.items():
        if key in labels:
            return f"{tool} (label {key}={labels[key]})"
    for key, tool in GITOPS_ANNOTATIONS.items():
        if key in annotations:
            return f"{tool} (annotation {key})"
    for container, writer in sorted(image_managers(obj).items()):
        controller = GITOPS_MANAGERS.get(writer.get("manager", ""))
        if controller:
            return f"{controller} (field manager {writer['manager']} owns the image of {container})"
    return ""


def describe_writer(writer: Mapping[str, str]) -> str:
    """'kubectl-rollout (Update, 2026-01-01T00:00:00Z)' or 'someone' when unknown."""
    if not writer.get("manager"):
        return "someone"
    detail = ", ".join(x for x in (writer.get("operation", ""), writer.get("time", "")) if x)
    return f"{writer['manager']} ({detail})" if detail else writer["manager"]


def owned_images(managed_fields: Any, kind: str) -> dict[str, dict[str, str]]:
    """From ``metadata.managedFields``: container -> the newest manager owning its image."""
    out: dict[str, dict[str, str]] = {}
    for entry in managed_fields or ():
        fields = entry.get("fieldsV1") or {}
        spec = fields.get("f:spec") or {}
        if kind == "CronJob":
            spec = ((spec.get("f:jobTemplate") or {}).get("f:spec")) or {}
        pod = ((spec.get("f:template") or {}).get("f:spec")) or {}
        for key, value in (pod.get("f:containers") or {}).items():
            if not key.startswith("k:") or "f:image" not in (value or {}):
                continue
            try:
                name = str(json.loads(key[2:]).get("name", ""))
            except ValueError:
                continue
            when = str(entry.get("time", ""))
            if name and (name not in out or when >= out[name]["time"]):
                out[name] = {
                    "manager": str(entry.get("manager", "")),
                    "operation": str(entry.get("operation", "")),
                    "time": when,
                }
    return out
