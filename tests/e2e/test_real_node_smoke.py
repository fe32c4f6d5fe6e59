"""The smoke-test gate on the real node: the candidate image itself runs in the sandbox.

The Job template is the README's example, as written there, plus only what puts its pod on
this test node (a nodeSelector and the node's toleration). The candidates' entrypoints decide:
exit 0 on ``--selftest``, exit 1, an entrypoint that does not exist, and an image that would
run as root (the template without the README's ``runAsUser``). The last two are rejected in
the kubelet's words, not only by the Job's deadline. No ``imagedrift.test/*`` annotation.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import BatchV1Api

from tests.e2e.on_node import (
    SERVE,
    app_on,
    on_real_node,
    runnable_base,
    running_digests,
    wait_running,
)
from tests.e2e.promised import as_dict
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, checks_pass, policy_status
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.runnable_images import RunnableImage

pytestmark = pytest.mark.usefixtures("crds_installed")

SANDBOX = "imagedrift-smoke"
README = Path(__file__).resolve().parents[2] / "README.md"
SELFTEST = (
    'if [ "$1" = --selftest ]; then echo "selftest {word} as uid $(/bin/busybox id -u)";'
    " exit {code}; fi; " + SERVE
)


def readme_smoke_template() -> dict[str, Any]:
    """The ``smokeTest.template`` of the README's policy example, parsed as written."""
    text = README.read_text()
    start = text.index("    smokeTest:")
    block = text[start : text.index("  rollout:", start)]
    body = yaml.safe_load(re.sub(r"(?m)^    ", "", block))
    template = body["smokeTest"]["template"]
    assert isinstance(template, dict)
    return template


def on_this_node(template: dict[str, Any], *, as_root: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(template)
    pod = out["template"]["spec"]
    pod["nodeSelector"] = {"kubernetes.io/hostname": NODE_NAME}
    pod["tolerations"] = [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    if as_root:
        for container in pod["containers"]:
            container.pop("securityContext", None)
    return out


def candidate(world: World, base: RunnableImage, script: str | None, entry: list[str]) -> Any:
    image = app_on(world, base, "1.0.1", script if script is not None else SERVE)
    # No script: an entrypoint that is not in the image, on the same base marks.
    return image if script is not None else dataclasses.replace(image, entrypoint=tuple(entry))


CASES: dict[str, tuple[str | None, list[str], bool, str]] = {
    # app: (selftest script or None, entrypoint when no script, as root, rejection says)
    "pass": (SELFTEST.format(word="ok", code=0), [], False, ""),
    "fail": (SELFTEST.format(word="failed: no database", code=1), [], False, "exit code 1"),
    "noentry": (None, ["/app/smoke"], False, "/app/smoke"),
    "root": (SELFTEST.format(word="ok", code=0), [], True, "CreateContainerConfigError"),
}


def rejection(world: World, policy: str) -> str:
    """The candidate's smokeTest reason once it was rejected, else ""."""
    status = policy_status(world, policy)
    tests = status.get("smokeTests") or []
    if not any(t.get("result") == "Failed" for t in tests):
        return ""
    reasons = (status.get("candidate") or {}).get("reasons") or []
    return next((r for r in reasons if r.startswith("smokeTest:")), "")


def test_the_smoke_gate_runs_the_candidate_in_the_sandbox(
    real_node: RealNode, world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)
    template = readme_smoke_template()
    policies: dict[str, str] = {}
    first: dict[str, str] = {}
    for app, (_, _, as_root, _) in CASES.items():
        first[app] = world.publish(app, "1.0.0", app_on(world, old, "1.0.0", SERVE))
        tagged = f"{world.ref(app)}:1.0.0"
        name = f"{app}-{world.suffix}"
        world.deployment(
            app, tagged, policy=name, replicas=1, extra=on_real_node(tagged, probe=False, app=app)
        )
        # The operator's sandbox: smoke tests run there whatever the template says.
        world.policy(
            app,
            {
                "base": base_spec(world),
                "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
                "validation": {
                    "smokeTest": {
                        "timeout": "90s",
                        "template": on_this_node(template, as_root=as_root),
                    }
                },
            },
        )
        policies[app] = name
    for app in CASES:
        wait_running(world, app, first[app], 1)
    world.publish("base", "1", new)
    digests = {
        app: world.publish(app, "1.0.1", candidate(world, new, script, entry))
        for app, (script, entry, _, _) in CASES.items()
    }
    operator = operator_factory()

    # exit 0: passes, rolls, and the pods run the candidate.
    wait_running(world, "pass", digests["pass"], 1)
    passed = policy_status(world, policies["pass"])["smokeTests"][0]
    assert passed["result"] == "Succeeded", passed
    assert passed["namespace"] == SANDBOX
    found = world.kube.core.list_namespaced_pod(SANDBOX, label_selector=f"job-name={passed['job']}")
    (pod,) = as_dict(world, found)["items"]
    assert pod["spec"]["nodeName"] == NODE_NAME
    log = world.kube.core.read_namespaced_pod_log(pod["metadata"]["name"], SANDBOX)
    assert log.strip() == "selftest ok as uid 65532", "non-root, in the sandbox"
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(digests["pass"])
    # The sandbox: the account with no rights, no token, only the candidate image.
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "imagedrift-smoke"
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec.get("volumes") or [] if "projected" in v], "no token volume"
    assert [c["image"] for c in spec["containers"]] == [f"{world.ref('pass')}@{digests['pass']}"]
    assert not spec.get("initContainers") and not spec.get("hostNetwork")

    for app, (_, _, _, says) in CASES.items():
        if app == "pass":
            continue
        reason = wait_for(
            lambda app=app: rejection(world, policies[app]),  # type: ignore[misc]
            what=f"{app}'s candidate rejected by its smoke test",
            timeout=120,
        )
        assert says in reason, (app, reason)
        assert "pod " in reason, f"{app}: the pod's own words, not only the Job's: {reason}"
        world.wait_event(policies[app], "CandidateRejected", anywhere=True, needle=says, timeout=30)
    noentry = rejection(world, policies["noentry"])
    assert "did not succeed within" not in noentry, "not the deadline: the pod's failure"
    root = rejection(world, policies["root"])
    assert "image will run as root" in root, root
    assert "did not succeed within" not in root, "rejected at once, not at the deadline"

    # Rejected candidates never roll, and each candidate digest ran exactly once: over
    # further checks no second Job, and the pods still run what they ran.
    checks_pass(operator, policies["fail"], 2)
    for app in ("fail", "noentry", "root"):
        assert sorted(running_digests(world, app).values()) == [first[app]], app
    jobs = as_dict(world, BatchV1Api(world.kube.api_client).list_namespaced_job(SANDBOX))
    ran = sorted(
        j["metadata"]["annotations"]["imagedrift.io/candidate"]
        for j in jobs["items"]
        if world.suffix in j["metadata"]["annotations"].get("imagedrift.io/candidate", "")
    )
    assert ran == sorted(f"{world.ref(app)}@{digests[app]}" for app in CASES), ran
