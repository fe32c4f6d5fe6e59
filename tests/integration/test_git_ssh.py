"""The git adapter (``imagedrift.git.repository``) over SSH against a real ``sshd`` on
loopback: with the server's host key pinned a commit lands with imagedrift's author and a
concurrent writer's commit is kept; a host key that is not the pinned one, or a client key
the server does not know, is refused with an error that says which, and nothing is pushed;
the private key is never in a process argument or environment, an error, or a file left
behind. SSH URLs carry a login name (``git@host``), which is no credential."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagedrift.errors import GitAuthError, GitError
from imagedrift.git.repository import Author, GitCredentials, Repository
from tests.harness.procs import wait_for
from tests.harness.ssh_git_server import SshGitServer
from tests.integration.git_cases import (
    MANIFEST,
    NEW,
    OLD,
    check_a_concurrent_writer_is_kept,
    replace_image,
)

pytestmark = pytest.mark.timeout(180)

GIT_TIMEOUT = 30.0  # seconds for one git call of the adapter
LOG_WAIT = 10.0  # seconds for sshd to log what it did
AUTHOR = Author("imagedrift-ssh-test", "imagedrift-ssh@example.invalid")


@pytest.fixture(scope="module")
def ssh_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshGitServer]:
    """This module's SSH git server; its repositories live in a temporary directory."""
    with SshGitServer(tmp_path_factory.mktemp("ssh-git")) as server:
        yield server


def repository(
    server: SshGitServer,
    name: str,
    tmp: Path,
    *,
    ssh_key: bytes | None = None,
    known_hosts: bytes | None = None,
) -> Repository:
    creds = GitCredentials(
        ssh_key=server.client_key if ssh_key is None else ssh_key,
        known_hosts=server.known_hosts if known_hosts is None else known_hosts,
    )
    return Repository(
        server.url(name),
        "main",
        tmp / name,
        creds,
        author=AUTHOR,
        timeout=GIT_TIMEOUT,
        backoff=0.01,
    )


def key_pieces(private: bytes) -> list[str]:
    """The private key whole, unwrapped, and each line of it that carries key bytes (the
    first line of the body is the same for every unencrypted ed25519 key)."""
    text = private.decode()
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return [text, "".join(body), *body[1:]]


def assert_no_key(private: bytes, where: str, text: str) -> None:
    found = [i for i, piece in enumerate(key_pieces(private)) if piece in text]
    assert not found, f"private key material (pieces {found}) in {where}"


def sshd_lines(server: SshGitServer, pattern: str, since: int) -> list[str]:
    """sshd's log lines after the first ``since`` characters that match ``pattern``."""
    return [line for line in server.log_text()[since:].splitlines() if re.search(pattern, line)]


def assert_sshd_logged(
    server: SshGitServer, since: int, *, seen: str, unseen: str, what: str
) -> None:
    """After the first ``since`` characters sshd's log gets a line matching ``seen`` (it
    writes a moment after the client is gone, so this waits for it) and has none matching
    ``unseen``."""
    wait_for(lambda: sshd_lines(server, seen, since), what=what, timeout=LOG_WAIT, interval=0.05)
    assert not sshd_lines(server, unseen, since)


def test_a_commit_over_ssh_lands_with_the_host_key_pinned(
    ssh_git: SshGitServer, git_repo: str, tmp_path: Path
) -> None:
    ssh_git.create_repo(git_repo, {"apps/web.yaml": MANIFEST, "README.md": "hi\n"})
    assert ssh_git.url(git_repo).startswith(f"ssh://{ssh_git.user}@127.0.0.1:")
    repo = repository(ssh_git, git_repo, tmp_path)
    assert repo.fetch() == ssh_git.head(git_repo)
    assert repo.files("apps") == {"apps/web.yaml": MANIFEST}
    pushed = repo.commit(replace_image, "imagedrift: roll web to 1.0.1", "apps")
    assert pushed is not None and pushed.retries == 0 and pushed.files == ("apps/web.yaml",)
    assert ssh_git.head(git_repo) == pushed.sha
    files = ssh_git.files(git_repo)
    assert files["apps/web.yaml"] == MANIFEST.replace(OLD, NEW)  # every other byte as it was
    assert files["README.md"] == "hi\n"
    newest = ssh_git.log(git_repo)[0]
    assert newest.sha == pushed.sha
    assert newest.subject == "imagedrift: roll web to 1.0.1"
    assert newest.author == f"{AUTHOR.name} <{AUTHOR.email}>"
    assert repo.commit(replace_image, "again", "apps") is None, "no commit on an empty diff"
    assert ssh_git.head(git_repo) == pushed.sha


