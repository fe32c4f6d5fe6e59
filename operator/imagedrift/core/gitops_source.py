"""Where a GitOps-managed workload's manifests live: repository URL, branch and directory,
read from the objects of the GitOps controller that applies it.

- Flux: the labels ``kustomize.toolkit.fluxcd.io/name``/``namespace`` name the Kustomization;
  its ``spec.sourceRef`` names the GitRepository (``spec.url``, ``spec.ref.branch``) and its
  ``spec.path`` the directory. A GitRepository that follows a tag, a semver range or a
  commit cannot be written to: a commit on a branch would never be applied.
- Argo CD: the tracking annotation (``<app>:<group>/<kind>:<ns>/<name>``) or the
  ``app.kubernetes.io/instance`` label names the Application; its ``spec.source`` (or the
  single git entry of ``spec.sources``) gives ``repoURL``, ``targetRevision`` and ``path``.
  ``HEAD`` (or nothing) is the repository's default branch, which git resolves.

Pure: the caller reads the objects (``Lookup``) and passes them in. Each function returns a
``GitSource`` or the reason there is none, for the workload's status.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FLUX_NAME = "kustomize.toolkit.fluxcd.io/name"
FLUX_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
ARGOCD_TRACKING = "argocd.argoproj.io/tracking-id"
ARGOCD_INSTANCE = "app.kubernetes.io/instance"
FLUX_DEFAULT_BRANCH = "master"  # what a GitRepository without spec.ref follows
DEFAULT_BRANCH = ""  # the repository's own default branch (git resolves it)
# A commit-like revision: a branch could be named so, but Argo CD reads it as a commit.
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")

# (kind, namespace, name) -> the object, or None when it does not exist
Lookup = Callable[[str, str, str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class GitSource:
    url: str
    branch: str  # DEFAULT_BRANCH: the repository's default branch
    path: str  # a directory relative to the repository's root ("" the root)
    via: str  # which object said so, for the workload's status and the commit message
    target_namespace: str = ""  # where manifests without a namespace deploy ("" as written)
    argocd_app: str = ""  # an Argo CD Kustomize or Helm app: its .argocd-source-<app>.yaml
    argocd_helm: bool = False  # ... of a Helm app (helm.parameters), else Kustomize (images)


def credentials_in_url(url: str) -> bool:
    """A secret in ``url``: a password in any, or any user in a URL that is not SSH (a token
    is often given as the user). An SSH login name (``ssh://git@host/...``, scp-like
    ``git@host:org/repo.git``) is no secret: the key is."""
    scheme, sep, rest = url.partition("://")
    userinfo = (rest if sep else url).split("/", 1)[0].rpartition("@")[0]
    ssh = not sep or scheme.lower() in ("ssh", "git+ssh", "ssh+git")
    return bool(userinfo) and (":" in userinfo or not ssh)


def clean_path(path: str) -> str:
    """``./apps/web/`` -> ``apps/web``; None of ``..`` may leave the repository."""
    normal = posixpath.normpath("/" + (path or "").strip())
    return normal.lstrip("/")


def flux_source(labels: Mapping[str, str], lookup: Lookup) -> GitSource | str:
    """The Flux Kustomization that applies the workload, and the repository it reads."""
    name, namespace = labels.get(FLUX_NAME, ""), labels.get(FLUX_NAMESPACE, "")
    if not name or not namespace:
        return "not applied by a Flux Kustomization (no kustomize.toolkit.fluxcd.io labels)"
    kustomization = lookup("Kustomization", namespace, name)
    if kustomization is None:
        return f"Flux Kustomization {namespace}/{name} not found"
    spec = kustomization.get("spec") or {}
    ref = spec.get("sourceRef") or {}
    kind = ref.get("kind", "")
    source_ns = ref.get("namespace") or namespace
    if kind != "GitRepository":
        what = kind or "source"
        return f"Flux Kustomization {namespace}/{name} reads a {what}, not a git repository"
    repo = lookup("GitRepository", source_ns, ref.get("name", ""))
    if repo is None:
        return f"Flux GitRepository {source_ns}/{ref.get('name', '')} not found"
    repo_spec = repo.get("spec") or {}
    url = str(repo_spec.get("url") or "")
    git_ref = repo_spec.get("ref") or {}
    pinned = [k for k in ("tag", "semver", "commit", "name") if git_ref.get(k)]
    if pinned:
        return (
            f"Flux GitRepository {source_ns}/{ref.get('name', '')} follows a {pinned[0]}, not "
            "a branch: a commit would never be applied"
        )
    branch = str(git_ref.get("branch") or FLUX_DEFAULT_BRANCH)
    via = f"Flux Kustomization {namespace}/{name}"
    target = str(spec.get("targetNamespace") or "")
    return GitSource(url, branch, clean_path(str(spec.get("path") or "")), via, target)


def argocd_app_name(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    """The Argo CD Application that tracks the workload ("" none)."""
    tracking = annotations.get(ARGOCD_TRACKING, "")
    if tracking:
        return tracking.split(":", 1)[0]
    return labels.get(ARGOCD_INSTANCE, "")


def argocd_source(app: Mapping[str, Any]) -> GitSource | str:
    """The git source of an Argo CD Application (a Helm chart repository has none)."""
    meta = app.get("metadata") or {}
    where = f"Argo CD Application {meta.get('namespace', '')}/{meta.get('name', '')}"
    spec = app.get("spec") or {}
    sources = [spec["source"]] if spec.get("source") else list(spec.get("sources") or [])
    git = [s for s in sources if s.get("repoURL") and not s.get("chart")]
    if len(git) != 1:
        return f"{where} has {len(git)} git sources; name the repository in the policy"
    source = git[0]
    revision = str(source.get("targetRevision") or "")
    if revision in ("", "HEAD"):
        revision = DEFAULT_BRANCH
    elif _COMMIT.match(revision):
        return f"{where} is pinned to commit {revision}: a commit would never be applied"
    # Kustomize and Helm apps take Argo CD's parameter overrides, as Argo CD Image Updater
    # writes them; a directory of plain manifests is edited in place.
    kind = str((app.get("status") or {}).get("sourceType") or "")
    helm = kind == "Helm" or "helm" in source
    overrides = helm or kind == "Kustomize" or "kustomize" in source
    return GitSource(
        str(source["repoURL"]),
        revision,
        clean_path(str(source.get("path") or "")),
        where,
        str((spec.get("destination") or {}).get("namespace") or ""),
        str(meta.get("name") or "") if overrides else "",
        helm,
    )


def credentials_for(url: str, secrets: Mapping[str, str]) -> str:
    """Which Secret holds the credentials for ``url``: ``secrets`` maps each Secret's name to
    the URL prefix it is for; the longest prefix that matches wins ("" none)."""
    norm = _normal(url)
    best = ""
    chosen = ""
    for name, prefix in sorted(secrets.items()):
        p = _normal(prefix)
        if p and (norm == p or norm.startswith(p.rstrip("/") + "/")) and len(p) > len(best):
            best, chosen = p, name
    return chosen


def _normal(url: str) -> str:
    """Compare URLs as git does: scheme and host case-insensitive, no trailing ``.git``/``/``."""
    url = url.strip()
    if url.endswith(".git"):
        url = url[: -len(".git")]
    url = url.rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"
