"""The README's rollout promises end to end: a StatefulSet's ``partition`` and ``OnDelete``
update strategies, and ``maxConcurrent`` bounding how many workloads roll at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.promised import (
    as_dict,
    detail_rows,
    get_statefulset,
    pod_images,
    pod_uids,
    pods_ready,
    rollout_record,
    statefulset,
    wait_lineage_row,
)
from tests.e2e.scenario import World, rolled_out
from tests.e2e.support import base_spec, drift, publish_rebuild, rollouts, touched_checks
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}


def _all_ready(world: World, app: str, image: str, replicas: int) -> None:
    wait_for(
        lambda: (
            sorted(pod_images(world, app).values()) == [image] * replicas
            and all(pods_ready(world, app).values())
        ),
        what=f"{replicas} ready pods of {app} on {image}",
        timeout=60,
    )


def test_a_partitioned_statefulset_is_complete_once_the_ordinals_from_the_partition_up_run_it(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: "A StatefulSet with ``partition: p`` is complete when the ordinals from ``p``
    up are updated and every pod is ready." With partition 2 of 3 replicas the rollout is
    recorded Complete with only ``db-2`` on the candidate (the lineage row, the
    ``RolloutComplete`` Event and the policy say so), the ordinals below the partition keep
    the old image, and imagedrift leaves the partition where the owner set it."""
    _, new, target = drift(world, "app")
    previous = f"{world.ref('app')}:1.0.0"
    name = f"partition-{world.suffix}"
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    statefulset(world, "db", previous, policy=name, replicas=3, strategy=strategy)
    _all_ready(world, "db", previous, 3)
    policy = world.policy("partition", {"base": base_spec(world), "app": SEMVER})
    publish_rebuild(world, "app", new)
    operator = operator_factory()

    workload = f"statefulset/{world.namespace}/db"
    row = wait_lineage_row(world, policy, workload, "Complete")
    assert row["reason"] == "1 of 3 replicas updated (partition 2 holds the rest)", row
    assert row["previousImage"] == previous
    images = pod_images(world, "db")
    assert images == {"db-0": previous, "db-1": previous, "db-2": target}, images
    assert all(pods_ready(world, "db").values()), pods_ready(world, "db")
    world.wait_event("db", "RolloutComplete", needle="partition 2 holds the rest")
    world.wait_ready(policy, reason="UpToDate")

    # Over further checks the partition stays the owner's: not moved, no pod replaced.
    touched_checks(world, operator, policy, "StatefulSet", "db")
    sts = get_statefulset(world, "db")
    assert _image(sts) == target
    assert sts["spec"]["updateStrategy"] == strategy
    assert pod_images(world, "db") == images
    assert [r["result"] for r in rollouts(world, policy)] == ["Complete"]


