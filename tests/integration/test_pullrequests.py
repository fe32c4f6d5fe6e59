"""The pull-request adapter (``imagedrift.git.pullrequests``) against TLS servers on loopback
that speak the GitHub, GitLab and Azure DevOps APIs: one pull request per head branch,
found and updated rather than duplicated (across a new client too, as after a restart), a
merged one reported as merged, refused tokens and server faults mapped to the git errors
with no token in them, and every request carrying the provider's auth and API version."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagedrift.errors import GitAuthError, GitError, InvalidSpec
from imagedrift.git.pullrequests import AzureDevOps, GitHub, GitLab, PullRequests, for_repository
from tests.harness.pr_servers import REDACTED, PrServer

HEAD = "imagedrift/web/sha256-1234abcd-1.0.1"
BASE = "main"
MakeClient = Callable[..., PullRequests]


@pytest.fixture(params=["github", "gitlab", "azure"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(provider: str, pr_servers: dict[str, PrServer]) -> PrServer:
    return pr_servers[provider]


def test_an_opened_pull_request_is_found(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    prs = pr_client(provider)
    assert prs.find(HEAD, BASE) is None
    pr = prs.open(HEAD, BASE, "Roll web to 1.0.1", "lineage and verdicts")
    assert (pr.head, pr.base, pr.state, pr.title) == (HEAD, BASE, "open", "Roll web to 1.0.1")
    assert pr.body == "lineage and verdicts"
    assert pr.url.startswith("https://") and pr.url.endswith(str(pr.number))
    assert prs.find(HEAD, BASE) == pr
    assert prs.find(HEAD, "release") is None
    assert prs.find("imagedrift/other", BASE) is None
    assert [p.number for p in server.pulls()] == [pr.number]


def test_opening_again_updates_the_open_one_not_a_second(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    first = pr_client(provider).open(HEAD, BASE, "Roll web to 1.0.1", "first check")
    # A new client, as after an operator restart: the server is the only memory.
    again = pr_client(provider).open(HEAD, BASE, "Roll web to 1.0.1 (2 workloads)", "second")
    assert again.number == first.number and again.state == "open"
    assert (again.title, again.body) == ("Roll web to 1.0.1 (2 workloads)", "second")
    stored = server.pulls()
    assert len(stored) == 1 and (stored[0].title, stored[0].body) == (again.title, "second")
    methods = [r.method for r in server.requests()]
    assert methods.count("POST") == 2  # the refused duplicate, then the first one's update
    assert methods[-1] in ("PATCH", "PUT")


def test_a_merged_pull_request_is_found_as_merged(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    prs = pr_client(provider)
    pr = prs.open(HEAD, BASE, "Roll web to 1.0.1", "body")
    server.merge(pr.number)  # and its branch deleted: the caller must not push it again
    found = prs.find(HEAD, BASE)
    assert found is not None and (found.number, found.state) == (pr.number, "merged")

    closed = prs.open("imagedrift/closed", BASE, "Roll api", "body")
    server.close(closed.number)
    found = prs.find("imagedrift/closed", BASE)
    assert found is not None and (found.number, found.state) == (closed.number, "closed")

    # A new pull request for a merged head is the caller's choice; an open one then wins.
    reopened = prs.open(HEAD, BASE, "Roll web to 1.0.1 again", "body")
    assert reopened.number != pr.number
    assert prs.find(HEAD, BASE) == reopened


def test_update_changes_title_and_body(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    prs = pr_client(provider)
    pr = prs.open(HEAD, BASE, "Roll web to 1.0.1", "one workload")
    updated = prs.update(pr, "Roll web and api to 1.0.1", "two workloads\n\n| gate | verdict |")
    assert updated.number == pr.number
    assert (updated.title, updated.body) == ("Roll web and api to 1.0.1", updated.body)
    assert updated.body == "two workloads\n\n| gate | verdict |"
    assert prs.find(HEAD, BASE) == updated
    assert server.pulls()[0].title == "Roll web and api to 1.0.1"


def test_a_refused_token_is_an_auth_error_that_does_not_show_it(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    wrong = "wrong-token-0123456789abcdef"
    prs = pr_client(provider, token=wrong)
    with pytest.raises(GitAuthError) as refused:
        prs.find(HEAD, BASE)
    with pytest.raises(GitAuthError) as refused_open:
        prs.open(HEAD, BASE, "t", "b")
    assert server.pulls() == []
    good = pr_client(provider)
    good.open(HEAD, BASE, "t", "b")
    server.fail(403)
    with pytest.raises(GitAuthError) as forbidden:
        good.find(HEAD, BASE)
    for text in (
        str(refused.value),
        repr(refused.value),
        str(refused_open.value),
        str(forbidden.value),
        repr(prs),
        repr(good),
    ):
        assert wrong not in text and server.token not in text
    assert "refused the token" in str(refused.value)


def test_no_credentials_at_all_is_an_auth_error(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    """Azure DevOps answers 203 with its sign-in page, not 401: still refused."""
    with pytest.raises(GitAuthError):
        pr_client(provider, token="").find(HEAD, BASE)
    assert server.requests()[-1].status == (203 if provider == "azure" else 401)


def test_server_errors_and_timeouts_are_git_errors(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    prs = pr_client(provider, timeout=0.5)
    server.fail(502)
    with pytest.raises(GitError) as bad_gateway:
        prs.find(HEAD, BASE)
    assert not isinstance(bad_gateway.value, GitAuthError) and "502" in str(bad_gateway.value)
    server.fail(503)
    with pytest.raises(GitError):
        prs.open(HEAD, BASE, "t", "b")
    assert server.pulls() == []  # nothing half-made
    server.stall(1.2)
    with pytest.raises(GitError, match="timed out"):
        prs.find(HEAD, BASE)
    # Only the next N requests fail: the caller's retry goes through.
    assert prs.open(HEAD, BASE, "t", "b").state == "open"


def test_requests_carry_the_provider_auth_and_api_version(
    provider: str, server: PrServer, pr_client: MakeClient
) -> None:
    prs = pr_client(provider, token=server.token + "\n")  # as a Secret's file often ends
    pr = prs.open(HEAD, BASE, "Roll web", "body")
    prs.update(pr, "Roll web to 1.0.1", "body")
    prs.find(HEAD, BASE)
    recorded = server.requests()
    assert [r.method for r in recorded] == [
        "POST",
        "PUT" if provider == "gitlab" else "PATCH",
        "GET",
    ]
    for r in recorded:
        assert r.authorized and r.status < 300
        assert server.token not in repr(r)
        if provider == "github":
            assert r.headers["authorization"] == f"Bearer {REDACTED}"
            assert r.headers["accept"] == "application/vnd.github+json"
            assert r.headers["x-github-api-version"] == "2022-11-28"
            assert r.path.startswith("/repos/acme/app/pulls")
        elif provider == "gitlab":
            assert r.headers["private-token"] == REDACTED
            assert r.path.startswith("/api/v4/projects/acme%2Fplatform%2Fapp/merge_requests")
        else:
            assert r.headers["authorization"] == f"Basic {REDACTED}"
            assert r.query["api-version"] == "7.1"
            assert r.path.startswith("/acme/Platform%20Team/_apis/git/repositories/app/")
    search = recorded[-1].query
    expected = {
        "github": {"head": f"acme:{HEAD}", "base": BASE, "state": "all"},
        "gitlab": {"source_branch": HEAD, "target_branch": BASE, "state": "all"},
        "azure": {
            "searchCriteria.sourceRefName": f"refs/heads/{HEAD}",
            "searchCriteria.targetRefName": f"refs/heads/{BASE}",
            "searchCriteria.status": "all",
        },
    }[provider]
    assert expected.items() <= search.items()


@pytest.mark.parametrize(
    ("url", "kind", "endpoint", "web"),
    [
        (
            "https://github.com/acme/app.git",
            GitHub,
            "https://api.github.com/repos/acme/app/pulls",
            "https://github.com/acme/app",
        ),
        (
            "git@github.com:acme/app.git",
            GitHub,
            "https://api.github.com/repos/acme/app/pulls",
            "https://github.com/acme/app",
        ),
        (
            "ssh://git@gitlab.com/acme/platform/app.git",
            GitLab,
            "https://gitlab.com/api/v4/projects/acme%2Fplatform%2Fapp/merge_requests",
            "https://gitlab.com/acme/platform/app",
        ),
        (
            "https://acme@dev.azure.com/acme/Platform%20Team/_git/app",
            AzureDevOps,
            "https://dev.azure.com/acme/Platform%20Team/_apis/git/repositories/app/pullrequests",
            "https://dev.azure.com/acme/Platform%20Team/_git/app",
        ),
        (
            "git@ssh.dev.azure.com:v3/acme/Platform%20Team/app",
            AzureDevOps,
            "https://dev.azure.com/acme/Platform%20Team/_apis/git/repositories/app/pullrequests",
            "https://dev.azure.com/acme/Platform%20Team/_git/app",
        ),
        (
            "https://acme.visualstudio.com/DefaultCollection/Web/_git/app",
            AzureDevOps,
            "https://acme.visualstudio.com/DefaultCollection/Web/_apis/git/repositories/app/pullrequests",
            "https://acme.visualstudio.com/DefaultCollection/Web/_git/app",
        ),
        (
            "acme@vs-ssh.visualstudio.com:v3/acme/Web/app",
            AzureDevOps,
            "https://acme.visualstudio.com/Web/_apis/git/repositories/app/pullrequests",
            "https://acme.visualstudio.com/Web/_git/app",
        ),
    ],
)
def test_the_provider_and_api_follow_from_the_repository_url(
    url: str, kind: type, endpoint: str, web: str
) -> None:
    prs = for_repository(url, "not-used-here")
    try:
        assert isinstance(prs, GitHub | GitLab | AzureDevOps) and type(prs) is kind
        assert (prs.endpoint, prs.web) == (endpoint, web)
    finally:
        prs.close()


def test_a_self_hosted_server_names_its_provider() -> None:
    prs = for_repository("https://git.example.com/team/app.git", "t", provider="gitlab")
    try:
        assert isinstance(prs, GitLab)
        assert prs.endpoint == "https://git.example.com/api/v4/projects/team%2Fapp/merge_requests"
    finally:
        prs.close()
    with pytest.raises(InvalidSpec, match="name the provider"):
        for_repository("https://git.example.com/team/app.git", "t")
    with pytest.raises(InvalidSpec, match="credentials"):
        for_repository("https://user:secret-password@github.com/acme/app.git", "t")
