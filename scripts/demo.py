"""The drift loop, shown step by step on a local control plane and registry.

    make demo

Starts etcd, kube-apiserver, controller-manager, scheduler and kwok on 127.0.0.1, a CNCF
registry on a free loopback port and a real node (kubelet + containerd + runc) whose pods
really run, publishes a base image and an app built on it, runs the operator,
re-publishes the base with a fix, publishes the rebuilt app, and shows the operator
detecting the drift, choosing and validating the candidate, rolling the opted-in
Deployment to the new digest, the node's pods running exactly that digest, and what
`kubectl get imagepolicies` and the lineage say. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.controlplane import ControlPlane  # noqa: E402
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode  # noqa: E402
from tests.harness.operator import OperatorProcess  # noqa: E402
from tests.harness.procs import wait_for  # noqa: E402
from tests.harness.registry import Registry  # noqa: E402
from tests.harness.runnable_images import busybox_image  # noqa: E402

from imagedrift.core.refs import short_digest  # noqa: E402
from imagedrift.registry.push import LINUX_ARM64, Image, Index, Layer, base_marks, push  # noqa: E402

NS = "shop"
POLICY = "python-base"
BOLD, DIM, GREEN, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 4
)


def step(number: int, text: str) -> None:
    print(f"\n{BOLD}[{number}] {text}{RESET}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}")
    sys.stdout.flush()


def base(fix: str) -> Index:
    """The "python" base for two platforms. The linux/amd64 image really runs on the node
    (Debian's static busybox, with ``/app/start`` as its command, as a base image's CMD
    runs what the app adds); the linux/arm64 one is never pulled here."""
    files = (
        Layer.from_files({"etc/os-release": "ID=demo\n"}),
        Layer.from_files({"usr/lib/libssl": fix}),
    )
    runnable = busybox_image().run(["/bin/sh", "/app/start"], *files)
    return Index.of(runnable, Image(layers=files, platform=LINUX_ARM64))


def app_layer(version: str) -> Layer:
    # sh as PID 1 ignores SIGTERM unless trapped: exit at once when the pod is replaced.
    script = (
        f"trap 'exit 0' TERM; echo 'shop {version} serving'; touch /tmp/ready\n"
        "while true; do sleep 1 & wait $!; done\n"
    )
    return Layer.from_files({"app/start": script})


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="imagedrift-demo-"))
    step(
        1,
        "Start a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok),"
        " a registry and a real node (kubelet + containerd + runc)",
    )
    cp = ControlPlane.from_env()
    registry = Registry(workdir / "registry")
    node: RealNode | None = None
    operator: OperatorProcess | None = None
    try:
        cp.start()
        registry.start()
        node = RealNode(cp, registry).start()
        show(
            f"control plane ready in {cp.startup_seconds:.1f}s at {cp.server}; "
            f"registry at {registry.host}; node {NODE_NAME} Ready in {node.startup_seconds:.1f}s"
        )

        def kubectl(*args: str) -> str:
            return cp.kubectl(*args).stdout

        kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/imagepolicies.imagedrift.io",
        )
        kubectl("create", "namespace", "imagedrift-system")
        kubectl("create", "namespace", NS)

        step(
            2,
            "Publish base python:3.12-slim (linux/amd64 + linux/arm64)"
            " and the app shop:1.0.0 built on it",
        )
        client = registry.client()
        old = base("openssl 3.0.13")
        old_digest = push(client, "library/python", old, "3.12-slim")
        app_v1 = old.derive(
            app_layer("1.0.0"),
            annotations=base_marks(old_digest, f"{registry.host}/library/python:3.12-slim"),
        )
        push(client, "team/shop", app_v1, "1.0.0")
        show(f"{registry.host}/library/python:3.12-slim  -> {short_digest(old_digest)}")
        show(
            f"{registry.host}/team/shop:1.0.0          -> {short_digest(app_v1.digest)}"
            " (annotated base.digest)"
        )

        step(
            3,
            f"Deploy shop (3 replicas) on the node, opted in with the label "
            f"imagedrift.io/policy={POLICY}",
        )
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "shop",
                "namespace": NS,
                "labels": {"app": "shop", "imagedrift.io/policy": POLICY},
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {
                    "metadata": {"labels": {"app": "shop"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "shop",
                                "image": f"{registry.host}/team/shop:1.0.0",
                                "readinessProbe": {
                                    "exec": {"command": ["/bin/busybox", "cat", "/tmp/ready"]},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                        # The demo's node (kwok's fake nodes run nothing).
                        "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                        "tolerations": [
                            {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
                        ],
                        "terminationGracePeriodSeconds": 5,
                    },
                },
            },
        }
        cp.kubectl("apply", "-f", "-", input=json.dumps(deployment))
        kubectl("-n", NS, "rollout", "status", "deployment/shop", "--timeout=120s")
        show(kubectl("-n", NS, "get", "deployment", "shop", "-o", "wide"))
        show(pods(kubectl))

        step(4, "Declare the ImagePolicy and start the operator")
        policy = {
            "apiVersion": "imagedrift.io/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "base": {
                    "image": f"{registry.host}/library/python",
                    "tag": "3.12-slim",
                    "interval": "5s",
                    "insecure": True,
                },
                "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
                # New pods must stay up this long, no container restarting, to be complete.
                "rollout": {"settleTime": "10s"},
            },
        }
        show(json.dumps(policy["spec"], indent=2))
        cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
        operator = OperatorProcess(cp.kubeconfig, workdir / "operator").start()
        wait_ready(cp, "UpToDate")
        show(kubectl("get", "imagepolicies"))

        step(5, "The base is re-published with a security fix (same tag, new digest)")
        new = base("openssl 3.0.15")
        new_digest = push(client, "library/python", new, "3.12-slim")
        show(f"library/python:3.12-slim  {short_digest(old_digest)} -> {short_digest(new_digest)}")
        wait_ready(cp, "WaitingForRebuild")
        show(kubectl("get", "imagepolicies"))
        item = status(cp)["workloads"]["items"][0]
        show(f"{item['workload']} [{item['container']}]: {item['state']}: {item['reason']}")

        step(6, "The app's pipeline publishes shop:1.0.1, rebuilt on the new base")
        app_v2 = new.derive(
            app_layer("1.0.1"),
            annotations=base_marks(new_digest, f"{registry.host}/library/python:3.12-slim"),
        )
        rebuilt = push(client, "team/shop", app_v2, "1.0.1")
        show(f"{registry.host}/team/shop:1.0.1 -> {short_digest(rebuilt)}")
        target = f"{registry.host}/team/shop@{rebuilt}"
        wait_for(lambda: image(cp) == target, what="the operator to patch shop", timeout=120)
        # The check patches the workload first and writes the policy's status after it.
        wait_for(
            lambda: (status(cp).get("candidate") or {}).get("digest") == rebuilt,
            what="the policy's status to name the candidate",
            timeout=30,
        )
        show(f"candidate chosen and validated: {json.dumps(status(cp).get('candidate'), indent=2)}")
        kubectl("-n", NS, "rollout", "status", "deployment/shop", "--timeout=120s")
        wait_ready(cp, "UpToDate")
        show(kubectl("-n", NS, "get", "deployment", "shop", "-o", "wide"))
        show(kubectl("-n", NS, "get", "replicasets", "-o", "wide"))

        step(7, "What the node runs: every pod's imageID (the digest the kubelet pulled)")
        show("$ kubectl -n shop get pods -o custom-columns=...")
        show(pods(kubectl))
        image_ids = set(
            pods(
                kubectl, "jsonpath={range .items[*]}{.status.containerStatuses[0].imageID} {end}"
            ).split()
        )
        if image_ids != {f"{registry.host}/team/shop@{rebuilt}"}:
            raise SystemExit(f"the pods run {sorted(image_ids)}, not the rolled {target}")
        show(f"every pod runs {short_digest(rebuilt)}, the digest imagedrift rolled")

        step(8, "What an SRE sees")
        show("$ kubectl get imagepolicies -o wide")
        show(kubectl("get", "imagepolicies", "-o", "wide"))
        show("$ kubectl get imagepolicy python-base -o jsonpath='{.status.lineage}'")
        show(json.dumps(status(cp)["lineage"], indent=2))
        show("$ kubectl -n shop get events --field-selector involvedObject.name=shop")
        show(
            kubectl(
                "-n",
                NS,
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=shop",
                "-o",
                "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
            )
        )
        cli = subprocess.run(
            [sys.executable, "-m", "imagedrift.cli", "lineage", "deploy/shop", "-n", NS],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
            timeout=60,
        )
        if cli.returncode == 0:
            show("$ imagedrift lineage deploy/shop -n shop")
            show(cli.stdout)
        print(
            f"\n{GREEN}{BOLD}Done: shop runs the rebuilt image pinned by digest, "
            f"on base {short_digest(new_digest)}.{RESET}"
        )
        return 0
    finally:
        if operator is not None:
            operator.stop()
        if node is not None:
            node.stop()
        registry.close()
        cp.stop()


POD_COLUMNS = (
    "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,"
    "READY:.status.containerStatuses[0].ready,IMAGEID:.status.containerStatuses[0].imageID"
)


def pods(kubectl: Any, output: str = POD_COLUMNS) -> str:
    """The shop's pods, as ``kubectl get pods -o <output>`` prints them."""
    return str(kubectl("-n", NS, "get", "pods", "-l", "app=shop", "-o", output))


def status(cp: ControlPlane) -> dict[str, Any]:
    body = json.loads(cp.kubectl("get", "imagepolicy", POLICY, "-o", "json").stdout)
    return dict(body.get("status") or {})


def image(cp: ControlPlane) -> str:
    return cp.kubectl(
        "-n",
        NS,
        "get",
        "deployment",
        "shop",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ).stdout


def wait_ready(cp: ControlPlane, reason: str) -> None:
    def ready() -> bool:
        conds = {c["type"]: c for c in status(cp).get("conditions") or []}
        return conds.get("Ready", {}).get("reason") == reason

    started = time.monotonic()
    wait_for(ready, what=f"policy Ready reason {reason}", timeout=120, interval=0.5)
    print(f"    {DIM}(policy reached {reason} after {time.monotonic() - started:.1f}s){RESET}")


if __name__ == "__main__":
    sys.exit(main())
