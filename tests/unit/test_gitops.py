"""Who else writes the image: GitOps controllers by label, annotation or field manager,
and the newest owner of each container's image field in managedFields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imagedrift.core.gitops import describe_writer, managed_by, owned_images
from imagedrift.kube.informer import project


def container_fields(*names: str) -> dict[str, Any]:
    return {
        "f:spec": {
            "f:template": {
                "f:spec": {
                    "f:containers": {
                        "k:" + json.dumps({"name": n}): {".": {}, "f:image": {}, "f:name": {}}
                        for n in names
                    }
                }
            }
        }
    }


def entry(manager: str, time: str, *names: str, operation: str = "Update") -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": container_fields(*names),
    }


def deployment(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    managed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": labels or {},
            "annotations": annotations or {},
            "managedFields": managed or [],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "r.io/app:1"}]}}},
    }


def test_the_newest_writer_of_each_image_field_owns_it() -> None:
    managed = [
        entry("kubectl-client-side-apply", "2026-01-01T00:00:00Z", "app", "side"),
        entry("imagedrift", "2026-01-01T00:01:00Z", "app"),
        entry("kubectl-rollout", "2026-01-01T00:02:00Z", "app"),
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "time": "2026-01-01T00:03:00Z",
            "fieldsV1": {"f:status": {"f:replicas": {}}},
        },
    ]
    owners = owned_images(managed, "Deployment")
    assert owners["app"]["manager"] == "kubectl-rollout"
    assert owners["side"]["manager"] == "kubectl-client-side-apply"
    assert describe_writer(owners["app"]) == "kubectl-rollout (Update, 2026-01-01T00:02:00Z)"
    assert describe_writer({}) == "someone"


@pytest.mark.parametrize(
    ("label", "body", "tool"),
    [
        ("nobody", deployment(), ""),
        (
            "Flux kustomization label",
            deployment(labels={"kustomize.toolkit.fluxcd.io/name": "apps"}),
            "Flux",
        ),
        ("Flux helm label", deployment(labels={"helm.toolkit.fluxcd.io/name": "web"}), "Flux"),
        (
            "Argo CD tracking id",
            deployment(
                annotations={"argocd.argoproj.io/tracking-id": "web:apps/Deployment:shop/web"}
            ),
            "Argo CD",
        ),
        (
            "Flux field manager on the image",
            deployment(managed=[entry("kustomize-controller", "t", "app", operation="Apply")]),
            "Flux",
        ),
        (
            "Argo CD field manager",
            deployment(managed=[entry("argocd-controller", "t", "app", operation="Apply")]),
            "Argo CD",
        ),
        ("kubectl is not GitOps", deployment(managed=[entry("kubectl-edit", "t", "app")]), ""),
    ],
)
def test_gitops_controllers_are_recognised_through_the_watch_cache_projection(
    label: str, body: dict[str, Any], tool: str
) -> None:
    """The projection keeps what detection needs (and drops the rest of managedFields)."""
    slim = project("Deployment", body)
    assert "managedFields" not in slim["metadata"]
    found = managed_by(slim)
    assert found.startswith(tool) if tool else found == "", (label, found)