def test_a_concurrent_writer_over_ssh_is_kept_and_the_push_retried(
    ssh_git: SshGitServer, git_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository(ssh_git, git_repo, tmp_path)
    assert repo.author == AUTHOR
    check_a_concurrent_writer_is_kept(ssh_git, git_repo, repo, monkeypatch)


@pytest.mark.parametrize("pinned", ["another key for this host", "no key for this host"])
def test_a_host_key_not_pinned_is_refused_before_any_login(
    ssh_git: SshGitServer, git_repo: str, tmp_path: Path, pinned: str
) -> None:
    ssh_git.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    head = ssh_git.head(git_repo)
    if pinned == "another key for this host":
        known_hosts = ssh_git.known_hosts_line(ssh_git.generate_key("impostor-host"))
    else:  # the server's key, but for another port: nothing is known for this one
        known_hosts = ssh_git.known_hosts.replace(f":{ssh_git.port} ".encode(), b":1 ")
    assert known_hosts != ssh_git.known_hosts
    since = len(ssh_git.log_text())
    repo = repository(ssh_git, git_repo, tmp_path, known_hosts=known_hosts)
    with pytest.raises(GitError, match="host key") as caught:
        repo.commit(replace_image, "must not land", "apps")
    assert isinstance(caught.value, GitAuthError)
    assert "SSH host key is not one pinned in known_hosts" in str(caught.value)
    assert_no_key(ssh_git.client_key, "the error", f"{caught.value!s}\n{caught.value!r}")
    assert ssh_git.head(git_repo) == head, "nothing pushed"
    assert ssh_git.log(git_repo)[0].subject == f"Create {git_repo}"
    # ssh gave up after the key exchange: the server never saw a login attempt.
    assert_sshd_logged(
        ssh_git,
        since,
        seen=r"Connection closed by .* \[preauth\]",
        unseen="publickey",
        what="sshd to log the client's disconnect",
    )


def test_a_client_key_the_server_does_not_know_is_refused(
    ssh_git: SshGitServer, git_repo: str, tmp_path: Path
) -> None:
    ssh_git.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    head = ssh_git.head(git_repo)
    stranger = ssh_git.generate_key("stranger")
    since = len(ssh_git.log_text())
    repo = repository(ssh_git, git_repo, tmp_path, ssh_key=stranger.private)
    with pytest.raises(GitAuthError, match="refused the credentials") as caught:
        repo.commit(replace_image, "must not land", "apps")
    assert_no_key(stranger.private, "the error", f"{caught.value!s}\n{caught.value!r}")
    assert ssh_git.head(git_repo) == head, "nothing pushed"
    assert_sshd_logged(
        ssh_git,
        since,
        seen=rf"Failed publickey for {ssh_git.user} ",
        unseen="Accepted publickey",
        what="sshd to log the refused key",
    )


def test_the_private_key_is_never_in_an_argument_an_environment_or_a_file_left(
    ssh_git: SshGitServer, git_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_git.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def run(args: list[str], **kw: Any) -> Any:
        calls.append((list(args), dict(kw.get("env") or {})))
        return real_run(args, **kw)

    monkeypatch.setattr(subprocess, "run", run)
    repo = repository(ssh_git, git_repo, tmp_path)
    assert repr(repo.credentials) == "GitCredentials(ssh)"
    pushed = repo.commit(replace_image, "m", "apps")
    monkeypatch.undo()
    assert pushed is not None and ssh_git.head(git_repo) == pushed.sha
    assert calls
    key = ssh_git.client_key
    for args, env in calls:
        assert_no_key(key, f"the arguments of git {args[1:2]}", "\0".join(args))
        assert_no_key(key, f"the environment of git {args[1:2]}", "\0".join(env.values()))
    # ssh is what git runs with GIT_SSH_COMMAND (plus host and command): a file's path.
    commands = {env.get("GIT_SSH_COMMAND", "") for _, env in calls} - {""}
    assert len(commands) == 1, commands
    key_file = Path(commands.pop().split(" -i ", 1)[1].split(" ", 1)[0])
    assert not key_file.exists() and not key_file.parent.exists(), "the key's files are gone"
    left = [p for p in (tmp_path / git_repo).rglob("*") if p.is_file()]
    assert left
    for path in left:
        assert_no_key(key, str(path.relative_to(tmp_path)), path.read_bytes().decode("latin-1"))


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("ssh://git@git.example/team/fleet.git", False),
        ("ssh://git@git.example:2222/team/fleet.git", False),
        ("git@github.com:acme/fleet.git", False),
        ("git+ssh://git@git.example/team/fleet.git", False),
        ("ssh://git.example/team/fleet.git", False),
        ("https://git.example/team/fleet.git", False),
        ("ssh://git:secret-password@git.example/team/fleet.git", True),
        ("https://token-in-the-user@git.example/team/fleet.git", True),
        ("http://u:p@127.0.0.1:1/r.git", True),
    ],
)
def test_an_ssh_login_name_is_no_credential(url: str, refused: bool, tmp_path: Path) -> None:
    if refused:
        with pytest.raises(GitError, match="credentials in a repository URL"):
            Repository(url, "main", tmp_path / "x")
    else:
        assert Repository(url, "main", tmp_path / "x").url == url
