"""GitOps write-back, the write: one commit per repository and branch for every workload
of a check that goes there, through the YAML setters, pushed once.

Workloads are grouped by (repository, branch); each group is one ``Repository.commit``,
fetched once (again only when another writer pushed first), whose edit plans every
workload of the group on the files as they are at the branch's head, each on the output
of the one before (two workloads in one file make one commit). What cannot be written is
that workload's reason, never the group's: a Flux marker on one workload's value refuses
that one, and the others are committed. A server fault is the reason of every workload of
its group, and the other groups go on. Clones are kept for the repositories in use, at
most ``max_repositories`` and ``max_bytes`` on disk, the least recently used removed first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from imagedrift.core import setters
from imagedrift.core.gitops_source import GitSource
from imagedrift.errors import GitError
from imagedrift.git.repository import Author, GitCredentials, Proposed, Repository

MAX_REPOSITORIES = 50
MAX_BYTES = 512 * 1024 * 1024  # on disk, all clones together


class Written(StrEnum):
    COMMITTED = "Committed"  # in the commit pushed (``sha``)
    UP_TO_DATE = "UpToDate"  # the files already say the new image: nothing to commit
    REFUSED = "Refused"  # a place must not be edited (a Flux marker, an alias, ...)
    NOT_FOUND = "NotFound"  # nothing in the files sets this image
    FAILED = "Failed"  # the repository could not be read or written (retry with backoff)


@dataclass(frozen=True)
class GitWrite:
    """Set one workload's containers to each ``change.new_image`` in the files under
    ``source``: all of them or none (half a workload is worse than none)."""

    key: str  # the workload's key
    source: GitSource
    changes: tuple[setters.ImageChange, ...]
    layout: setters.Layout = field(default_factory=setters.Layout)


@dataclass(frozen=True)
class GitWritten:
    key: str
    outcome: Written
    reason: str
    sha: str = ""  # the commit that holds it
    files: tuple[str, ...] = ()  # repository-relative paths this workload's edit changed
    retries: int = 0  # pushes another writer beat first
    pull_request: str = ""  # the pull request that proposes it (its web URL)
    head: str = ""  # ... and its branch


class GitWriter:
    def __init__(
        self,
        root: Path,
        credentials: Callable[[str], GitCredentials | None],
        *,
        author: Author | None = None,
        max_repositories: int = MAX_REPOSITORIES,
        max_bytes: int = MAX_BYTES,
        on_write: Callable[[str, str], None] | None = None,
    ) -> None:
        self.root = root
        self._credentials = credentials
        self._author = author
        self._max = max_repositories
        self._max_bytes = max_bytes
        self._sizes: dict[tuple[str, str], int] = {}  # bytes of each clone kept
        # (repository URL, "committed" | "failed" | "refused"): the metrics' hook; a
        # refused push is told as it happens, whatever becomes of the write
        self._hook = on_write or (lambda url, outcome: None)
        self._repos: OrderedDict[tuple[str, str], Repository] = OrderedDict()
        self._lock = threading.Lock()

    def write(
        self, writes: Sequence[GitWrite], message: str, *, author: Author | None = None
    ) -> dict[str, GitWritten]:
        """Commit ``writes`` (one commit per repository and branch, ``message`` each, by
        ``author`` or the writer's own); what became of each, by workload key. Never
        raises for a repository's fault."""
        out: dict[str, GitWritten] = {}
        # One repository after the other: the workers already check policies side by side,
        # and more git processes at once were slower, not faster (bench_gitops).
        for (url, branch), group in by_branch(writes).items():
            out.update(self._write_group(url, branch, group, message, author))
        return out

    def propose(
        self, writes: Sequence[GitWrite], message: str, head: str, *, author: Author | None = None
    ) -> tuple[dict[str, GitWritten], Proposed | None]:
        """``writes`` (one repository and base branch) as one commit on ``head``, planned on
        the base (``Repository.propose``): what became of each, and the branch's tip (None:
        nothing to propose, or it failed). Never raises for a repository's fault."""
        url, branch = writes[0].source.url, writes[0].source.branch
        planned, edit = _edit(writes)
        try:
            repo = self._repository(url, branch)
            paths = sorted({w.source.path for w in writes})
            proposed = repo.propose(edit, message, head, paths, author=author)
            self._measure(repo)
        except GitError as exc:  # refused credentials and conflicts too
            self._hook(url, "failed")
            return {w.key: GitWritten(w.key, Written.FAILED, str(exc)) for w in writes}, None
        if proposed is not None and proposed.pushed:
            self._hook(url, "committed")
        sha = proposed.sha if proposed is not None else None
        return {key: landed(result, sha) for key, result in planned.items()}, proposed

    def _write_group(
        self,
        url: str,
        branch: str,
        group: Sequence[GitWrite],
        message: str,
        author: Author | None,
    ) -> dict[str, GitWritten]:
        planned, edit = _edit(group)
        try:
            repo = self._repository(url, branch)
            paths = sorted({w.source.path for w in group})
            pushed = repo.commit(
                edit,
                message,
                paths,
                author=author,
                on_refused=lambda: self._hook(url, "refused"),
            )
            self._measure(repo)
        except GitError as exc:  # refused credentials and conflicts too
            self._hook(url, "failed")
            return {w.key: GitWritten(w.key, Written.FAILED, str(exc)) for w in group}
        if pushed is not None:
            self._hook(url, "committed")  # its refused pushes were told as they came
        sha = pushed.sha if pushed is not None else None
        retries = pushed.retries if pushed is not None else 0
        return {key: landed(result, sha, retries) for key, result in planned.items()}

    def _measure(self, repo: Repository) -> None:
        size = _size(repo.root)
        with self._lock:
            if self._repos.get((repo.url, repo.branch)) is repo:
                self._sizes[repo.url, repo.branch] = size

    def _repository(self, url: str, branch: str) -> Repository:
        key = (url, branch)
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                where = self.root / quote(f"{url}#{branch}", safe="")
                repo = Repository(url, branch, where, author=self._author)
                self._repos[key] = repo
            self._repos.move_to_end(key)
            evicted = []
            while len(self._repos) > self._max:
                evicted.append(self._repos.popitem(last=False)[1])
            # The volume is bounded too: the least recently used go until the rest fit.
            # Each clone is measured once after each write to it (``_measure``): walking
            # every clone on every write cost more CPU than the writes (bench_gitops).
            for gone in [k for k in self._sizes if k not in self._repos]:
                del self._sizes[gone]
            total = sum(self._sizes.values())
            for k in list(self._repos):
                if total <= self._max_bytes or k == key:
                    break
                total -= self._sizes.pop(k, 0)
                evicted.append(self._repos.pop(k))
        for old in evicted:
            with old.lock:  # not while a commit runs in it
                shutil.rmtree(old.root, ignore_errors=True)
        # Read again for every write: a rotated Secret is used from the next write on.
        repo.credentials = self._credentials(url) or GitCredentials()
        return repo


def _size(root: Path) -> int:
    """Bytes under ``root`` (0 when it is not there yet)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):  # removed meanwhile: not there
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _edit(
    group: Sequence[GitWrite],
) -> tuple[dict[str, GitWritten], Callable[[Mapping[str, str]], dict[str, str]]]:
    """The edit of a commit carrying ``group``, and where it says what became of each
    write (planned again on every attempt, on the files as they are then)."""
    planned: dict[str, GitWritten] = {}

    def edit(files: Mapping[str, str]) -> dict[str, str]:
        planned.clear()
        written, changed = plan_group(group, files)
        planned.update((w.key, w) for w in written)
        return changed

    return planned, edit


def plan_group(
    group: Sequence[GitWrite], files: Mapping[str, str]
) -> tuple[list[GitWritten], dict[str, str]]:
    """Each write of one commit planned on ``files``, each on the output of the one before,
    and the files as the commit would leave them (only those that change)."""
    current = dict(files)
    written: list[GitWritten] = []
    for w in group:
        result, texts = plan_write(w, current)
        written.append(result)
        current.update(texts)
    return written, {p: t for p, t in current.items() if files.get(p) != t}


def plan_write(w: GitWrite, files: Mapping[str, str]) -> tuple[GitWritten, dict[str, str]]:
    """What the setters say of ``w`` on ``files`` (repository-relative), and the new texts
    of the files it changes: every change planned on the output of the one before; one
    that cannot be written drops them all."""
    prefix = f"{w.source.path}/" if w.source.path else ""
    mine = {p[len(prefix) :]: t for p, t in files.items() if p.startswith(prefix)}
    texts: dict[str, str] = {}
    reasons: list[str] = []
    for change in w.changes:
        plan = setters.plan_write_back(mine, change, w.layout)
        outcome = _OUTCOMES[plan.outcome]
        if outcome in (Written.REFUSED, Written.NOT_FOUND):
            return GitWritten(w.key, outcome, f"{change.container}: {plan.reason}"), {}
        reasons.append(plan.reason)
        for f in plan.files:
            mine[f.path] = f.text
            texts[prefix + f.path] = f.text
    outcome = Written.COMMITTED if texts else Written.UP_TO_DATE
    reason = "; ".join(r for r in reasons if r)
    return GitWritten(w.key, outcome, reason, files=tuple(sorted(texts))), texts


_OUTCOMES = {
    setters.Outcome.WRITE: Written.COMMITTED,
    setters.Outcome.UP_TO_DATE: Written.UP_TO_DATE,
    setters.Outcome.REFUSED: Written.REFUSED,
    setters.Outcome.NOT_FOUND: Written.NOT_FOUND,
}


def by_branch(writes: Sequence[GitWrite]) -> dict[tuple[str, str], list[GitWrite]]:
    """Writes by (repository URL, branch): one commit each."""
    groups: dict[tuple[str, str], list[GitWrite]] = {}
    for w in writes:
        groups.setdefault((w.source.url, w.source.branch), []).append(w)
    return groups


def landed(result: GitWritten, sha: str | None, retries: int = 0) -> GitWritten:
    """A planned write once its commit was pushed as ``sha`` (None: nothing was to be
    committed: every file already as planned, someone wrote the same meanwhile)."""
    if result.outcome is not Written.COMMITTED:
        return result
    if sha is None:
        return replace(result, outcome=Written.UP_TO_DATE, files=())
    return replace(result, sha=sha, retries=retries)
