"""The digest a tag-referenced container runs, from what its pods' nodes report."""

from __future__ import annotations

from typing import Any

import pytest

from imagedrift.core.mirrors import Mirror, parse_mirrors
from imagedrift.core.refs import ImageRef
from imagedrift.core.running import (
    digest_of_image_id,
    pod_selector,
    pulled_digest,
    runs_no_pods,
    same_image,
)
from imagedrift.errors import InvalidReference

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
NGINX = ImageRef.parse("nginx:1.25")


def pod(
    image: str,
    image_id: str,
    *,
    name: str = "app",
    deleting: bool = False,
    spec_image: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}
    body: dict[str, Any] = {
        "metadata": meta,
        "status": {"containerStatuses": [{"name": name, "image": image, "imageID": image_id}]},
    }
    if spec_image is not None:
        body["spec"] = {"containers": [{"name": name, "image": spec_image}]}
    return body


@pytest.mark.parametrize(
    ("image_id", "digest"),
    [
        (f"docker.io/library/nginx@{A}", A),  # containerd
        (f"docker-pullable://nginx@{A}", A),  # Docker
        (A, ""),  # an image id without a repository: no "@", nothing to take
        ("", ""),
        ("docker.io/library/nginx@sha256:short", ""),
    ],
)
def test_image_ids(image_id: str, digest: str) -> None:
    assert digest_of_image_id(image_id) == digest


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([pod("nginx:1.25", f"docker.io/library/nginx@{A}")], A),
        ([pod("docker.io/library/nginx:1.25", f"docker.io/library/nginx@{A}")], A),  # normalised
        ([pod("nginx:1.25", "")], ""),  # the node reports no digest
        ([pod("nginx:1.24", f"x@{A}")], ""),  # an old ReplicaSet's pod
        ([pod("nginx:1.25", f"x@{A}", name="sidecar")], ""),
        ([pod("nginx:1.25", f"x@{A}", deleting=True)], ""),
        ([pod("nginx:1.25", f"x@{A}"), pod("nginx:1.25", f"x@{B}")], ""),  # a tie: unknown
        (
            [pod("nginx:1.25", f"x@{A}"), pod("nginx:1.25", f"x@{B}"), pod("nginx:1.25", f"x@{B}")],
            B,
        ),
        ([], ""),
        # Pulled through a mirror (or first under another name): the status names the
        # mirror, the pod's spec the template's reference; the digest is the same content.
        (
            [
                pod(
                    "mirror.internal:5000/library/nginx:1.25",
                    f"mirror.internal:5000/library/nginx@{A}",
                    spec_image="nginx:1.25",
                )
            ],
            A,
        ),
        ([pod("nginx:1.25", f"x@{A}", spec_image="nginx:1.24")], ""),  # made from another ref
    ],
)
def test_the_digest_most_pods_pulled(pods: list[dict[str, Any]], expected: str) -> None:
    assert pulled_digest(pods, "app", NGINX) == expected


def test_references_compare_normalised() -> None:
    assert same_image("nginx:1.25", ImageRef.parse("docker.io/library/nginx:1.25"))
    assert not same_image("nginx:1.24", NGINX)
    assert not same_image("", NGINX) and not same_image("Not A Ref", NGINX)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"app": "web", "tier": "fe"}}, "app=web,tier=fe"),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "x", "operator": "NotIn", "values": ["c"]},
                    {"key": "y", "operator": "Exists"},
                    {"key": "z", "operator": "DoesNotExist"},
                ],
            },
            "app=web,env in (a,b),x notin (c),y,!z",
        ),
        ({}, ""),  # a CronJob: no pods to read
    ],
)
def test_pod_selectors(selector: dict[str, Any], expected: str) -> None:
    assert pod_selector({"spec": {"selector": selector}}) == expected


def test_mirrors() -> None:
    assert parse_mirrors("") == {}
    assert parse_mirrors("docker.io=mirror.example.com, ghcr.io=http://127.0.0.1:5000/") == {
        "docker.io": Mirror("mirror.example.com"),
        "ghcr.io": Mirror("127.0.0.1:5000", "http"),
    }
    for bad in ("docker.io", "docker.io=", "=x", "docker.io=ftp://x", "a=b,a=c"):
        with pytest.raises(InvalidReference, match="registry mirror"):
            parse_mirrors(bad)


@pytest.mark.parametrize(
    ("label", "body", "expected"),
    [
        ("scaled to zero, no pod left", {"spec": {"replicas": 0}, "status": {}}, True),
        (
            "scaled to zero, pods still going",
            {"spec": {"replicas": 0}, "status": {"replicas": 2}},
            False,
        ),
        ("one replica", {"spec": {"replicas": 1}, "status": {"replicas": 1}}, False),
        ("replicas unset means one", {"spec": {}, "status": {}}, False),
        ("a DaemonSet has no replicas", {"kind": "DaemonSet", "spec": {}}, False),
        ("a CronJob pulls at every run", {"kind": "CronJob", "spec": {"replicas": 0}}, False),
    ],
)
def test_runs_no_pods(label: str, body: dict[str, Any], expected: bool) -> None:
    assert runs_no_pods(body) is expected
