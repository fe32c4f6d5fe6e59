"""The bare repositories a git test server keeps under its ``root``, made and read on disk.

Both test servers (``GitServer`` over HTTP, ``SshGitServer`` over SSH) keep their
repositories the same way and differ only in how a client reaches them, so that part lives
here once: ``BareRepositories`` names a repository's directory (``<name>.git``), makes one
with one commit (``create_repo``), changes files as an outside writer does, through the
server (``commit``) or straight into the bare repository (``commit_local``: fast, and
absent from a server's request log), and reads a branch straight from the bare repository
(``head``, ``files``, ``log``, ``message``). A server adds how a client runs git, a
repository's URL and where scratch clones go.

git on the repositories' files runs with ``local_env()``: no user or system configuration,
no prompt, and the outside writer's identity in every commit it makes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from tests.harness.procs import HarnessError

GIT_TIMEOUT: Final = 60.0
# Attempts of one ``commit_local`` whose branch keeps moving under it (pushes through the
# server land in between): each reads the branch again.
LOCAL_ATTEMPTS: Final = 20
# The outside writer's identity in the commits it makes.
WRITER_NAME: Final = "Outside Writer"
WRITER_EMAIL: Final = "writer@example.invalid"


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str  # "Name <email>"


class BareRepositories(ABC):
    """Bare repositories ``<name>.git`` under ``root``; a git test server subclasses it."""

    # git configuration each new repository gets (the HTTP backend refuses pushes without
    # ``http.receivepack``).
    repo_config: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @abstractmethod
    def url(self, name: str) -> str:
        """Where a client of the server finds repository ``name``."""

    @abstractmethod
    def _client_git(self, *args: str, cwd: Path | None = None) -> str:
        """git as a client of the server (through it, not on the files); its stdout."""

    @abstractmethod
    def _work_dir(self) -> Path:
        """A private directory for scratch clones; ``HarnessError`` when not started."""

    def create_repo(self, name: str, files: Mapping[str, str], *, branch: str = "main") -> str:
        """A new bare repository ``<name>.git`` whose ``branch`` has one commit holding
        ``files`` (path -> text); returns its URL. Made on disk, not through the server."""
        bare = self._bare(name)
        if bare.exists():
            raise HarnessError(f"repository {name} exists already")
        bare.parent.mkdir(parents=True, exist_ok=True)
        local_git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
        for key, value in self.repo_config:
            local_git("config", key, value, cwd=bare)
        work = Path(tempfile.mkdtemp(prefix="create-", dir=self._work_dir()))
        try:
            local_git("init", "--quiet", f"--initial-branch={branch}", str(work))
            write_files(work, files)
            local_git("add", "--all", cwd=work)
            local_git("commit", "--quiet", "--message", f"Create {name}", cwd=work)
            local_git("push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.url(name)

    def commit(
        self,
        name: str,
        files: Mapping[str, str | None],
        *,
        message: str = "Change files",
        branch: str = "main",
    ) -> str:
        """As an outside writer: clone ``branch`` through the server, write ``files``
        (``None`` deletes a path), commit and push; returns the new commit's sha."""
        work = Path(tempfile.mkdtemp(prefix="writer-", dir=self._work_dir()))
        try:
            git = self._client_git
            git(
                "clone", "--quiet", "--branch", branch, "--single-branch", self.url(name), str(work)
            )
            write_files(work, files)
            git("add", "--all", cwd=work)
            git("commit", "--quiet", "--allow-empty", "--message", message, cwd=work)
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work).strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def commit_local(
        self,
        name: str,
        files: Mapping[str, str | None],
        *,
        message: str = "Change files",
        branch: str = "main",
        append: bool = False,
    ) -> str:
        """As an outside writer, straight into the bare repository (no clone, no request to
        the server): one commit on ``branch`` writing ``files`` (``None`` deletes a path;
        with ``append``, each text is added to the end of the file as the branch has it);
        returns its sha. Thread-safe, and safe against pushes through the server: the
        branch moves only from the head the commit was made on (a compare-and-swap), else
        the commit is made again on the new head, at most ``LOCAL_ATTEMPTS`` times."""
        bare = self._bare(name)
        ref = f"refs/heads/{branch}"
        work = Path(tempfile.mkdtemp(prefix="local-", dir=self._work_dir()))
        # Its own index: the bare repository has none, and concurrent writers share nothing.
        env = {**local_env(), "GIT_INDEX_FILE": str(work / "index")}

        def git(*args: str) -> str:
            return run(["git", *args], what=f"git {' '.join(args)}", cwd=bare, env=env)

        moved: HarnessError | None = None
        try:
            for _ in range(LOCAL_ATTEMPTS):
                parent = git("rev-parse", "--verify", ref).strip()
                git("read-tree", parent)
                for path, text in files.items():
                    if text is None:
                        git("update-index", "--force-remove", "--", path)
                        continue
                    if append and git("ls-tree", "--name-only", parent, "--", path).strip():
                        text = git("show", f"{parent}:{path}") + text
                    blob = work / "blob"
                    blob.write_text(text)
                    sha = git("hash-object", "-w", "--", str(blob)).strip()
                    git("update-index", "--add", "--cacheinfo", f"100644,{sha},{path}")
                tree = git("write-tree").strip()
                made = git("commit-tree", tree, "-p", parent, "-m", message).strip()
                try:
                    git("update-ref", "-m", message, ref, made, parent)
                    return made
                except HarnessError as exc:
                    moved = exc  # the branch moved since it was read: again, on its new head
        finally:
            shutil.rmtree(work, ignore_errors=True)
        raise HarnessError(
            f"{name} branch {branch} moved under {LOCAL_ATTEMPTS} local commits in a row"
        ) from moved

    def head(self, name: str, *, branch: str = "main") -> str:
        """The sha ``branch`` points at, read from the bare repository."""
        return local_git("rev-parse", f"refs/heads/{branch}", cwd=self._bare(name)).strip()

    def files(self, name: str, *, branch: str = "main") -> dict[str, str]:
        """Every file on ``branch`` (path -> text), read from the bare repository."""
        bare = self._bare(name)
        listing = local_git("ls-tree", "-r", "-z", "--name-only", f"refs/heads/{branch}", cwd=bare)
        return {
            path: local_git("show", f"refs/heads/{branch}:{path}", cwd=bare)
            for path in listing.split("\0")
            if path
        }

    def log(self, name: str, *, branch: str = "main") -> list[Commit]:
        """The commits of ``branch``, newest first."""
        out = local_git(
            "log",
            "-z",
            "--format=%H%x1f%s%x1f%an <%ae>",
            f"refs/heads/{branch}",
            cwd=self._bare(name),
        )
        commits = []
        for record in out.split("\0"):
            if record.strip():
                sha, subject, author = record.strip("\n").split("\x1f")
                commits.append(Commit(sha, subject, author))
        return commits

    def message(self, name: str, sha: str) -> str:
        """The full message of commit ``sha``."""
        return local_git("log", "-1", "--format=%B", sha, cwd=self._bare(name))

    def _bare(self, name: str) -> Path:
        if not name or name.startswith(("/", ".")) or ".." in name.split("/"):
            raise HarnessError(f"not a repository name: {name!r}")
        return self.root / f"{name}.git"


