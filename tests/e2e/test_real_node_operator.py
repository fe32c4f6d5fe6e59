"""The operator from its own image, installed with ``kubectl apply --server-side -k`` of a
test overlay of ``deploy/`` (``tests/deploy/real-node``), running on the real node.

The image is built from the repository's Dockerfile by buildah on a Python base made from
Debian packages (``operator_image_ref``) and pulled by the node's containerd from the
loopback registry. The two replicas run as deploy/base has them: in ``imagedrift-system``
under Pod Security "restricted" (enforced), read-only root filesystem, electing the one that
works through the Lease. What a user would check, checked here: the pods and their
security, the Lease, the kubelet's liveness probes, ``/metrics`` through the Service, a base
push rolling a real workload to the rebuilt digest, and the standby finishing a rollout
whose leader was deleted half-way, without patching the workload again.

This file's name starts with ``test_real_node`` so that it shares a test worker with the
other real-node files (tests/conftest.py: one real node per machine).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagedrift.registry.push import Layer, base_marks
from tests.e2e.on_node import running_digests as pods_running
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, rollouts
from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.in_cluster import NAMESPACE, InClusterOperator, metrics_samples
from tests.harness.node import NODE_NAME, TAINT_KEY, RealNode
from tests.harness.procs import wait_for
from tests.harness.registry import Registry
from tests.harness.runnable_images import RunnableImage, busybox_image

pytestmark = pytest.mark.usefixtures("crds_installed")

START_TIMEOUT = 180.0  # pull of the image (once) and the operator's start, both replicas
SERVE = "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1 & wait $!; done"


@pytest.fixture(scope="module")
def in_cluster(
    controlplane: ControlPlane,
    kube: Kube,
    real_node: RealNode,
    registry: Registry,
    operator_image_ref: str,
    deploy_rbac: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InClusterOperator]:
    """The operator Deployment from deploy/ (via the test overlay), both replicas Ready."""
    operator = InClusterOperator(
        controlplane,
        kube,
        real_node,
        operator_image_ref,
        registry.host,
        tmp_path_factory.mktemp("in-cluster"),
    )
    operator.install()
    try:
        wait_for(
            lambda: len(operator.ready_pods()) == 2,
            what="both operator replicas Ready on the real node",
            timeout=START_TIMEOUT,
            interval=0.5,
        )
        yield operator
    except TimeoutError as exc:
        exc.add_note(f"operator logs: {operator.logs()}")
        raise
    finally:
        operator.uninstall()


def _name(pod: client.V1Pod) -> str:
    return str(pod.metadata.name if pod.metadata else "")


def _plain(kube: Kube, obj: object) -> dict[str, Any]:
    """An API object as the JSON the API server sent."""
    return dict(kube.api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]


def _pod_metrics(operator: InClusterOperator, pod: str) -> dict[Any, float]:
    return metrics_samples(operator.pod_metrics(pod))


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, found), value in samples.items()
        if sample == name and set(labels.items()) <= set(found)
    )


def test_two_replicas_run_under_restricted_with_a_read_only_root(
    in_cluster: InClusterOperator, kube: Kube, operator_image_ref: str
) -> None:
    namespace = kube.core.read_namespace(NAMESPACE)
    labels = (namespace.metadata.labels if namespace.metadata else None) or {}
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"

    digest = operator_image_ref.rsplit("@", 1)[1]
    ready = in_cluster.ready_pods()
    assert len(ready) == 2
    for pod in ready:
        body = _plain(kube, pod)
        spec, status = body["spec"], body["status"]
        assert spec["nodeName"] == NODE_NAME
        assert not spec.get("hostNetwork")
        assert spec["securityContext"]["runAsUser"] == 65532
        (operator,) = [c for c in spec["containers"] if c["name"] == "operator"]
        assert operator["securityContext"]["readOnlyRootFilesystem"] is True
        (running,) = [c for c in status["containerStatuses"] if c["name"] == "operator"]
        assert running["ready"] and "running" in running["state"]
        assert running["restartCount"] == 0
        # What the node's containerd pulled: the image pushed, by digest.
        assert running["imageID"].rsplit("@", 1)[1] == digest
        # An address of the pod network, in the pod's own network namespace.
        assert status["podIP"].startswith("10.247.0.")

    # Inside the container: uid 65532, and the root filesystem refuses a write.
    probe = (
        "import errno, os\n"
        "try:\n    open('/probe', 'w')\nexcept OSError as e:\n"
        "    print(os.getuid(), errno.errorcode[e.errno])\n"
    )
    for pod in ready:
        result = in_cluster.controlplane.kubectl(
            "exec", "-n", NAMESPACE, _name(pod), "-c", "operator", "--", "python", "-c", probe
        )
        assert result.stdout.split() == ["65532", "EROFS"], result

    # Why the overlay has no host network: "restricted" refuses it outright.
    deployment = _plain(kube, kube.apps.read_namespaced_deployment("imagedrift", NAMESPACE))
    template = deployment["spec"]["template"]
    pod_body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "probe-", "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "hostNetwork": True},
    }
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_pod(
            NAMESPACE, client.V1Pod.model_validate(pod_body), dry_run="All"
        )
    assert refused.value.status == 403 and "hostNetwork=true" in str(refused.value.body)


def kubelet_get(node: RealNode, controlplane: ControlPlane, kube: Kube, path: str) -> str:
    """GET ``path`` from the node's kubelet on 127.0.0.1 with the admin's client
    certificate (the API server's node proxy refuses a node reached as ``localhost``)."""
    pki = controlplane.pki
    assert pki is not None and node.workdir is not None
    body = kube.core.read_node(NODE_NAME)
    port = body.status.daemon_endpoints.kubelet_endpoint.port  # type: ignore[union-attr]
    context = ssl.create_default_context(
        cafile=str(node.workdir / "kubelet" / "pki" / "kubelet.crt")
    )
    context.check_hostname = False  # its self-signed certificate names the host, not 127.0.0.1
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    response = httpx.get(f"https://127.0.0.1:{port}{path}", verify=context, timeout=10)
    response.raise_for_status()
    return response.text


def test_one_replica_holds_the_lease_and_liveness_passes(
    in_cluster: InClusterOperator, real_node: RealNode, controlplane: ControlPlane
) -> None:
    names = {_name(pod) for pod in in_cluster.ready_pods()}
    leader = wait_for(
        lambda: in_cluster.leader() if in_cluster.leader() in names else None,
        what="one operator replica named in the Lease",
        timeout=60,
    )
    (standby,) = names - {leader}
    assert _value(_pod_metrics(in_cluster, leader), "imagedrift_leader") == 1
    assert _value(_pod_metrics(in_cluster, standby), "imagedrift_leader") == 0

    # The kubelet's own count of liveness probes that succeeded, per replica (its
    # /metrics/probes, through the API server's node proxy).
    def liveness_passed() -> bool:
        samples = metrics_samples(
            kubelet_get(real_node, controlplane, in_cluster.kube, "/metrics/probes")
        )
        return all(
            _value(
                samples,
                "prober_probe_total",
                namespace=NAMESPACE,
                pod=pod,
                container="operator",
                probe_type="Liveness",
                result="successful",
            )
            >= 1
            for pod in names
        )

    wait_for(liveness_passed, what="a successful liveness probe of each replica", timeout=90)
    for pod in in_cluster.ready_pods():
        statuses = _plain(in_cluster.kube, pod)["status"]["containerStatuses"]
        assert [c["restartCount"] for c in statuses if c["name"] == "operator"] == [0]


def test_metrics_answer_through_the_service(in_cluster: InClusterOperator, kube: Kube) -> None:
    # No kube-proxy here: a ClusterIP routes nowhere, so the API server's service proxy
    # (which picks one of the Service's endpoints) stands in for a scraper.
    slices = client.DiscoveryV1Api(kube.api_client).list_namespaced_endpoint_slice(
        NAMESPACE, label_selector="kubernetes.io/service-name=imagedrift"
    )
    addresses = {
        address
        for item in _plain(kube, slices)["items"]
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    }
    assert addresses == {_plain(kube, pod)["status"]["podIP"] for pod in in_cluster.ready_pods()}
    text = in_cluster.service_metrics()
    names = {name for name, _ in metrics_samples(text)}
    assert "imagedrift_leader" in names, text[:2000]


# -- a base push, rolled by the in-cluster operator, with a fail-over half-way ---------


def runnable_base(fixes: str) -> RunnableImage:
    return busybox_image().run(["/bin/sh"], Layer.from_files({"etc/fixes": fixes}))


def app_on(world: World, base: RunnableImage, version: str, warmup: int = 0) -> RunnableImage:
    """An app built FROM ``base`` that turns Ready ``warmup`` seconds after it starts."""
    script = SERVE.replace("touch /tmp/ready", f"sleep {warmup}; touch /tmp/ready")
    return base.run(
        ["/bin/sh", "-c", script],
        Layer.from_files({"app/version": version}),
        annotations=base_marks(base.digest, f"{world.ref('base')}:1"),
    )


def on_real_node(image: str) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": image,
                        "readinessProbe": {
                            "exec": {"command": ["/bin/busybox", "cat", "/tmp/ready"]},
                            "periodSeconds": 1,
                        },
                    }
                ],
                "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 2,
                "automountServiceAccountToken": False,
            },
        },
    }


