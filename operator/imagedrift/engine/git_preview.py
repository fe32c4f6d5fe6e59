"""GitOps write-back, previewed: the commits ``GitWriter`` would make, as unified diffs,
with nothing pushed (what ``imagedrift plan`` shows).

``GitPreview`` is a ``Writer`` (``engine.commits``). Per repository and branch it fetches
the branch read-only into a temporary directory, removed afterwards, and plans every write
of the group on the files exactly as ``GitWriter`` does (``git_writes.plan_group``, each
workload on the output of the one before); it keeps the commit that would be made (the
message, the author, the diff against the fetched head) in ``commits``. A proposal is
previewed the same way: its commit is planned on the base branch and names the branch it
would be pushed to. What each workload gets is what ``GitWriter`` would answer, with no
sha: the commit does not exist. Nothing is ever pushed, so the preview needs only read
access; credentials reach git as ``Repository`` hands them (never in an argument, a URL or
a message).
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagedrift.engine.git_writes import (
    GitWrite,
    GitWritten,
    Written,
    by_branch,
    landed,
    plan_group,
)
from imagedrift.errors import GitError
from imagedrift.git.repository import TIMEOUT, Author, GitCredentials, Proposed, Repository


@dataclass(frozen=True)
class PreviewCommit:
    """The commit one repository's branch would get (no commit when ``diff`` is empty)."""

    url: str
    branch: str
    parent: str  # the commit fetched, the diff's parent ("" when it could not be fetched)
    message: str
    author: Author | None  # None: the operator's own
    writes: tuple[GitWrite, ...]
    written: tuple[GitWritten, ...]  # what became of each write, in the order of ``writes``
    diff: str  # unified, ``a/<path>`` and ``b/<path>`` relative to the repository's root
    error: str = ""  # why the branch could not be read
    proposed_on: str = ""  # a pull request's branch the commit would be pushed to


class GitPreview:
    def __init__(
        self,
        credentials: Callable[[str], GitCredentials | None],
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.commits: list[PreviewCommit] = []

    def write(
        self, writes: Sequence[GitWrite], message: str, *, author: Author | None = None
    ) -> dict[str, GitWritten]:
        """What ``GitWriter.write`` would answer for ``writes``, each commit kept in
        ``commits`` instead of pushed. Never raises for a repository's fault."""
        out: dict[str, GitWritten] = {}
        for (url, branch), group in by_branch(writes).items():
            commit = self._preview(url, branch, group, message, author)
            out.update((r.key, r) for r in commit.written)
        return out

    def propose(
        self, writes: Sequence[GitWrite], message: str, head: str, *, author: Author | None = None
    ) -> tuple[dict[str, GitWritten], Proposed | None]:
        """What ``GitWriter.propose`` would answer: ``writes`` (one repository and base
        branch) as one commit planned on the base, kept in ``commits`` with the branch
        ``head`` it would be pushed to. Never raises for a repository's fault."""
        url, branch = writes[0].source.url, writes[0].source.branch
        commit = self._preview(url, branch, writes, message, author, head)
        files = tuple(sorted({f for r in commit.written for f in r.files}))
        proposed = Proposed("", True, files) if commit.diff else None
        return {r.key: r for r in commit.written}, proposed

    def _preview(
        self,
        url: str,
        branch: str,
        group: Sequence[GitWrite],
        message: str,
        author: Author | None,
        head: str = "",
    ) -> PreviewCommit:
        """The commit of ``group``, planned on the branch as it is now; kept."""
        try:
            parent, files = self._read(url, branch, sorted({w.source.path for w in group}))
        except GitError as exc:  # refused credentials and conflicts too
            failed = tuple(GitWritten(w.key, Written.FAILED, str(exc)) for w in group)
            commit = PreviewCommit(
                url, branch, "", message, author, tuple(group), failed, "", str(exc), head
            )
        else:
            written, after = plan_group(group, files)
            diff = unified_diff(files, after)
            if not diff:  # every file already as planned: nothing to commit
                written = [landed(r, None) for r in written]
            commit = PreviewCommit(
                url, branch, parent, message, author, tuple(group), tuple(written), diff, "", head
            )
        self.commits.append(commit)
        return commit

    def _read(self, url: str, branch: str, paths: Sequence[str]) -> tuple[str, dict[str, str]]:
        """The branch's head and its YAML files under ``paths``, from a throwaway clone."""
        with tempfile.TemporaryDirectory(prefix="imagedrift-plan-") as scratch:
            creds = self.credentials(url) or GitCredentials()
            repo = Repository(url, branch, Path(scratch) / "clone", creds, timeout=self.timeout)
            head = repo.fetch()
            return head, repo.files(paths)


def unified_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """What ``git diff`` shows of ``after`` (path -> text) over ``before``: a new file
    comes from ``/dev/null``, a last line without a newline says so."""
    out: list[str] = []
    for path in sorted(after):
        old = before.get(path)
        if old == after[path]:
            continue
        lines = difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            after[path].splitlines(keepends=True),
            "/dev/null" if old is None else f"a/{path}",
            f"b/{path}",
        )
        out.extend(
            line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n"
            for line in lines
        )
    return "".join(out)
