"""Selection, governed containers and the state annotation round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from imagedrift.core.spec import parse_policy
from imagedrift.core.workloads import (
    STATE_ANNOTATION,
    RolloutRecord,
    WorkloadState,
    governed_containers,
    image_patch,
    rollback_images,
    selected,
)

SPEC = {"base": {"image": "127.0.0.1:5000/base", "tag": "1"}}


def workload(
    labels: dict[str, str],
    ns: str = "a",
    annotations: dict[str, str] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    template = {
        "spec": {
            "containers": [
                {"name": "app", "image": "r/app:1"},
                {"name": "side", "image": "r/side:1"},
            ]
        }
    }
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"jobTemplate": {"spec": spec}}
    return {
        "kind": kind,
        "metadata": {
            "name": "w",
            "namespace": ns,
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("label", "spec", "obj", "expected"),
    [
        ("opted in by label", SPEC, workload({"imagedrift.io/policy": "p"}), True),
        ("label names another policy", SPEC, workload({"imagedrift.io/policy": "q"}), False),
        ("no label", SPEC, workload({}), False),
        (
            "namespace filtered out",
            {**SPEC, "rollout": {"namespaces": ["b"]}},
            workload({"imagedrift.io/policy": "p"}),
            False,
        ),
        (
            "custom selector",
            {
                **SPEC,
                "rollout": {
                    "selector": {
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]
                    }
                },
            },
            workload({"tier": "web"}),
            True,
        ),
    ],
)
def test_selected(label: str, spec: dict[str, Any], obj: dict[str, Any], expected: bool) -> None:
    assert selected(obj, parse_policy("p", spec)) is expected


def test_containers_annotation_narrows() -> None:
    policy = parse_policy("p", SPEC)
    obj = workload({}, annotations={"imagedrift.io/containers": "app"})
    assert governed_containers(obj, policy) == {"app": "r/app:1"}
    assert governed_containers(workload({}, kind="CronJob"), policy) == {
        "app": "r/app:1",
        "side": "r/side:1",
    }


def test_state_round_trip_and_garbage() -> None:
    record = RolloutRecord(
        "id",
        "sha256:b",
        {"app": "r/app@sha256:x"},
        {"app": "r/app:1"},
        {"app": "2"},
        "2026-01-01T00:00:00Z",
        "Progressing",
    )
    state = WorkloadState({"app": "2"}, record, ("sha256:old",))
    obj = {"metadata": {"annotations": {STATE_ANNOTATION: state.encode()}}}
    assert WorkloadState.decode(obj) == state
    pinned = WorkloadState({}, dataclasses.replace(record, previous_digests={"app": D1}))
    obj = {"metadata": {"annotations": {STATE_ANNOTATION: pinned.encode()}}}
    assert WorkloadState.decode(obj) == pinned
    assert (
        WorkloadState.decode({"metadata": {"annotations": {STATE_ANNOTATION: "{not json"}}})
        == WorkloadState()
    )


def test_image_patch_touches_only_images_and_state() -> None:
    patch = image_patch("CronJob", {"app": "r/app@sha256:x"}, WorkloadState(), "42")
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["spec"] == {
        "jobTemplate": {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "r/app@sha256:x"}]}}
            }
        }
    }
    assert "spec" not in image_patch("Deployment", {}, WorkloadState(), "1")


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
TARGET = f"127.0.0.1:5000/app@{D2}"


def _record(**changes: Any) -> RolloutRecord:
    record = RolloutRecord(
        "id",
        "sha256:b",
        {"app": TARGET, "side": f"127.0.0.1:5000/side@{D3}"},
        {"app": "127.0.0.1:5000/app:1.0.0", "side": "nginx:1.25"},
        {"app": "1.0.1"},
        "2026-01-01T00:00:00Z",
        "Progressing",
        previous_digests={"app": D1, "side": D1},
    )
    return dataclasses.replace(record, **changes)


@pytest.mark.parametrize(
    ("record", "now", "restore", "superseded"),
    [
        pytest.param(
            _record(),
            {"app": TARGET, "side": f"127.0.0.1:5000/side@{D3}"},
            {"app": f"127.0.0.1:5000/app@{D1}", "side": f"docker.io/library/nginx@{D1}"},
            {},
            id="every container back to the digest it ran, short names normalised",
        ),
        pytest.param(
            _record(),
            {"app": TARGET, "side": "nginx:1.26"},
            {"app": f"127.0.0.1:5000/app@{D1}"},
            {"side": "nginx:1.26"},
            id="a container changed meanwhile is left alone",
        ),
        pytest.param(
            _record(previous_digests={}),
            {},
            {"app": "127.0.0.1:5000/app:1.0.0", "side": "nginx:1.25"},
            {},
            id="an old record without digests restores the reference as written",
        ),
        pytest.param(
            _record(previous={"app": "Not A Ref", "side": "nginx:1.25"}),
            {},
            {"app": "Not A Ref", "side": f"docker.io/library/nginx@{D1}"},
            {},
            id="an unparsable previous reference is restored as written",
        ),
    ],
)
def test_rollback_images(
    record: RolloutRecord,
    now: dict[str, str],
    restore: dict[str, str],
    superseded: dict[str, str],
) -> None:
    assert rollback_images(record, now) == (restore, superseded)
