"""One git repository branch the operator commits to: a shallow clone cached on disk, one
commit per change set, and a push that survives a concurrent writer.

git itself does the work (the ``git`` program, as Flux's and Argo CD's users already trust
it); credentials reach it only through the environment of each call (an HTTP header, or an
SSH key and pinned known hosts in files only this process can read), never in an argument
or a URL, so no process listing, log line or error message can show them.

A push another writer got in first is answered by fetching their commit and applying the
edit again to what is there now: the edit is a function of the files, so it re-reads the
values it replaces, and one that no longer finds them raises ``GitConflict`` instead of
overwriting a human's change. Retries are bounded in count and spaced by a short backoff.
"""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagedrift.core.gitops_source import credentials_in_url
from imagedrift.errors import GitAuthError, GitConflict, GitError

TIMEOUT = 60.0  # seconds for one git call (a fetch of a shallow clone, a push)
MAX_ATTEMPTS = 8  # pushes of one change set, including the first
BACKOFF = 0.2  # seconds before the second attempt, doubling
FRESH = 60.0  # seconds our own last fetch or push stands for the branch's head
YAML = (".yaml", ".yml")
NAMES = ("Kustomization",)  # YAML files without the suffix

# files at the branch's head (relative path -> text) -> the files to write ({} : nothing)
Edit = Callable[[Mapping[str, str]], Mapping[str, str]]


@dataclass(frozen=True)
class GitCredentials:
    """HTTPS basic auth (a token is a password) or an SSH key with its pinned host keys."""

    username: str = ""
    password: str = ""
    ssh_key: bytes = b""
    known_hosts: bytes = b""
    token: str = ""  # for a pull-request API, when it is not the password
    signing_key: bytes = b""  # an SSH private key: every commit is signed with it

    @property
    def api_token(self) -> str:
        return self.token or self.password

    def __repr__(self) -> str:  # never print a secret, whatever logs a value
        kind = "ssh" if self.ssh_key else "basic" if self.password else "none"
        return f"GitCredentials({kind})"


@dataclass(frozen=True)
class Author:
    name: str = "imagedrift"
    email: str = "imagedrift@users.noreply.localhost"


@dataclass(frozen=True)
class Pushed:
    sha: str  # the commit now at the branch's head
    retries: int  # pushes refused because another writer got in first
    files: tuple[str, ...]  # what the commit changed


@dataclass(frozen=True)
class Proposed:
    sha: str  # the commit at the head branch's tip
    pushed: bool  # False: the head branch already held exactly these files
    files: tuple[str, ...]  # what the change touches, against the base