def running_digests(world: World, app: str) -> list[str]:
    """The digest each Ready pod of ``app`` runs, as the kubelet reports it (imageID)."""
    return sorted(pods_running(world, app).values())


def revisions(kube: Kube, namespace: str) -> dict[str, str]:
    """ReplicaSet revision -> its pod template's image, for Deployment ``web``."""
    found = kube.apps.list_namespaced_replica_set(namespace, label_selector="app=web")
    return {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs["spec"]["template"][
            "spec"
        ]["containers"][0]["image"]
        for rs in _plain(kube, found)["items"]
    }


def test_a_base_push_rolls_a_workload_and_the_standby_finishes_it_after_the_leader_goes(
    in_cluster: InClusterOperator, world: World, kube: Kube
) -> None:
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)
    first = world.publish("app", "1.0.0", app_on(world, old, "1.0.0"))
    tagged = f"{world.ref('app')}:1.0.0"
    world.deployment("web", tagged, policy=None, replicas=2, extra=on_real_node(tagged))
    wait_for(
        lambda: running_digests(world, "web") == [first] * 2,
        what="web's 2 pods Ready on 1.0.0",
        timeout=120,
    )
    # A settling window long enough that the rollout is still open when the leader goes.
    policy = world.policy(
        "inc",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
            "rollout": {"settleTime": "20s", "verifyTimeout": "3m"},
        },
    )
    kube.apps.patch_namespaced_deployment(
        "web", world.namespace, {"metadata": {"labels": {"imagedrift.io/policy": policy}}}
    )
    world.wait_ready(policy, reason="UpToDate", timeout=120)

    # The base is re-published and the app rebuilt on it; the rebuild takes 10 s to turn
    # Ready, so the rollout is open for at least that long once the workload is patched.
    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", app_on(world, new, "1.0.1", warmup=10))
    target = f"{world.ref('app')}@{rebuilt}"

    # Half-way: the leader has patched the workload and the rollout is not yet complete.
    wait_for(
        lambda: world.image_of("web") == target,
        what="web patched to the rebuilt digest",
        timeout=120,
    )
    leader = in_cluster.leader()
    started = rollouts(world, policy)
    assert [r.get("result") for r in started] != ["Complete"], started
    assert rebuilt not in running_digests(world, "web"), "the rollout was over already"
    standby = next(_name(p) for p in in_cluster.ready_pods() if _name(p) != leader)
    deleted_at = time.monotonic()
    kube.core.delete_namespaced_pod(leader, NAMESPACE)

    # The standby takes the Lease and finishes the rollout.
    wait_for(
        lambda: in_cluster.leader() == standby, what=f"{standby} holding the Lease", timeout=60
    )
    takeover = time.monotonic() - deleted_at
    wait_for(
        lambda: running_digests(world, "web") == [rebuilt] * 2,
        what="web's 2 pods Ready on the rebuilt digest (imageID)",
        timeout=180,
    )
    world.wait_ready(policy, reason="UpToDate", timeout=120)
    done = [r for r in rollouts(world, policy) if r["workload"].endswith(f"/{world.namespace}/web")]
    assert [r["result"] for r in done] == ["Complete"], done

    # No second patch, over checks the standby itself finished after the rollout completed:
    # one RolloutStarted, two ReplicaSet revisions (1.0.0 and the rebuilt digest), the
    # workload still on the rebuilt digest.
    def checks() -> float:
        samples = _pod_metrics(in_cluster, standby)
        return _value(samples, "imagedrift_checks_total", policy=policy)

    # An up-to-date policy is checked when something changes: a label nobody owns is.
    for touch in range(2):
        before = checks()
        kube.apps.patch_namespaced_deployment(
            "web", world.namespace, {"metadata": {"labels": {"example.test/touched": str(touch)}}}
        )
        wait_for(
            lambda before=before: checks() > before,  # type: ignore[misc]
            what=f"check {touch + 1} of the policy by the new leader after the rollout",
            timeout=60,
        )
    started_events = [e for e in world.events("web") if e[1] == "RolloutStarted"]
    assert len(started_events) == 1, started_events
    assert revisions(kube, world.namespace) == {"1": tagged, "2": target}
    assert world.image_of("web") == target
    print(f"leader {leader} deleted; {standby} held the Lease {takeover:.1f}s later")
