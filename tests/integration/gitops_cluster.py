"""A cluster as GitOps write-back reads it, for checks run in process (``CheckerWorld``):
Flux's GitRepository and Kustomization objects, the operator's Secrets, and manifests as
a team keeps them in git."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from imagedrift.engine.check import PolicyChecker
from imagedrift.engine.commits import Committer
from imagedrift.engine.gitops_sources import SourceFinder
from tests.integration.checker_world import NAMESPACE, CheckerWorld

FLUX_NS = "flux-system"
AUTHOR = "imagedrift <imagedrift@users.noreply.localhost>"


def manifest(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }


def dump(*docs: Mapping[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in docs)


def write_back(world: CheckerWorld, cluster: FakeCluster, committer: Committer) -> None:
    """Give ``world`` a checker that writes back through ``committer``, finding each
    workload's repository in ``cluster``; its caches and clients stay the world's own."""
    world.checker = PolicyChecker(
        world.pool,
        world.kube,
        world.checker.observer.reads.images,
        world.bases,
        world.searches,
        sources=SourceFinder(cluster),
        committer=committer,
    )


class FakeCluster:
    """Flux's objects and the operator's Secrets, as the checker reads them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, bytes]] = {}

    def flux(self, name: str, url: str) -> None:
        self.objects["GitRepository", FLUX_NS, name] = {
            "spec": {"url": url, "ref": {"branch": "main"}}
        }
        self.objects["Kustomization", FLUX_NS, name] = {
            "spec": {"sourceRef": {"kind": "GitRepository", "name": name}, "path": "./apps"}
        }

    def get_gitops_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        return self.secrets.get(name)


def flux_labels(name: str) -> dict[str, str]:
    return {
        "kustomize.toolkit.fluxcd.io/name": name,
        "kustomize.toolkit.fluxcd.io/namespace": FLUX_NS,
    }
