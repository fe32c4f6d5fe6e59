"""Table tests of where a GitOps-managed workload's manifests live (core.gitops_source)."""

from __future__ import annotations

from typing import Any

import pytest

from imagedrift.core.gitops_source import (
    GitSource,
    argocd_app_name,
    argocd_source,
    clean_path,
    credentials_for,
    flux_source,
)

FLUX = {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux"}
URL = "http://127.0.0.1:8080/fleet.git"


def objects(
    source_ref: dict[str, Any] | None = None,
    ref: dict[str, Any] | None = None,
    path: str = "./apps",
) -> dict[tuple[str, str, str], dict[str, Any]]:
    kustomization = {
        "spec": {
            "path": path,
            "sourceRef": source_ref or {"kind": "GitRepository", "name": "fleet"},
        }
    }
    repo = {"spec": {"url": URL, **({"ref": ref} if ref is not None else {})}}
    return {
        ("Kustomization", "flux", "apps"): kustomization,
        ("GitRepository", "flux", "fleet"): repo,
    }


@pytest.mark.parametrize(
    ("label", "labels", "found", "expected"),
    [
        (
            "branch and path",
            FLUX,
            objects(ref={"branch": "main"}),
            GitSource(URL, "main", "apps", "Flux Kustomization flux/apps"),
        ),
        (
            "no ref: Flux follows master",
            FLUX,
            objects(ref=None, path=""),
            GitSource(URL, "master", "", "Flux Kustomization flux/apps"),
        ),
        ("not Flux", {}, {}, "no kustomize.toolkit.fluxcd.io labels"),
        ("Kustomization gone", FLUX, {}, "Flux Kustomization flux/apps not found"),
        (
            "an OCI source",
            FLUX,
            objects(source_ref={"kind": "OCIRepository", "name": "x"}),
            "reads a OCIRepository, not a git repository",
        ),
        ("a tag", FLUX, objects(ref={"tag": "v1"}), "follows a tag, not a branch"),
        ("a commit", FLUX, objects(ref={"branch": "main", "commit": "abc"}), "follows a commit"),
        (
            "a source in another namespace",
            FLUX,
            {
                ("Kustomization", "flux", "apps"): {
                    "spec": {"sourceRef": {"kind": "GitRepository", "name": "r", "namespace": "x"}}
                },
                ("GitRepository", "x", "r"): {"spec": {"url": URL, "ref": {"branch": "b"}}},
            },
            GitSource(URL, "b", "", "Flux Kustomization flux/apps"),
        ),
    ],
)
def test_flux_source(
    label: str,
    labels: dict[str, str],
    found: dict[tuple[str, str, str], dict[str, Any]],
    expected: GitSource | str,
) -> None:
    got = flux_source(labels, lambda kind, ns, name: found.get((kind, ns, name)))
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


def app(**source: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "argocd"}, "spec": {"source": source}}


@pytest.mark.parametrize(
    ("label", "application", "expected"),
    [
        (
            "a branch",
            app(repoURL=URL, targetRevision="main", path="envs/prod/"),
            GitSource(URL, "main", "envs/prod", "Argo CD Application argocd/web"),
        ),
        (
            "HEAD: the default branch",
            app(repoURL=URL, targetRevision="HEAD", path="."),
            GitSource(URL, "", "", "Argo CD Application argocd/web"),
        ),
        ("a commit", app(repoURL=URL, targetRevision="0a1b2c3d4e5f"), "pinned to commit"),
        ("a Helm chart repository", app(repoURL=URL, chart="web"), "has 0 git sources"),
        (
            "several sources, one git",
            {
                "metadata": {"name": "web", "namespace": "argocd"},
                "spec": {
                    "sources": [
                        {"repoURL": "https://charts.example", "chart": "web"},
                        {"repoURL": URL, "targetRevision": "main", "path": "values"},
                    ]
                },
            },
            GitSource(URL, "main", "values", "Argo CD Application argocd/web"),
        ),
    ],
)
def test_argocd_source(label: str, application: dict[str, Any], expected: GitSource | str) -> None:
    got = argocd_source(application)
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


def test_argocd_app_name() -> None:
    tracking = {"argocd.argoproj.io/tracking-id": "web:apps/Deployment:shop/web"}
    assert argocd_app_name({}, tracking) == "web"
    assert argocd_app_name({"app.kubernetes.io/instance": "legacy"}, {}) == "legacy"
    assert argocd_app_name({}, {}) == ""


@pytest.mark.parametrize(
    ("path", "expected"),
    [("./apps/web/", "apps/web"), ("", ""), ("./", ""), ("../../etc", "etc"), ("a/../b", "b")],
)
def test_paths_never_leave_the_repository(path: str, expected: str) -> None:
    assert clean_path(path) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://git.example/team/fleet.git", "fleet"),
        ("https://GIT.example/team/fleet", "fleet"),
        ("https://git.example/team/other.git", "team"),
        ("https://git.example/teamx/fleet.git", ""),
        ("ssh://git@git.example/team/fleet.git", "ssh"),
    ],
)
def test_credentials_chosen_by_the_longest_url_prefix(url: str, expected: str) -> None:
    secrets = {
        "team": "https://git.example/team",
        "fleet": "https://git.example/team/fleet.git",
        "ssh": "ssh://git@git.example/",
    }
    assert credentials_for(url, secrets) == expected
