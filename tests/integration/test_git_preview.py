"""GitOps write-back previewed (``engine.git_preview``) against the real git server: the
diff is exactly what ``GitWriter`` commits (applied with ``git apply`` it gives the same
files), outcomes are the writer's, and nothing is ever pushed."""

from __future__ import annotations

from pathlib import Path

from imagedrift.engine.git_preview import GitPreview, unified_diff
from imagedrift.engine.git_writes import GitWriter, Written
from imagedrift.git.repository import Author, GitCredentials
from tests.harness.bare_repos import local_git
from tests.harness.git_server import GitServer
from tests.integration.test_git_writes import NEW, OLD, manifest, write

FLUX = '  # {"$imagepolicy": "flux-system:api"}'


def preview(server: GitServer, password: str | None = None) -> GitPreview:
    user, real = server.credentials
    creds = GitCredentials(user, real if password is None else password)
    return GitPreview(lambda url: creds)


def receive_packs(server: GitServer, name: str) -> int:
    """Every request of a push, refused or not (the advertisement included)."""
    return len(server.requests_for(name, service="git-receive-pack"))


def test_the_diff_is_the_commit_the_writer_makes_and_nothing_is_pushed(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    files = {"apps/web.yaml": manifest("web"), "apps/api.yaml": manifest("api", FLUX)}
    url = git_server.create_repo(git_repo, files)
    twin = git_server.create_repo(f"{git_repo}-twin", files)
    head = git_server.head(git_repo)
    author = Author("bot", "bot@example.invalid")

    shown = preview(git_server)
    done = shown.write([write(url, "web"), write(url, "api")], "roll shop", author=author)

    web, api = done["deployment/shop/web"], done["deployment/shop/api"]
    assert (web.outcome, web.sha, web.files) == (Written.COMMITTED, "", ("apps/web.yaml",))
    assert api.outcome is Written.REFUSED and "$imagepolicy" in api.reason
    [commit] = shown.commits
    assert (commit.url, commit.branch, commit.parent, commit.message, commit.author) == (
        url,
        "main",
        head,
        "roll shop",
        author,
    )
    assert commit.written == (web, api) and commit.error == ""
    old, new = OLD.format(app="web"), NEW.format(app="web")
    assert [line for line in commit.diff.splitlines() if line[:1] in "+-"] == [
        "--- a/apps/web.yaml",
        "+++ b/apps/web.yaml",
        f"-          image: {old}",
        f"+          image: {new}",
    ]
    assert git_server.head(git_repo) == head and receive_packs(git_server, git_repo) == 0

    # The writer commits exactly what the preview showed.
    user, password = git_server.credentials
    writer = GitWriter(tmp_path / "writer", lambda url: GitCredentials(user, password))
    writer.write([write(twin, "web"), write(twin, "api")], "roll shop")
    clone, diff = tmp_path / "clone", tmp_path / "preview.diff"
    diff.write_text(commit.diff)
    local_git("clone", "--quiet", str(git_server.root / f"{git_repo}.git"), str(clone))
    local_git("apply", str(diff), cwd=clone)
    for path, text in git_server.files(f"{git_repo}-twin").items():
        assert (clone / path).read_text() == text, path


def test_up_to_date_failed_and_refused_credentials_push_nothing(
    git_server: GitServer, git_repo: str
) -> None:
    new = NEW.format(app="web")
    url = git_server.create_repo(
        git_repo, {"apps/web.yaml": manifest("web").replace(OLD.format(app="web"), new)}
    )
    shown = preview(git_server)
    missing = git_server.url(f"{git_repo}-missing")
    done = shown.write([write(url, "web"), write(missing, "api")], "m")
    assert done["deployment/shop/web"].outcome is Written.UP_TO_DATE
    assert done["deployment/shop/api"].outcome is Written.FAILED
    there, gone = shown.commits
    assert there.diff == "" and there.error == ""
    assert (gone.parent, gone.diff) == ("", "") and gone.error == done["deployment/shop/api"].reason

    wrong = preview(git_server, password="not-the-password")
    refused = wrong.write([write(url, "web")], "m")["deployment/shop/web"]
    assert refused.outcome is Written.FAILED and "refused the credentials" in refused.reason
    assert "not-the-password" not in refused.reason
    assert receive_packs(git_server, git_repo) == 0


def test_a_proposal_is_planned_on_the_base_and_its_branch_never_pushed(
    git_server: GitServer, git_repo: str
) -> None:
    url = git_server.create_repo(git_repo, {"apps/web.yaml": manifest("web")})
    shown = preview(git_server)
    done, proposed = shown.propose([write(url, "web")], "roll shop", "imagedrift/shop-1")
    assert done["deployment/shop/web"].outcome is Written.COMMITTED
    assert proposed is not None and (proposed.sha, proposed.files) == ("", ("apps/web.yaml",))
    [commit] = shown.commits
    assert (commit.branch, commit.proposed_on) == ("main", "imagedrift/shop-1")
    assert f"+          image: {NEW.format(app='web')}" in commit.diff.splitlines()
    assert receive_packs(git_server, git_repo) == 0
    branches = local_git("branch", "--list", cwd=git_server.root / f"{git_repo}.git")
    assert "imagedrift/" not in branches


def test_a_new_file_and_a_last_line_without_newline_read_as_git_shows_them() -> None:
    assert unified_diff({"a.yaml": "x: 1\n"}, {"a.yaml": "x: 1\n"}) == ""
    assert unified_diff({}, {"new.yaml": "a: 1\n"}) == (
        "--- /dev/null\n+++ b/new.yaml\n@@ -0,0 +1 @@\n+a: 1\n"
    )
    assert unified_diff({"a.yaml": "x: 1"}, {"a.yaml": "x: 2"}) == (
        "--- a/a.yaml\n+++ b/a.yaml\n@@ -1 +1 @@\n-x: 1\n\\ No newline at end of file\n"
        "+x: 2\n\\ No newline at end of file\n"
    )
