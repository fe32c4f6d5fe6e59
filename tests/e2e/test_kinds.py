"""StatefulSets, DaemonSets and CronJobs are rolled like Deployments, end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.e2e.scenario import World
from tests.e2e.support import base_spec, drift, rollouts
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for


def _pod_template(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def test_statefulset_daemonset_and_cronjob_are_updated(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    _, new, target = drift(world, "app")
    previous = f"{world.ref('app')}:1.0.0"
    name = f"kinds-{world.suffix}"
    meta = {"labels": {"imagedrift.io/policy": name}}
    ns = world.namespace
    world.kube.apps.create_namespaced_stateful_set(
        ns,
        client.V1StatefulSet.model_validate(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db", **meta},
                "spec": {
                    "replicas": 2,
                    "serviceName": "db",
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": _pod_template("db", previous),
                },
            }
        ),
    )
    world.kube.apps.create_namespaced_daemon_set(
        ns,
        client.V1DaemonSet.model_validate(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "agent", **meta},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": _pod_template("agent", previous),
                },
            }
        ),
    )
    batch = client.BatchV1Api(world.kube.api_client)
    batch.create_namespaced_cron_job(
        ns,
        client.V1CronJob.model_validate(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "report", **meta},
                "spec": {
                    "schedule": "0 3 * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": [{"name": "app", "image": previous}],
                                }
                            }
                        }
                    },
                },
            }
        ),
    )
    policy = world.policy(
        "kinds", {"base": base_spec(world), "app": {"tags": {"semver": {"range": ">=1.0.0"}}}}
    )
    world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    operator_factory()

    def images() -> dict[str, str | None]:
        sts = world.kube.apps.read_namespaced_stateful_set("db", ns)
        ds = world.kube.apps.read_namespaced_daemon_set("agent", ns)
        cj = batch.read_namespaced_cron_job("report", ns)
        job = cj.spec.job_template.spec
        # Pod specs the API server always returns for these objects.
        assert sts.spec.template.spec is not None and ds.spec.template.spec is not None
        assert job is not None and job.template.spec is not None
        return {
            "db": sts.spec.template.spec.containers[0].image,
            "agent": ds.spec.template.spec.containers[0].image,
            "report": job.template.spec.containers[0].image,
        }

    wait_for(
        lambda: images() == {"db": target, "agent": target, "report": target},
        what="all three kinds patched to the rebuilt digest",
        timeout=90,
    )
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    done = {r["workload"]: r["result"] for r in rollouts(world, policy)}
    assert done == {
        f"statefulset/{ns}/db": "Complete",
        f"daemonset/{ns}/agent": "Complete",
        f"cronjob/{ns}/report": "Complete",
    }, done
    sts = world.kube.apps.read_namespaced_stateful_set("db", ns)
    assert sts.status is not None
    assert sts.status.updated_replicas == 2 and sts.status.ready_replicas == 2
    ds = world.kube.apps.read_namespaced_daemon_set("agent", ns)
    assert ds.status is not None
    assert ds.status.updated_number_scheduled == ds.status.desired_number_scheduled >= 1
