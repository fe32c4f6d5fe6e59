"""When the pods of a tag-referenced container are read again (``engine.pulls``), and which
workload changes queue the check that reads them (``core.workload_changes.relevant``)."""

from __future__ import annotations

from typing import Any

import pytest

from imagedrift.core.workload_changes import relevant
from imagedrift.engine.pulls import PullWatch


def test_unknown_is_unchanged_then_a_new_resource_version_is_a_change() -> None:
    watch = PullWatch()
    assert not watch.changed("deployment/ns/web", "app", "10"), "after a restart: trusted"
    assert not watch.changed("deployment/ns/web", "app", "10")
    assert watch.changed("deployment/ns/web", "app", "11")
    watch.read("deployment/ns/web", "app", "11")
    assert not watch.changed("deployment/ns/web", "app", "11")
    # Containers are apart: reading one does not mark the other read.
    assert watch.changed("deployment/ns/web", "app", "12")
    assert not watch.changed("deployment/ns/web", "sidecar", "12")


def test_memory_is_bounded_oldest_first() -> None:
    watch = PullWatch(limit=2)
    for name in ("a", "b", "c"):
        watch.read(name, "app", "1")
    assert not watch.changed("a", "app", "2"), "forgotten, so unknown again"
    assert watch.changed("c", "app", "2")


def deployment(
    status: dict[str, Any],
    generation: int = 3,
    image: str = "reg.example/shop/web:1.4",
    replicas: int = 2,
) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"imagedrift.io/policy": "p"}, "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}},
        },
        "status": status,
    }


SETTLED = {
    "observedGeneration": 3,
    "replicas": 2,
    "updatedReplicas": 2,
    "readyReplicas": 2,
    "availableReplicas": 2,
}


@pytest.mark.parametrize(
    ("label", "before", "after", "queued"),
    [
        ("a status field that changes nothing", SETTLED, {**SETTLED, "collisionCount": 1}, False),
        ("a pod replaced: one not available", SETTLED, {**SETTLED, "availableReplicas": 1}, True),
        ("the replaced pod is up again", {**SETTLED, "availableReplicas": 1}, SETTLED, True),
        (
            "counts that move while unsettled",
            {**SETTLED, "availableReplicas": 0},
            {**SETTLED, "availableReplicas": 1},
            False,
        ),
        (
            "a restart's new ReplicaSet observed",
            {**SETTLED, "observedGeneration": 2},
            SETTLED,
            True,
        ),
    ],
)
def test_status_queues_a_check_only_when_the_pods_settle_or_unsettle(
    label: str, before: dict[str, Any], after: dict[str, Any], queued: bool
) -> None:
    assert (relevant(deployment(before)) != relevant(deployment(after))) is queued


def test_only_pods_from_a_tag_are_worth_a_check_when_they_settle() -> None:
    """Pinned by digest, or scaled to zero: nothing a re-pull could change."""
    down = {**SETTLED, "availableReplicas": 1}
    pinned = "reg.example/shop/web@sha256:" + "a" * 64
    assert relevant(deployment(SETTLED, image=pinned)) == relevant(deployment(down, image=pinned))
    assert relevant(deployment(SETTLED, replicas=0)) == relevant(
        deployment({**SETTLED, "observedGeneration": 1}, replicas=0)
    )


def test_a_daemonset_status_settles_too() -> None:
    ds: dict[str, Any] = {
        "metadata": {"generation": 1},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberAvailable": 3,
            "numberReady": 3,
        },
    }
    down = {**ds, "status": {**ds["status"], "numberAvailable": 2}}
    assert relevant(ds) != relevant(down)