class Repository:
    """A branch of one repository, cloned shallow under ``root``. Thread-safe: one commit
    at a time per branch (pushes to one branch are serialised inside the operator)."""

    def __init__(
        self,
        url: str,
        branch: str,
        root: Path,
        credentials: GitCredentials | None = None,
        *,
        author: Author | None = None,
        timeout: float = TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = BACKOFF,
        fresh_for: float = FRESH,
    ) -> None:
        if credentials_in_url(url):
            raise GitError("credentials in a repository URL are refused: use a Secret")
        self.url = url
        self.branch = branch
        self.root = root
        self.credentials = credentials or GitCredentials()
        self.author = author or Author()
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.fresh_for = fresh_for
        self.lock = threading.Lock()
        # When the checkout last was the branch's head, as fetched or as we pushed it: a
        # write soon after starts from it without a fetch (a push another writer beat is
        # refused, and then it fetches), so a repository several policies write to in one
        # interval is fetched about once, not once per policy.
        self._synced: float | None = None

    # -- reading --------------------------------------------------------------------------

    def fetch(self) -> str:
        """The branch's head from the server, checked out in the cache; its commit id."""
        with self._env() as env:
            return self._fetch(env)

    def files(self, path: str | Sequence[str] = "") -> dict[str, str]:
        """The YAML files under ``path`` (or each of several) at the checked-out head,
        relative to the repository's root."""
        out: dict[str, str] = {}
        for one in [path] if isinstance(path, str) else path:
            out.update(self._files(one))
        return out

    def _files(self, path: str) -> dict[str, str]:
        base, root = self._inside(path), self.root.resolve()
        out: dict[str, str] = {}
        for file in sorted(base.rglob("*")) if base.is_dir() else [base]:
            rel = file.relative_to(root)
            yaml = file.suffix in YAML or file.name in NAMES
            if file.is_file() and yaml and ".git" not in rel.parts:
                out[rel.as_posix()] = file.read_bytes().decode("utf-8", errors="surrogateescape")
        return out

    # -- writing --------------------------------------------------------------------------

    def commit(
        self,
        edit: Edit,
        message: str,
        path: str | Sequence[str] = "",
        *,
        author: Author | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> Pushed | None:
        """Fetch, apply ``edit`` to the files under ``path``, commit (by ``author``, else the
        repository's) and push; on a refused push (another writer first) fetch and apply it
        again. None when the edit changes nothing (no commit on an empty diff). Every
        refused push is also told to ``on_refused`` as it happens (counted even when the
        write then fails or finds nothing left to do). Raises GitConflict, GitAuthError,
        GitError."""
        who = author or self.author
        with self.lock, self._env() as env:
            retries = 0
            for attempt in range(self.max_attempts):
                try:
                    trusted = self._sync(env, trust_fresh=attempt == 0)
                    changed = self._stage(env, edit(self.files(path)))
                    if not changed and trusted:
                        # "Nothing to do" is never decided on a checkout not fetched now.
                        self._synced = None
                        continue
                    if not changed:
                        return None
                    sha = self._commit(env, who, message)
                except BaseException:
                    self._synced = None  # whatever the checkout holds now, fetch next time
                    raise
                try:
                    self._git(env, "push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
                    self._synced = time.monotonic()
                except _Rejected:
                    self._synced = None
                    retries += 1
                    if on_refused is not None:
                        on_refused()
                    if attempt + 1 < self.max_attempts:
                        # Jittered: two writers that collided once should not again.
                        time.sleep(min(self.backoff * 2**attempt, 5.0) * random.uniform(0.5, 1.5))
                    continue
                return Pushed(sha, retries, tuple(sorted(changed)))
            raise GitError(
                f"push to {self.url} branch {self.branch} refused {retries} times "
                "(other writers kept getting in first)"
            )

    def propose(
        self,
        edit: Edit,
        message: str,
        head: str,
        path: str | Sequence[str] = "",
        *,
        author: Author | None = None,
    ) -> Proposed | None:
        """The change for a pull request: fetch this branch (the base), apply ``edit``,
        commit, and make ``head`` that commit. ``head`` is imagedrift's own branch: it is
        pushed only when its files would change (a force push: the edit is planned on the
        base again each time, with every workload the pull request carries), so a check
        that has nothing new leaves it, and its pull request, as they are. None when the
        edit changes nothing on the base (no branch, no pull request on an empty diff)."""
        who = author or self.author
        with self.lock, self._env() as env:
            self._fetch(env)
            self._synced = None  # the checkout will hold the proposal, not the base's head
            changed = self._stage(env, edit(self.files(path)))
            if not changed:
                return None
            tree = self._git(env, "write-tree").strip()
            remote = f"refs/remotes/origin/{head}"
            try:
                self._git(
                    env,
                    "fetch",
                    "--quiet",
                    "--depth",
                    "1",
                    "origin",
                    f"+refs/heads/{head}:{remote}",
                )
                there = self._git(env, "rev-parse", f"{remote}^{{tree}}").strip()
            except GitAuthError:
                raise
            except GitError:
                there = ""  # no such branch yet
            if there == tree:
                sha = self._git(env, "rev-parse", remote).strip()
                return Proposed(sha, False, tuple(sorted(changed)))
            sha = self._commit(env, who, message)
            self._git(env, "push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{head}")
            return Proposed(sha, True, tuple(sorted(changed)))

    # -- internals ------------------------------------------------------------------------

    def _stage(self, env: dict[str, str], edited: Mapping[str, str]) -> dict[str, str]:
        """Write and stage the files ``edited`` changes; those it really changes."""
        changed = {p: t for p, t in edited.items() if self._differs(p, t)}
        for rel, text in changed.items():
            target = self._inside(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        if changed:
            self._git(env, "add", "--", *changed)
        return changed

    def _commit(self, env: dict[str, str], who: Author, message: str) -> str:
        """Commit what is staged (signed when the credentials carry a signing key)."""
        identity = ("-c", f"user.name={who.name}", "-c", f"user.email={who.email}")
        self._git(env, *identity, "commit", "--quiet", "--no-verify", "-F", "-", stdin=message)
        return self._git(env, "rev-parse", "HEAD").strip()

    def _differs(self, rel: str, text: str) -> bool:
        target = self._inside(rel)
        return not target.is_file() or target.read_bytes() != text.encode(
            "utf-8", errors="surrogateescape"
        )

    def _inside(self, rel: str) -> Path:
        """``rel`` under the clone; never outside it (a path from a spec or a file)."""
        target = (self.root / rel.lstrip("/")).resolve()
        root = self.root.resolve()
        if target != root and root not in target.parents:
            raise GitConflict(f"path {rel!r} leaves the repository")
        return target

    def _sync(self, env: dict[str, str], *, trust_fresh: bool) -> bool:
        """The checkout at the branch's head: fetched, or (``trust_fresh``) as it was left
        by our own fetch or push less than ``fresh_for`` seconds ago, cleaned. True when
        it was not fetched."""
        synced = self._synced
        if trust_fresh and synced is not None and time.monotonic() - synced < self.fresh_for:
            self._git(env, "checkout", "--quiet", "--force", "--detach", "HEAD")
            self._git(env, "clean", "--quiet", "-d", "--force")
            return True
        self._fetch(env)
        return False

    def _fetch(self, env: dict[str, str]) -> str:
        if not (self.root / ".git").is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            self._git(env, "init", "--quiet")
            self._git(env, "remote", "add", "origin", self.url)
        remote = f"refs/remotes/origin/{self.branch}"
        self._git(
            env, "fetch", "--quiet", "--depth", "1", "origin", f"+refs/heads/{self.branch}:{remote}"
        )
        self._git(env, "checkout", "--quiet", "--force", "--detach", remote)
        self._git(env, "clean", "--quiet", "-d", "--force")
        self._synced = time.monotonic()
        return self._git(env, "rev-parse", "HEAD").strip()

    def _git(self, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=self.root,
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(
                f"git {args[0]} on {self.url} took longer than {self.timeout:g}s"
            ) from None
        if done.returncode == 0:
            return done.stdout
        said = [line for line in (done.stderr or done.stdout).strip().splitlines() if line]
        # The cause, not git's closing "failed to push some refs" line.
        telling = [line for line in said if "failed to push some refs" not in line]
        last = (telling or said or [f"exit code {done.returncode}"])[-1].strip()
        if args and args[0] == "push" and any(w in done.stderr for w in _MOVED_WORDS):
            raise _Rejected(last)
        if "Host key verification failed" in done.stderr:  # ours refused theirs: say so
            raise GitAuthError(
                f"{self.url}: the server's SSH host key is not one pinned in known_hosts "
                "(Host key verification failed)"
            )
        if any(w in done.stderr for w in _AUTH_WORDS) or _AUTH_STATUS.search(done.stderr):
            raise GitAuthError(f"{self.url}: the server refused the credentials ({last})")
        raise GitError(f"git {args[0]} on {self.url}: {last}")

    @contextmanager
    def _env(self) -> Iterator[dict[str, str]]:
        """The environment of every git call: no user or system config, no prompt, and the
        credentials; an SSH key lives in a private directory for as long as the calls."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",  # a server that asks for credentials gets none: refused
            "LC_ALL": "C",  # error words are matched in English
        }
        creds = self.credentials
        keys: list[tuple[str, str]] = []
        scratch = None
        try:
            if creds.password:
                token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
                keys.append(("http.extraHeader", f"Authorization: Basic {token}"))
            if creds.ssh_key or creds.signing_key:
                scratch = Path(tempfile.mkdtemp(prefix="imagedrift-ssh-"))
            if creds.signing_key:
                assert scratch is not None
                signer = scratch / "signing-key"
                signer.write_bytes(creds.signing_key)
                signer.chmod(0o600)
                # SSH signatures (git 2.34+): `git verify-commit` with an allowed-signers file.
                keys += [
                    ("gpg.format", "ssh"),
                    ("user.signingKey", str(signer)),
                    ("commit.gpgSign", "true"),
                ]
            if creds.ssh_key:
                assert scratch is not None
                key, hosts = scratch / "key", scratch / "known_hosts"
                key.write_bytes(creds.ssh_key)
                hosts.write_bytes(creds.known_hosts)
                key.chmod(0o600)
                env["GIT_SSH_COMMAND"] = (
                    f"ssh -F /dev/null -i {key} -o IdentitiesOnly=yes "
                    f"-o UserKnownHostsFile={hosts} -o GlobalKnownHostsFile=/dev/null "
                    "-o StrictHostKeyChecking=yes -o BatchMode=yes"
                )
            else:
                # No key of ours: never the process user's keys, config or a prompt.
                env["GIT_SSH_COMMAND"] = (
                    "ssh -F /dev/null -o IdentitiesOnly=yes -o IdentityFile=/dev/null "
                    "-o StrictHostKeyChecking=yes -o BatchMode=yes"
                )
            env["GIT_CONFIG_COUNT"] = str(len(keys))
            for i, (name, value) in enumerate(keys):
                env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = name, value
            yield env
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


class _Rejected(GitError):
    """The server refused a push because the branch moved (another writer first)."""


_AUTH_WORDS = (
    "Authentication failed",
    "could not read Username",
    "could not read Password",
    "Permission denied",
    "terminal prompts disabled",
)
# An HTTP status in git's own words (a port or a sha holding "401" is not one).
_AUTH_STATUS = re.compile(
    r"returned error: 40[13]\b|\bHTTP 40[13]\b|\b40[13] (Unauthorized|Forbidden)"
)
# The branch moved under the push: another writer was first (refused before the update, or
# by the server's ref lock while updating): fetch, plan again, push again.
_MOVED_WORDS = (
    "[rejected]",
    "fetch first",
    "non-fast-forward",
    "failed to update ref",
    "cannot lock ref",
    "[remote rejected]",
)