def local_env() -> dict[str, str]:
    """This process's environment without its ``GIT_*`` variables, plus: no user or system
    git configuration, no prompt, and the outside writer as author and committer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": WRITER_NAME,
            "GIT_AUTHOR_EMAIL": WRITER_EMAIL,
            "GIT_COMMITTER_NAME": WRITER_NAME,
            "GIT_COMMITTER_EMAIL": WRITER_EMAIL,
        }
    )
    return env


def local_git(*args: str, cwd: Path | None = None) -> str:
    """git on the repositories' files (with ``local_env()``); its stdout."""
    return run(["git", *args], what=f"git {' '.join(args)}", cwd=cwd, env=local_env())


def run(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
) -> str:
    """``argv``'s stdout; ``HarnessError`` naming ``what`` (with its stderr) when it cannot
    run, times out or exits non-zero. Its stdin is empty, so nothing can prompt."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise HarnessError(
            f"{what} failed with code {done.returncode}:\n{(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def write_files(work: Path, files: Mapping[str, str | None]) -> None:
    """Write ``files`` (path -> text) into the work tree ``work``; ``None`` deletes a path."""
    for relative, text in files.items():
        target = work / relative
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


__all__ = [
    "GIT_TIMEOUT",
    "LOCAL_ATTEMPTS",
    "WRITER_EMAIL",
    "WRITER_NAME",
    "BareRepositories",
    "Commit",
    "local_env",
    "local_git",
    "run",
    "write_files",
]
