"""``spec.gitops``: what a policy does with workloads a GitOps controller applies.

``Leave`` (the default) reports them as ``ManagedByGitOps``; ``Patch`` patches them in the
cluster like any workload (the controller may undo it); ``Commit`` commits the validated
digest to the branch the controller reads and follows it to the pods. ``parse_gitops``
reads the dict; anything the schema let through but a write-back cannot follow raises
``InvalidSpec`` naming the field.

The commit message is a template over a fixed set of names (``MESSAGE_FIELDS``), checked
here so that a typo is a Stalled policy, not a failed commit at 3 a.m.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from imagedrift.core.durations import parse_duration
from imagedrift.core.gitops_source import clean_path, credentials_in_url
from imagedrift.errors import InvalidSpec


class Mode(StrEnum):
    LEAVE = "Leave"
    PATCH = "Patch"
    COMMIT = "Commit"
    PULL_REQUEST = "PullRequest"


PROVIDERS = {"GitHub": "github", "GitLab": "gitlab", "AzureDevOps": "azure"}
BRANCH_PREFIX = "imagedrift/"


# What a commit message template may name (each a plain string).
MESSAGE_FIELDS = {
    "policy": "the ImagePolicy's name",
    "base": "the base image reference the policy tracks",
    "baseDigest": "the base digest the candidates are built on",
    "baseShort": "its first 12 hex digits",
    "changes": "one line per workload and container: old image -> new image",
    "workloads": "how many workloads the commit changes",
    "verdicts": "the candidates' gate verdicts and reasons, one line each",
}
DEFAULT_MESSAGE = (
    "imagedrift: {policy}: rebuilt on base {baseShort}\n"
    "\n"
    "Base {base} is now {baseDigest}.\n"
    "\n"
    "{changes}\n"
    "\n"
    "{verdicts}\n"
)
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class RepositoryOverride:
    """The repository to write, when the cluster's GitOps objects do not say (or not right)."""

    url: str
    branch: str = ""  # "" the repository's default branch
    path: str = ""


@dataclass(frozen=True)
class PullRequestSpec:
    """Where pull requests are opened when the clone URL alone does not say (a self-hosted
    server, a mirror): the provider, its API's origin, the repository's web URL."""

    provider: str = ""  # "github" | "gitlab" | "azure"; "" from the repository's host
    api_url: str = ""  # "" the provider's public API
    repository_url: str = ""  # "" the clone URL
    branch_prefix: str = BRANCH_PREFIX


@dataclass(frozen=True)
class GitOpsSpec:
    mode: Mode = Mode.LEAVE
    repository: RepositoryOverride | None = None
    values_file: str = ""  # a Helm values file, relative to the directory
    helm_paths: tuple[str, ...] = ()  # dotted paths in it (setters.Layout)
    author_name: str = "imagedrift"
    author_email: str = "imagedrift@users.noreply.localhost"
    message: str = DEFAULT_MESSAGE
    pull_request: PullRequestSpec = PullRequestSpec()
    # How long the GitOps controller may take to apply a commit before the rollout counts
    # as failed (and is rolled back by a commit); its own interval is often minutes.
    apply_timeout: float = 900.0

    @property
    def writes(self) -> bool:
        """Does the policy write GitOps-managed workloads back to git?"""
        return self.mode in (Mode.COMMIT, Mode.PULL_REQUEST)

    @property
    def proposes(self) -> bool:
        """Through pull requests (else by commits to the branch the controller reads)?"""
        return self.mode is Mode.PULL_REQUEST


