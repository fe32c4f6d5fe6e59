"""The ``imagedrift`` CLI end to end: the operator runs, a base is re-published, and the CLI
(a subprocess, as an SRE runs it) reports status and lineage, plans the rollout without
touching anything, and pauses and resumes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import checks_pass, ok_json
from tests.harness.controlplane import ControlPlane, write_kubeconfig
from tests.harness.operator import OperatorProcess
from tests.harness.procs import free_port, wait_for


def test_status_lineage_plan_pause_resume(
    world: World,
    operator_factory: Callable[..., OperatorProcess],
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    old_base = base_image("v1")
    old_digest = world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1.0.0"))
    name = f"cli-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name, replicas=2)
    policy = world.policy(
        "cli",
        {
            "base": {"image": world.ref("base"), "tag": "1", "interval": "2s", "insecure": True},
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
        },
    )
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate")

    status = ok_json(cli("status", "-o", "json"))
    assert status["kind"] == "PolicyStatusList"
    mine = [i for i in status["items"] if i["name"] == policy]
    assert len(mine) == 1
    assert mine[0]["base"]["digest"] == old_digest
    assert mine[0]["workloads"] == {"optedIn": 1, "upToDate": 1, "drifted": 0, "rollingOut": 0}
    assert (mine[0]["state"], mine[0]["reason"]) == ("Ready", "UpToDate")

    # Suspend, then publish a new base and a rebuild: the operator must hold it back.
    paused = ok_json(cli("pause", policy, "-o", "json"))
    assert (paused["paused"], paused["changed"]) == (True, True)
    assert world.get_policy(policy)["spec"]["rollout"]["suspend"] is True
    assert "already paused" in cli("pause", policy).stdout
    new_base = base_image("v2")
    new_digest = world.publish("base", "1", new_base)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new_base, "1.0.1"))
    target = f"{world.ref('app')}@{rebuilt}"
    world.wait_policy(
        policy,
        lambda b: world.item(policy, "web").get("state") == "Suspended",
        "web held back as Suspended",
    )
    wait_for(
        lambda: rolled_out(world, "web", f"{world.ref('app')}:1.0.0"),
        what="web stable on 1.0.0",
        timeout=60,
    )

    before = world.get_deployment("web")["metadata"]
    policy_before = world.get_policy(policy)["metadata"]
    plan = ok_json(cli("plan", policy, "-o", "json"))
    assert plan["kind"] == "Plan" and plan["suspended"] is True
    assert plan["base"]["digest"] == new_digest
    assert plan["candidate"]["digest"] == rebuilt and plan["candidate"]["verdict"] == "Passed"
    [rollout] = plan["rollouts"]
    assert rollout["workload"] == f"deployment/{world.namespace}/web"
    assert rollout["action"] == "roll"
    assert rollout["containers"] == [
        {"container": "app", "from": f"{world.ref('app')}:1.0.0", "to": target, "tag": "1.0.1"}
    ]
    patched_images = rollout["patch"]["spec"]["template"]["spec"]["containers"]
    assert patched_images == [{"name": "app", "image": target}]
    assert plan["heldBack"] == [] and plan["rollingOut"] == []
    table = cli("plan", policy)
    assert table.returncode == 0, table.stderr
    assert "would patch:" in table.stdout and "planned as if resumed" in table.stdout
    # The dry run wrote nothing: same resourceVersion, same image, same state annotation.
    after = world.get_deployment("web")["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert after.get("annotations") == before.get("annotations")
    assert world.image_of("web") == f"{world.ref('app')}:1.0.0"
    assert world.get_policy(policy)["metadata"]["generation"] == policy_before["generation"]

    lineage = ok_json(cli("lineage", "deploy/web", "-n", world.namespace, "-o", "json"))
    [app] = lineage["containers"]
    assert (app["baseDigest"], app["currentBaseDigest"]) == (old_digest, new_digest)
    assert app["onCurrentBase"] is False and app["state"] == "Suspended"
    assert target in app["reason"] and app["candidate"]["digest"] == rebuilt

    # A workload-level pause is an annotation; it holds the workload on its own, once the
    # policy is resumed, over checks that would otherwise roll it.
    assert ok_json(cli("pause", "deploy/web", "-n", world.namespace, "-o", "json"))["paused"]
    annotations = world.get_deployment("web")["metadata"]["annotations"]
    assert annotations["imagedrift.io/paused"] == "true"
    resumed = ok_json(cli("resume", policy, "-o", "json"))
    assert (resumed["paused"], resumed["changed"]) == (False, True)
    world.wait_policy(
        policy,
        lambda b: world.item(policy, "web").get("state") == "Paused",
        "web held back as Paused",
    )
    checks_pass(operator, policy, 3)
    assert world.image_of("web") == f"{world.ref('app')}:1.0.0", "a paused workload was rolled"
    assert world.item(policy, "web")["state"] == "Paused"
    assert target in world.item(policy, "web")["reason"]
    assert not ok_json(cli("resume", "deploy/web", "-n", world.namespace, "-o", "json"))["paused"]
    assert "imagedrift.io/paused" not in world.get_deployment("web")["metadata"]["annotations"]
    wait_for(lambda: rolled_out(world, "web", target), what="web rolled after resume", timeout=90)
    world.wait_policy(
        policy,
        lambda b: any(
            r.get("result") == "Complete"
            for e in (b.get("status") or {}).get("lineage", [])
            for r in e.get("rollouts", [])
        ),
        "rollout recorded as Complete",
    )
    world.wait_ready(policy, reason="UpToDate")

    status = ok_json(cli("status", policy, "-o", "json"))
    [item] = status["items"]
    assert item["base"]["digest"] == new_digest and item["suspended"] is False
    assert item["workloads"]["upToDate"] == 1 and item["workloads"]["drifted"] == 0

    lineage = ok_json(cli("lineage", "deployment.apps/web", "-n", world.namespace, "-o", "json"))
    [app] = lineage["containers"]
    assert app["image"] == target
    assert app["baseDigest"] == new_digest and app["onCurrentBase"] is True
    [history] = app["history"]
    assert (history["baseDigest"], history["appDigest"], history["verdict"]) == (
        new_digest,
        rebuilt,
        "Passed",
    )
    assert history["result"] == "Complete"
    assert history["previousImage"] == f"{world.ref('app')}:1.0.0"
    assert lineage["state"]["rollout"]["phase"] == "Complete"

    text = cli("lineage", "deploy/web", "-n", world.namespace)
    assert text.returncode == 0, text.stderr
    assert "(current)" in text.stdout and "Complete" in text.stdout
    yaml_out = cli("status", policy, "-o", "yaml")
    assert yaml_out.returncode == 0 and f"name: {policy}" in yaml_out.stdout


def test_errors_exit_codes_and_messages(
    controlplane: ControlPlane,
    crds_installed: None,
    namespace: str,
    tmp_path: Path,
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    missing = cli("status", "no-such-policy")
    assert missing.returncode == 1
    assert "imagepolicy 'no-such-policy' not found" in missing.stderr
    assert missing.stdout == ""

    gone = cli("lineage", "deploy/nope", "-n", namespace)
    assert gone.returncode == 1 and f"deployment/nope -n {namespace} not found" in gone.stderr

    assert cli("plan", "no-such-policy").returncode == 1
    assert cli("pause", "no-such-policy").returncode == 1
    usage = cli("lineage", "pod/web")
    assert usage.returncode == 1 and "is not a workload" in usage.stderr
    assert cli("frobnicate").returncode == 1

    # An API server nobody listens on (loopback, a free port): an API error, exit 2.
    dead = write_kubeconfig(
        tmp_path / "dead.kubeconfig",
        server=f"http://127.0.0.1:{free_port()}",
        ca_pem=None,
        user={"token": "x"},
    )
    down = cli("status", kubeconfig=dead)
    assert down.returncode == 2 and "cannot reach the API server" in down.stderr
