"""``imagedrift pause|resume POLICY`` (spec.rollout.suspend) and
``imagedrift pause|resume KIND/NAME -n NS`` (the workload's ``imagedrift.io/paused``).

Merge patches that touch only that one field, under the field manager ``imagedrift-cli``.
Pausing what is already paused changes nothing and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imagedrift.cli import render
from imagedrift.cli.cluster import Cluster, describe
from imagedrift.core.workloads import PAUSE_ANNOTATION, WorkloadRef, paused


def _suspended(body: Mapping[str, Any]) -> bool:
    return bool(((body.get("spec") or {}).get("rollout") or {}).get("suspend", False))


def policy(cluster: Cluster, name: str, pause: bool) -> dict[str, Any]:
    before = _suspended(cluster.get_policy(name))
    if before != pause:
        after = _suspended(cluster.patch_policy(name, {"spec": {"rollout": {"suspend": pause}}}))
    else:
        after = before
    return render.document(
        "PauseResult",
        target={"kind": "ImagePolicy", "name": name, "namespace": ""},
        field="spec.rollout.suspend",
        paused=after,
        changed=before != after,
    )


def workload(cluster: Cluster, ref: WorkloadRef, pause: bool) -> dict[str, Any]:
    before = paused(cluster.get_workload(ref))
    after = before
    if before != pause:
        # null removes the annotation on resume; "true" is what paused() reads.
        value = "true" if pause else None
        after = paused(
            cluster.patch_workload(ref, {"metadata": {"annotations": {PAUSE_ANNOTATION: value}}})
        )
    return render.document(
        "PauseResult",
        target={"kind": ref.kind, "name": ref.name, "namespace": ref.namespace},
        field=f"metadata.annotations[{PAUSE_ANNOTATION}]",
        paused=after,
        changed=before != after,
    )


def table(doc: Mapping[str, Any], now: datetime, width: int = render.DEFAULT_WIDTH) -> str:
    del now, width
    t = doc["target"]
    if t["kind"] == "ImagePolicy":
        what = f"imagepolicy/{t['name']}"
    else:
        what = describe(WorkloadRef(t["kind"], t["namespace"], t["name"]))
    state = "paused" if doc["paused"] else "resumed"
    if not doc["changed"]:
        return f"{what} was already {state} ({doc['field']} unchanged)"
    return f"{what} {state} ({doc['field']})"