def parse_gitops(raw: Mapping[str, Any], patch_gitops_managed: bool) -> GitOpsSpec:
    """Read ``spec.gitops``; ``patch_gitops_managed`` is the older
    ``spec.rollout.patchGitOpsManaged`` (true means ``Patch`` when no mode is set)."""
    default = Mode.PATCH if patch_gitops_managed else Mode.LEAVE
    try:
        mode = Mode(str(raw.get("mode") or default.value))
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise InvalidSpec(f"spec.gitops.mode: {raw.get('mode')!r} is not one of {modes}") from None
    if patch_gitops_managed and mode is not Mode.PATCH:
        raise InvalidSpec(
            f"spec.rollout.patchGitOpsManaged patches in the cluster, spec.gitops.mode is "
            f"{mode.value}: remove patchGitOpsManaged (mode Patch says the same)"
        )
    repository = None
    repo_raw = raw.get("repository")
    if repo_raw:
        url = str(repo_raw.get("url") or "")
        if not url:
            raise InvalidSpec("spec.gitops.repository.url: required when repository is set")
        if credentials_in_url(url):
            raise InvalidSpec(
                "spec.gitops.repository.url: credentials in a URL are refused; put them in a "
                "Secret the index Secret imagedrift-git names for the repository"
            )
        repository = RepositoryOverride(
            url, str(repo_raw.get("branch") or ""), clean_path(str(repo_raw.get("path") or ""))
        )
    helm = raw.get("helm") or {}
    paths = tuple(str(p) for p in helm.get("paths") or ())
    values = str(helm.get("valuesFile") or "")
    if paths and not values:
        raise InvalidSpec("spec.gitops.helm.paths: name the values file (helm.valuesFile)")
    author = raw.get("author") or {}
    message = str(raw.get("commitMessage") or DEFAULT_MESSAGE)
    check_message(message)
    return GitOpsSpec(
        mode,
        repository,
        clean_path(values) if values else "",
        paths,
        str(author.get("name") or "imagedrift"),
        str(author.get("email") or "imagedrift@users.noreply.localhost"),
        message,
        _pull_request(raw.get("pullRequest") or {}),
        parse_duration(str(raw.get("applyTimeout") or "15m")),
    )


def _pull_request(raw: Mapping[str, Any]) -> PullRequestSpec:
    provider = str(raw.get("provider") or "")
    if provider and provider not in PROVIDERS:
        names = ", ".join(PROVIDERS)
        raise InvalidSpec(f"spec.gitops.pullRequest.provider: {provider!r} is not one of {names}")
    prefix = str(raw.get("branchPrefix") or BRANCH_PREFIX)
    if not valid_branch(f"{prefix}policy/0123456789ab-0123456789ab"):
        raise InvalidSpec(f"spec.gitops.pullRequest.branchPrefix: {prefix!r} is no branch name")
    return PullRequestSpec(
        PROVIDERS.get(provider, ""),
        str(raw.get("apiURL") or ""),
        str(raw.get("repositoryURL") or ""),
        prefix,
    )


_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def valid_branch(name: str) -> bool:
    """Would git take ``name`` as a branch (``git check-ref-format --branch``'s rules)?"""
    if not name or name.startswith(("-", "/")) or name.endswith(("/", ".")) or name == "@":
        return False
    if _REF_BAD.search(name):
        return False
    return all(p and not p.startswith(".") and not p.endswith(".lock") for p in name.split("/"))


def check_message(template: str) -> None:
    """Raise InvalidSpec unless ``template`` names only ``MESSAGE_FIELDS``, plainly."""
    if len(template) > MAX_MESSAGE:
        raise InvalidSpec(f"spec.gitops.commitMessage: longer than {MAX_MESSAGE} characters")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidSpec(f"spec.gitops.commitMessage: {exc} (write {{{{ for a brace)") from exc
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in MESSAGE_FIELDS or spec or conversion:
            known = ", ".join(f"{{{n}}}" for n in MESSAGE_FIELDS)
            raise InvalidSpec(
                f"spec.gitops.commitMessage: {{{name}}} is not one of {known} "
                "(no format specs or conversions)"
            )


def render_message(template: str, values: Mapping[str, str]) -> str:
    """The message, every field of ``MESSAGE_FIELDS`` filled ("" when not given)."""
    return template.format_map({n: values.get(n, "") for n in MESSAGE_FIELDS})
