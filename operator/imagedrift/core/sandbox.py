"""The smoke-test sandbox: what a policy's Job template may ask for, and the pod it gets.

Anyone who may edit an ImagePolicy chooses the smoke-test template, so the template must
not be a way to run a pod with more power than the candidate image needs. The Job always
runs in the operator's sandbox namespace (Pod Security "restricted" enforced there), as the
sandbox's service account (no rights), with no service-account token mounted, no host
namespaces or hostPath, one container running the candidate image, bounded resources and a
deadline. A template that asks for more is refused, naming the field (the CRD refuses the
same at admission; this is the operator's own check, for what admission let through).

Pure: a JobSpec in, the refusals or the sandboxed JobSpec out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FIELD = "spec.validation.smokeTest.template"
_POD = f"{FIELD}.template.spec"


@dataclass(frozen=True)
class Sandbox:
    namespace: str = "imagedrift-smoke"
    service_account: str = "imagedrift-smoke"
    # Applied to the container when the template sets none (requests, limits).
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
    )


def refusals(job_spec: Mapping[str, Any]) -> list[str]:
    """Every way ``job_spec`` asks for more than the sandbox gives, each naming its field."""
    pod = ((job_spec.get("template") or {}).get("spec")) or {}
    out: list[str] = []
    for key in ("serviceAccountName", "serviceAccount"):
        if pod.get(key):
            out.append(f"{_POD}.{key}: smoke tests run as the sandbox's account (no rights)")
    if pod.get("automountServiceAccountToken"):
        out.append(f"{_POD}.automountServiceAccountToken: no token is mounted in the sandbox")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{_POD}.{key}: host namespaces are not available to smoke tests")
    for i, volume in enumerate(pod.get("volumes") or ()):
        if isinstance(volume, Mapping) and "hostPath" in volume:
            out.append(f"{_POD}.volumes[{i}].hostPath: no host paths in the sandbox")
    if pod.get("initContainers") or pod.get("ephemeralContainers"):
        out.append(f"{_POD}.initContainers: only the candidate image runs in the sandbox")
    containers = pod.get("containers") or ()
    if len(containers) != 1:
        out.append(f"{_POD}.containers: exactly one container, which runs the candidate image")
    for i, container in enumerate(containers):
        security = (container or {}).get("securityContext") or {}
        for key in ("privileged", "allowPrivilegeEscalation"):
            if security.get(key):
                out.append(f"{_POD}.containers[{i}].securityContext.{key}: not in the sandbox")
        added = (security.get("capabilities") or {}).get("add") or ()
        if added:
            out.append(f"{_POD}.containers[{i}].securityContext.capabilities.add: none allowed")
    return out


def sandboxed(job_spec: Mapping[str, Any], image: str, sandbox: Sandbox) -> dict[str, Any]:
    """The JobSpec to create: ``job_spec`` (already free of ``refusals``) with the candidate
    image, the sandbox's account, no token, and restricted security and resource defaults."""
    spec = copy.deepcopy(dict(job_spec))
    template = spec.setdefault("template", {})
    pod = template.setdefault("spec", {})
    pod["serviceAccountName"] = sandbox.service_account
    pod["automountServiceAccountToken"] = False
    pod["enableServiceLinks"] = False
    pod.setdefault("restartPolicy", "Never")
    pod_security = pod.setdefault("securityContext", {})
    pod_security.setdefault("runAsNonRoot", True)
    pod_security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    (container,) = pod["containers"]
    container["image"] = image
    security = container.setdefault("securityContext", {})
    security["allowPrivilegeEscalation"] = False
    security.setdefault("capabilities", {})["drop"] = ["ALL"]
    if not container.get("resources"):
        container["resources"] = copy.deepcopy({k: dict(v) for k, v in sandbox.resources.items()})
    return spec