def test_an_on_delete_statefulset_is_recorded_applied_not_verified(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: "with ``OnDelete`` … the change is recorded as 'applied, not verified' (pods
    … take the new image when they are created)." The template is patched and the rollout
    recorded at once with that reason, while every pod keeps running (imagedrift deletes
    none); a pod deleted afterwards comes back on the candidate."""
    _, new, target = drift(world, "app")
    previous = f"{world.ref('app')}:1.0.0"
    name = f"ondelete-{world.suffix}"
    statefulset(world, "cache", previous, policy=name, replicas=2, strategy={"type": "OnDelete"})
    _all_ready(world, "cache", previous, 2)
    uids = pod_uids(world, "cache")
    policy = world.policy("ondelete", {"base": base_spec(world), "app": SEMVER})
    publish_rebuild(world, "app", new)
    operator = operator_factory()

    row = wait_lineage_row(world, policy, f"statefulset/{world.namespace}/cache", "Complete")
    assert row["reason"].startswith("applied, not verified: updateStrategy OnDelete"), row
    assert _image(get_statefulset(world, "cache")) == target
    world.wait_event("cache", "RolloutComplete", needle="applied, not verified")
    world.wait_ready(policy, reason="UpToDate")

    # Over further checks imagedrift deletes no pod: every one still runs the old image.
    touched_checks(world, operator, policy, "StatefulSet", "cache")
    assert pod_uids(world, "cache") == uids, "no pod was replaced"
    assert pod_images(world, "cache") == {"cache-0": previous, "cache-1": previous}

    world.kube.core.delete_namespaced_pod("cache-0", world.namespace)
    wait_for(
        lambda: pod_images(world, "cache") == {"cache-0": target, "cache-1": previous},
        what="the re-created pod on the candidate",
        timeout=60,
    )


def test_max_concurrent_bounds_the_workloads_rolling_at_once(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """README: ``rollout.maxConcurrent`` (the CRD: "At most this many workloads rolling at
    once"); a held workload is ``Waiting``, "held by … ``maxConcurrent``". Five Deployments,
    each rollout lasting at least ``minReadySeconds`` (4 s), ``maxConcurrent: 2``: sampled
    from their ReplicaSets throughout, never more than two are moving onto the candidate,
    two do move side by side, the others say they wait for ``maxConcurrent``, and all five
    end on the candidate."""
    _, new, target = drift(world, "app")
    previous = f"{world.ref('app')}:1.0.0"
    name = f"concurrent-{world.suffix}"
    names = [f"c{i}" for i in range(5)]
    for n in names:
        world.deployment(n, previous, policy=name, replicas=1, extra={"minReadySeconds": 4})
    wait_for(
        lambda: all(rolled_out(world, n, previous) for n in names),
        what="the five Deployments available",
        timeout=60,
    )
    policy = world.policy(
        "concurrent",
        {"base": base_spec(world), "app": SEMVER, "rollout": {"maxConcurrent": 2}},
    )
    publish_rebuild(world, "app", new)

    rolling_seen: list[set[str]] = []  # per sample: Deployments mid-rollout on the candidate
    held_reasons: set[str] = set()

    def sample() -> bool:
        rolling = _rolling_onto(world, target)
        rolling_seen.append(rolling)
        bodies = as_dict(world, world.kube.apps.list_namespaced_deployment(world.namespace))
        mine: dict[str, dict[str, Any]] = {b["metadata"]["name"]: b for b in bodies["items"]}
        for body in mine.values():
            held_reasons.update(
                r["reason"] for r in detail_rows(body) if r.get("state") == "Waiting"
            )
        return not rolling and all(
            _image(mine[n]) == target and rollout_record(mine[n]).get("phase") == "Complete"
            for n in names
        )

    operator_factory()
    wait_for(sample, what="all five rolled, sampled throughout", timeout=120, interval=0.2)

    assert max(len(s) for s in rolling_seen) == 2, [sorted(s) for s in rolling_seen if s]
    assert "maxConcurrent 2 rollouts in flight" in held_reasons, held_reasons
    done = [r for r in rollouts(world, policy) if r["result"] == "Complete"]
    assert sorted(r["workload"].rsplit("/", 1)[1] for r in done) == names, done
    world.wait_ready(policy, reason="UpToDate")


def _image(body: dict[str, Any]) -> str:
    return str(body["spec"]["template"]["spec"]["containers"][0]["image"])


def _rolling_onto(world: World, target: str) -> set[str]:
    """The Deployments whose pods are moving onto ``target`` right now, read from their
    ReplicaSets in one list (a consistent snapshot): a ReplicaSet of ``target`` exists and
    it is not yet fully available, or an older ReplicaSet still has pods. (A Deployment's
    own ``observedGeneration`` is no measure: every annotation write bumps its generation.)"""
    sets = as_dict(world, world.kube.apps.list_namespaced_replica_set(world.namespace))["items"]
    owned: dict[str, list[dict[str, Any]]] = {}
    for rs in sets:
        for owner in rs["metadata"].get("ownerReferences") or []:
            if owner.get("kind") == "Deployment":
                owned.setdefault(str(owner["name"]), []).append(rs)
    rolling: set[str] = set()
    for name, replica_sets in owned.items():
        new = [rs for rs in replica_sets if _image(rs) == target]
        if not new:
            continue
        want = int(
            (new[0]["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/desired-replicas", new[0]["spec"].get("replicas") or 0
            )
        )
        available = int((new[0].get("status") or {}).get("availableReplicas") or 0)
        leftover = sum(
            int((rs.get("status") or {}).get("replicas") or 0)
            for rs in replica_sets
            if _image(rs) != target
        )
        if available < want or leftover:
            rolling.add(name)
    return rolling
