"""Table tests of ``spec.gitops`` (imagedrift.core.gitops_spec): the modes, what the operator
refuses even when admission let it through, and the commit message template."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from imagedrift.core.gitops_spec import (
    DEFAULT_MESSAGE,
    MAX_MESSAGE,
    MESSAGE_FIELDS,
    GitOpsSpec,
    Mode,
    PullRequestSpec,
    RepositoryOverride,
    check_message,
    parse_gitops,
    render_message,
)
from imagedrift.core.spec import parse_policy
from imagedrift.errors import InvalidSpec

MODES = [
    # label, spec.gitops, spec.rollout.patchGitOpsManaged, mode, writes, proposes
    ("default: leave GitOps-managed workloads alone", {}, False, Mode.LEAVE, False, False),
    ("patchGitOpsManaged alone means Patch", {}, True, Mode.PATCH, False, False),
    (
        "patchGitOpsManaged with mode Patch says the same",
        {"mode": "Patch"},
        True,
        Mode.PATCH,
        False,
        False,
    ),
    ("Leave", {"mode": "Leave"}, False, Mode.LEAVE, False, False),
    ("Patch", {"mode": "Patch"}, False, Mode.PATCH, False, False),
    ("Commit writes to the branch", {"mode": "Commit"}, False, Mode.COMMIT, True, False),
    (
        "PullRequest writes by proposing",
        {"mode": "PullRequest"},
        False,
        Mode.PULL_REQUEST,
        True,
        True,
    ),
    ("an empty mode is the default", {"mode": ""}, False, Mode.LEAVE, False, False),
]


@pytest.mark.parametrize(
    ("label", "raw", "patch_managed", "mode", "writes", "proposes"),
    MODES,
    ids=[m[0] for m in MODES],
)
def test_modes(
    label: str,
    raw: dict[str, Any],
    patch_managed: bool,
    mode: Mode,
    writes: bool,
    proposes: bool,
) -> None:
    spec = parse_gitops(raw, patch_managed)
    assert spec.mode is mode
    assert (spec.writes, spec.proposes) == (writes, proposes)


def test_defaults_of_an_empty_spec() -> None:
    spec = parse_gitops({}, False)
    assert spec == GitOpsSpec()
    assert spec.repository is None
    assert (spec.author_name, spec.author_email) == (
        "imagedrift",
        "imagedrift@users.noreply.localhost",
    )
    assert spec.message == DEFAULT_MESSAGE
    assert spec.pull_request == PullRequestSpec("", "", "", "imagedrift/")


INVALID = [
    # label, spec.gitops, patchGitOpsManaged, what the error says (a regex)
    (
        "patchGitOpsManaged with Commit names both fields",
        {"mode": "Commit"},
        True,
        r"spec\.rollout\.patchGitOpsManaged .* spec\.gitops\.mode is Commit",
    ),
    (
        "patchGitOpsManaged with Leave names both fields",
        {"mode": "Leave"},
        True,
        r"spec\.rollout\.patchGitOpsManaged .* spec\.gitops\.mode is Leave",
    ),
    (
        "patchGitOpsManaged with PullRequest",
        {"mode": "PullRequest"},
        True,
        r"patchGitOpsManaged .* spec\.gitops\.mode is PullRequest",
    ),
    (
        "unknown mode (modes are case-sensitive)",
        {"mode": "commit"},
        False,
        r"spec\.gitops\.mode: 'commit' is not one of Leave, Patch, Commit, PullRequest",
    ),
    (
        "repository without a url",
        {"mode": "Commit", "repository": {"branch": "main"}},
        False,
        r"spec\.gitops\.repository\.url: required",
    ),
    (
        "a token in an https URL",
        {"mode": "Commit", "repository": {"url": "https://x-token:ghp_secret@github.com/o/r.git"}},
        False,
        r"spec\.gitops\.repository\.url: credentials in a URL are refused",
    ),
    (
        "a user name in an http URL",
        {"mode": "Commit", "repository": {"url": "http://bot@git.lan/o/r.git"}},
        False,
        r"credentials in a URL are refused",
    ),
    (
        "a password in an ssh URL",
        {"mode": "Commit", "repository": {"url": "ssh://git:s3cret@git.example/o/r.git"}},
        False,
        r"credentials in a URL are refused",
    ),
    (
        "helm paths without a values file",
        {"mode": "Commit", "helm": {"paths": ["image.tag"]}},
        False,
        r"spec\.gitops\.helm\.paths: name the values file",
    ),
    (
        "unknown pull request provider",
        {"mode": "PullRequest", "pullRequest": {"provider": "Bitbucket"}},
        False,
        r"spec\.gitops\.pullRequest\.provider: 'Bitbucket' is not one of GitHub, GitLab, Azure",
    ),
    (
        "provider names are case-sensitive",
        {"mode": "PullRequest", "pullRequest": {"provider": "github"}},
        False,
        r"pullRequest\.provider: 'github'",
    ),
    (
        "a bad commit message template",
        {"mode": "Commit", "commitMessage": "{polcy}"},
        False,
        r"spec\.gitops\.commitMessage: \{polcy\} is not one of",
    ),
]


@pytest.mark.parametrize(
    ("label", "raw", "patch_managed", "message"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid(label: str, raw: dict[str, Any], patch_managed: bool, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_gitops(raw, patch_managed)


REPOSITORIES = [
    # label, spec.gitops.repository, the override read
    (
        "url only: default branch, repository root",
        {"url": "https://git.example/o/r.git"},
        RepositoryOverride("https://git.example/o/r.git", "", ""),
    ),
    (
        "an ssh URL may name the login",
        {"url": "ssh://git@git.example:2222/o/r.git", "branch": "main", "path": "apps/web"},
        RepositoryOverride("ssh://git@git.example:2222/o/r.git", "main", "apps/web"),
    ),
    (
        "an @ in an https path is no credential",
        {"url": "https://git.example/o/r@2.git"},
        RepositoryOverride("https://git.example/o/r@2.git", "", ""),
    ),
    (
        "path cleaned: dot segments and the trailing slash",
        {"url": "https://git.example/o/r.git", "path": "./apps/../web/"},
        RepositoryOverride("https://git.example/o/r.git", "", "web"),
    ),
    (
        "path cleaned: no way out of the repository",
        {"url": "https://git.example/o/r.git", "path": "../../etc"},
        RepositoryOverride("https://git.example/o/r.git", "", "etc"),
    ),
    (
        "path cleaned: the root",
        {"url": "https://git.example/o/r.git", "path": "./"},
        RepositoryOverride("https://git.example/o/r.git", "", ""),
    ),
]


@pytest.mark.parametrize(
    ("label", "raw", "expected"), REPOSITORIES, ids=[c[0] for c in REPOSITORIES]
)
def test_repository_override(label: str, raw: dict[str, Any], expected: RepositoryOverride) -> None:
    assert parse_gitops({"mode": "Commit", "repository": raw}, False).repository == expected


def test_helm_author_and_message_are_read() -> None:
    spec = parse_gitops(
        {
            "mode": "Commit",
            "helm": {"valuesFile": "./charts/web/../web/values.yaml", "paths": ["image.tag"]},
            "author": {"name": "Release Bot", "email": "bot@example.com"},
            "commitMessage": "{policy}: {changes}",
        },
        False,
    )
    assert spec.values_file == "charts/web/values.yaml"
    assert spec.helm_paths == ("image.tag",)
    assert (spec.author_name, spec.author_email) == ("Release Bot", "bot@example.com")
    assert spec.message == "{policy}: {changes}"


PROVIDERS = [
    ("GitHub", {"provider": "GitHub"}, PullRequestSpec("github")),
    ("GitLab", {"provider": "GitLab"}, PullRequestSpec("gitlab")),
    ("AzureDevOps", {"provider": "AzureDevOps"}, PullRequestSpec("azure")),
    ("none: from the repository's host", {}, PullRequestSpec()),
    (
        "self-hosted: API, web URL and branch prefix",
        {
            "provider": "GitHub",
            "apiURL": "https://ghe.lan/api/v3",
            "repositoryURL": "https://ghe.lan/o/r",
            "branchPrefix": "bots/imagedrift-",
        },
        PullRequestSpec(
            "github", "https://ghe.lan/api/v3", "https://ghe.lan/o/r", "bots/imagedrift-"
        ),
    ),
]


@pytest.mark.parametrize(("label", "raw", "expected"), PROVIDERS, ids=[c[0] for c in PROVIDERS])
def test_pull_request(label: str, raw: dict[str, Any], expected: PullRequestSpec) -> None:
    spec = parse_gitops({"mode": "PullRequest", "pullRequest": raw}, False)
    assert spec.pull_request == expected


@pytest.mark.parametrize(
    "prefix",
    ["../x/", "a/../b/", "/x/", "-x/", "a b/", "a~1/", "a^/", "a:b/", "a?/", "a*/", "a[/", "a\\b/"],
)
def test_branch_prefixes_that_are_no_branch_name(prefix: str) -> None:
    with pytest.raises(
        InvalidSpec, match=r"spec\.gitops\.pullRequest\.branchPrefix: .* is no branch"
    ):
        parse_gitops({"mode": "PullRequest", "pullRequest": {"branchPrefix": prefix}}, False)


def _git_accepts(branch: str) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", branch], capture_output=True, check=False
    )
    return done.returncode == 0


# Prefixes the CRD's pattern (^[A-Za-z0-9._/-]+$) lets through but that make no branch git
# can push: refused at parse time, not at every pull request's push.
@pytest.mark.parametrize(
    "prefix", [".imagedrift/", "imagedrift//", "bots.lock/", "x/./"], ids=lambda p: repr(p)
)
def test_branch_prefixes_git_refuses_are_refused(prefix: str) -> None:
    head = f"{prefix}p/0123456789ab-0123456789ab"
    assert not _git_accepts(head)  # the premise: git would refuse the branch
    with pytest.raises(InvalidSpec, match="branchPrefix"):
        parse_gitops({"mode": "PullRequest", "pullRequest": {"branchPrefix": prefix}}, False)


BAD_TEMPLATES = [
    # label, template, what the error says (a regex)
    ("unknown field", "{policy} {commit}", r"\{commit\} is not one of \{policy\}, \{base\}"),
    ("attribute of a field", "{policy.name}", r"\{policy\.name\} is not one of"),
    ("index of a field", "{changes[0]}", r"\{changes\[0\]\} is not one of"),
    ("positional field", "{}", r"\{\} is not one of"),
    ("format spec", "{policy:>20}", r"\{policy\} is not one of .*no format specs"),
    ("conversion", "{policy!r}", r"\{policy\} is not one of .*or conversions"),
    (
        "unbalanced open brace",
        "imagedrift: {policy",
        r"commitMessage: .* \(write \{\{ for a brace\)",
    ),
    ("unbalanced close brace", "imagedrift} {policy}", r"commitMessage: Single '\}'"),
    ("too long", "x" * (MAX_MESSAGE + 1), f"longer than {MAX_MESSAGE} characters"),
]


@pytest.mark.parametrize(
    ("label", "template", "message"), BAD_TEMPLATES, ids=[c[0] for c in BAD_TEMPLATES]
)
def test_check_message_refuses(label: str, template: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        check_message(template)


@pytest.mark.parametrize(
    "template",
    [
        DEFAULT_MESSAGE,
        "".join(f"{{{name}}}" for name in MESSAGE_FIELDS),
        "{{literal braces}} for {policy}",
        "no fields at all",
        "x" * MAX_MESSAGE,
    ],
    ids=["default", "every field", "escaped braces", "no fields", "at the limit"],
)
def test_check_message_accepts(template: str) -> None:
    check_message(template)


RENDERED = [
    # label, template, values, message
    (
        "fields filled",
        "{policy} on {baseShort}: {workloads} workload(s)",
        {"policy": "p", "baseShort": "sha256:b2b2", "workloads": "2"},
        "p on sha256:b2b2: 2 workload(s)",
    ),
    ("missing fields are empty", "[{policy}][{verdicts}]", {"policy": "p"}, "[p][]"),
    ("escaped braces stay", "{{policy}} is {policy}", {"policy": "p"}, "{policy} is p"),
    ("values are not templates", "{changes}", {"changes": "{policy}"}, "{policy}"),
    ("values outside the fields are ignored", "{policy}", {"policy": "p", "x": "y"}, "p"),
]


@pytest.mark.parametrize(
    ("label", "template", "values", "expected"), RENDERED, ids=[c[0] for c in RENDERED]
)
def test_render_message(label: str, template: str, values: dict[str, str], expected: str) -> None:
    assert render_message(template, values) == expected


def test_parse_policy_carries_gitops() -> None:
    spec = {
        "base": {"image": "reg.example/base", "tag": "1"},
        "gitops": {"mode": "PullRequest", "pullRequest": {"provider": "GitLab"}},
    }
    policy = parse_policy("p", spec)
    assert policy.gitops.mode is Mode.PULL_REQUEST
    assert policy.gitops.pull_request.provider == "gitlab"
    legacy = parse_policy("p", {"base": spec["base"], "rollout": {"patchGitOpsManaged": True}})
    assert legacy.gitops.mode is Mode.PATCH
    with pytest.raises(InvalidSpec, match="patchGitOpsManaged"):
        parse_policy("p", {**spec, "rollout": {"patchGitOpsManaged": True}})
