"""The git adapter (``imagedrift.git.repository``) against a real git server on loopback:
a commit lands, an empty diff commits nothing, a concurrent writer's commit is kept and
the push retried, a change someone else made first is a conflict, refused credentials
are said so, and the credentials never appear in a process argument."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagedrift.errors import GitAuthError, GitConflict, GitError
from imagedrift.git.repository import GitCredentials, Repository
from tests.harness.git_server import GitServer
from tests.integration.git_cases import (
    MANIFEST,
    NEW,
    OLD,
    check_a_concurrent_writer_is_kept,
    replace_image,
)


def repository(server: GitServer, name: str, tmp: Path, password: str = "") -> Repository:
    user, secret = server.credentials
    creds = GitCredentials(user, password or secret)
    return Repository(server.url(name), "main", tmp / name, creds, backoff=0.01)


def test_a_commit_lands_and_an_empty_diff_commits_nothing(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST, "README.md": "hi\n"})
    repo = repository(git_server, git_repo, tmp_path)
    pushed = repo.commit(replace_image, "imagedrift: roll web to 1.0.1", "apps")
    assert pushed is not None and pushed.retries == 0 and pushed.files == ("apps/web.yaml",)
    assert git_server.head(git_repo) == pushed.sha
    text = git_server.files(git_repo)["apps/web.yaml"]
    assert text == MANIFEST.replace(OLD, NEW)  # every other byte as it was
    assert git_server.log(git_repo)[0].subject == "imagedrift: roll web to 1.0.1"
    before = git_server.pushes(git_repo)
    assert repo.commit(replace_image, "again", "apps") is None
    assert git_server.pushes(git_repo) == before, "no push on an empty diff"


def test_a_concurrent_writer_is_kept_and_the_push_retried(
    git_server: GitServer, git_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository(git_server, git_repo, tmp_path)
    check_a_concurrent_writer_is_kept(git_server, git_repo, repo, monkeypatch)


def test_a_value_someone_else_changed_first_is_a_conflict(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    git_server.commit(git_repo, {"apps/web.yaml": MANIFEST.replace(OLD, "reg.example/app:9")})
    head = git_server.head(git_repo)
    with pytest.raises(GitConflict, match="no longer says"):
        repository(git_server, git_repo, tmp_path).commit(replace_image, "m", "apps")
    assert git_server.head(git_repo) == head


def test_pushes_refused_over_and_over_stop_with_a_reason(
    git_server: GitServer, git_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST, "apps/n.yaml": "n: 0\n"})
    repo = repository(git_server, git_repo, tmp_path)
    repo.max_attempts = 3
    real_git = repo._git
    count = iter(range(100))

    def git(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
        if args[0] == "push":  # every push loses the race
            git_server.commit(git_repo, {"apps/n.yaml": f"n: {next(count) + 1}\n"})
        return real_git(env, *args, stdin=stdin)

    monkeypatch.setattr(repo, "_git", git)
    with pytest.raises(GitError, match="refused 3 times"):
        repo.commit(replace_image, "m", "apps")
    assert OLD in git_server.files(git_repo)["apps/web.yaml"]


def test_refused_credentials_are_said_so(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    repo = repository(git_server, git_repo, tmp_path, password="wrong")
    with pytest.raises(GitAuthError, match="refused the credentials"):
        repo.fetch()
    no_creds = Repository(git_server.url(git_repo), "main", tmp_path / "anon")
    with pytest.raises(GitAuthError):
        no_creds.fetch()


def test_credentials_never_appear_in_a_process_argument(
    git_server: GitServer, git_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    seen: list[list[str]] = []
    real_run = subprocess.run

    def run(args: list[str], **kw: Any) -> Any:
        seen.append(list(args))
        return real_run(args, **kw)

    monkeypatch.setattr(subprocess, "run", run)
    repository(git_server, git_repo, tmp_path).commit(replace_image, "m", "apps")
    _, password = git_server.credentials
    assert seen and not any(password in arg for args in seen for arg in args)
    with pytest.raises(GitError, match="credentials in a repository URL"):
        Repository("http://u:p@127.0.0.1:1/r.git", "main", tmp_path / "x")


def test_a_branch_moved_while_the_push_updates_it_is_retried_and_counted(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    """Another writer commits between the push's ref advertisement and its update: the
    server refuses the update ("failed to update ref" / "cannot lock ref"), not the client.
    That too is a push another writer beat: fetched, planned again, pushed, and counted."""
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST, "NOTES.md": "notes\n"})
    repo = repository(git_server, git_repo, tmp_path)
    moved: list[str] = []

    def interloper(request: Any) -> None:
        advertised = request.service == "git-receive-pack" and request.method == "GET"
        if advertised and not moved:
            moved.append(git_server.commit_local(git_repo, {"NOTES.md": "them\n"}, append=True))

    refused: list[int] = []
    with git_server.intercept(interloper):
        pushed = repo.commit(
            replace_image, "imagedrift", "apps", on_refused=lambda: refused.append(1)
        )
    assert git_server.hook_errors == []
    assert moved and pushed is not None and pushed.retries == 1 and refused == [1]
    files = git_server.files(git_repo)
    assert files["apps/web.yaml"] == MANIFEST.replace(OLD, NEW)
    assert files["NOTES.md"] == "notes\nthem\n", "the other writer's commit was lost"
    assert [c.sha for c in git_server.log(git_repo)][1] == moved[0]
