"""The smoke-test sandbox (core.sandbox): what a template may not ask for, each refusal
naming its field, and the pod spec the sandbox gives every smoke test."""

from __future__ import annotations

from typing import Any

import pytest

from imagedrift.core.sandbox import Sandbox, refusals, sandboxed

POD = "spec.validation.smokeTest.template.template.spec"


def job(**pod: Any) -> dict[str, Any]:
    containers = pod.pop("containers", [{"name": "smoke", "image": "x", "args": ["--selftest"]}])
    return {"template": {"spec": {"containers": containers, **pod}}}


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (job(serviceAccountName="imagedrift"), f"{POD}.serviceAccountName"),
        (job(serviceAccount="default"), f"{POD}.serviceAccount"),
        (job(automountServiceAccountToken=True), f"{POD}.automountServiceAccountToken"),
        (job(hostNetwork=True), f"{POD}.hostNetwork"),
        (job(hostPID=True), f"{POD}.hostPID"),
        (job(hostIPC=True), f"{POD}.hostIPC"),
        (
            job(volumes=[{"name": "v", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}]),
            f"{POD}.volumes[1].hostPath",
        ),
        (job(initContainers=[{"name": "i", "image": "busybox"}]), f"{POD}.initContainers"),
        (
            job(containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]),
            f"{POD}.containers",
        ),
        (
            job(containers=[{"name": "a", "securityContext": {"privileged": True}}]),
            f"{POD}.containers[0].securityContext.privileged",
        ),
        (
            job(containers=[{"name": "a", "securityContext": {"allowPrivilegeEscalation": True}}]),
            f"{POD}.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            job(
                containers=[
                    {"name": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}
                ]
            ),
            f"{POD}.containers[0].securityContext.capabilities.add",
        ),
    ],
)
def test_a_template_asking_for_more_is_refused_naming_the_field(
    template: dict[str, Any], field: str
) -> None:
    found = refusals(template)
    assert len(found) == 1 and found[0].startswith(f"{field}:"), found


def test_a_plain_template_is_accepted_and_gets_the_sandbox() -> None:
    template = job(volumes=[{"name": "scratch", "emptyDir": {}}])
    assert refusals(template) == []
    spec = sandboxed(template, "r.io/app@sha256:" + "a" * 64, Sandbox())
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "imagedrift-smoke"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["image"] == "r.io/app@sha256:" + "a" * 64 and container["args"] == [
        "--selftest"
    ]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert template["template"]["spec"].get("serviceAccountName") is None, "input untouched"


def test_resources_the_template_sets_are_kept() -> None:
    mine = {"limits": {"cpu": "100m", "memory": "32Mi"}}
    template = job(containers=[{"name": "s", "image": "x", "resources": mine}])
    spec = sandboxed(template, "r.io/app@sha256:" + "b" * 64, Sandbox())
    assert spec["template"]["spec"]["containers"][0]["resources"] == mine
