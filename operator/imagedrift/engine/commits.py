"""The apply stage's git half: a check's rollouts and rollbacks by commit, written before
the patches that record them.

Every step with a ``GitChange`` becomes one ``GitWrite`` (all its containers or none);
the rollouts of the check are one commit per repository and branch, the rollbacks another
(their messages differ). Each step then either stands (``plan.committed``: its record names
the commit and its patch records it) or does not (``Applied.REFUSED`` / ``FAILED``, and its
record is not written: the next check decides again, and a commit already pushed is found
in the files, never pushed twice).

A policy that proposes (``spec.gitops.mode: PullRequest``) writes its rollouts to one branch
per (policy, base digest, candidate) instead, and opens or updates the pull request from it
(``_propose``); its rollbacks are still commits to the branch the controller reads: the
service is down meanwhile, and no reviewer should stand between it and what ran before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from imagedrift.core import commit_message
from imagedrift.core.plan import (
    GIT_FAULT,
    Applied,
    GitChange,
    PolicyPlan,
    Step,
    WriteResult,
    committed,
)
from imagedrift.core.setters import ImageChange, Layout
from imagedrift.core.spec import PolicySpec
from imagedrift.core.workloads import unapplied
from imagedrift.engine.git_writes import GitWrite, GitWritten, Written
from imagedrift.engine.proposals import PullRequestClients
from imagedrift.errors import GitError
from imagedrift.git.repository import Author, Proposed

MAX_SERIES = 20  # pull requests of one policy, base digest and candidate, merged one by one


class Writer(Protocol):
    """What commits the writes: ``GitWriter``, or a preview that only shows the diff."""

    def write(
        self, writes: Sequence[GitWrite], message: str, *, author: Author | None = None
    ) -> dict[str, GitWritten]: ...

    def propose(
        self, writes: Sequence[GitWrite], message: str, head: str, *, author: Author | None = None
    ) -> tuple[dict[str, GitWritten], Proposed | None]: ...


class Committer:
    def __init__(
        self,
        writer: Writer,
        pull_requests: PullRequestClients | None = None,
        *,
        read_only: bool = False,
        on_pull_request: Callable[[str, str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.pull_requests = pull_requests  # None: pull requests are not wired
        # A dry run (``imagedrift plan``): pull requests are looked up, never opened or edited.
        self.read_only = read_only
        # (repository URL, "opened" | "updated"): the metrics' hook
        self._told = on_pull_request or (lambda url, action: None)

    def apply(
        self, policy: PolicySpec, base_digest: str, planned: PolicyPlan
    ) -> tuple[tuple[Step, ...], dict[str, WriteResult]]:
        """The steps once their git changes were written, and the failures by workload key
        (those steps' patches must not be sent)."""
        forward = [s for s in planned.steps if s.git is not None and not s.git.rollback]
        back = [s for s in planned.steps if s.git is not None and s.git.rollback]
        written: dict[str, GitWritten] = {}
        for (url, base, head), group in _grouped(s for s in forward if _head(s)).items():
            written.update(self._propose(policy, base_digest, planned, url, base, head, group))
        # One commit per repository and branch, its message naming only what it changes.
        for group in _grouped(s for s in forward if not _head(s)).values():
            message = commit_message.compose(policy, base_digest, group, planned.history)
            written.update(self._commit(policy, group, message))
        for group in _grouped(back).values():
            written.update(self._commit(policy, group, commit_message.rollback(policy, group)))
        steps: list[Step] = []
        failed: dict[str, WriteResult] = {}
        for step in planned.steps:
            result = written.get(step.facts.key)
            if step.git is None or result is None:
                steps.append(step)
            elif result.outcome in (Written.COMMITTED, Written.UP_TO_DATE):
                steps.append(committed(step, result.sha, result.pull_request, result.head))
            else:
                refused = result.outcome in (Written.REFUSED, Written.NOT_FOUND)
                outcome = Applied.REFUSED if refused else Applied.FAILED
                failed[step.facts.key] = WriteResult(outcome, f"{GIT_FAULT}{result.reason}")
                steps.append(step)
        return tuple(steps), failed

    def _commit(
        self, policy: PolicySpec, group: Sequence[Step], message: str
    ) -> dict[str, GitWritten]:
        writes = [_write(policy, s) for s in group]
        return self.writer.write(writes, message, author=_author(policy))

    def _propose(
        self,
        policy: PolicySpec,
        base_digest: str,
        planned: PolicyPlan,
        url: str,
        base: str,
        head: str,
        group: Sequence[Step],
    ) -> dict[str, GitWritten]:
        """Propose ``group`` on ``head``, with every workload already waiting on it (a
        later wave adds to the pull request, never replaces it); open or update the pull
        request. One that was merged is not proposed again (its change is on ``base``); one
        closed unmerged is a human's no: never proposed again for this candidate."""
        spec = policy.gitops.pull_request

        def each(outcome: Written, reason: str, pr: str = "") -> dict[str, GitWritten]:
            keys = [s.facts.key for s in group]
            return {k: GitWritten(k, outcome, reason, pull_request=pr) for k in keys}

        if self.pull_requests is None:
            return each(Written.FAILED, "this operator was started without pull requests")
        if not base:
            why = "a pull request needs a base branch; name it in spec.gitops.repository.branch"
            return each(Written.REFUSED, why)
        try:
            client = self.pull_requests.client(url, spec)
            # A merged pull request's branch is never pushed again: what it did not carry
            # (a later wave) goes on the next branch of the series, head-2, head-3, ...
            merged = None
            for n in range(1, MAX_SERIES + 1):
                branch = head if n == 1 else f"{head}-{n}"
                found = self.pull_requests.find(url, spec, branch, base)
                if found is None or found.state != "merged":
                    break
                merged = found
            else:
                return each(Written.FAILED, f"{MAX_SERIES} pull requests from {head} merged")
        except GitError as exc:
            return each(Written.FAILED, str(exc))
        if found is not None and found.state == "closed":
            why = f"pull request {found.url} was closed without merging: not proposed again"
            return each(Written.REFUSED, why)
        steps = [*group, *_waiting_on(planned, branch, {s.facts.key for s in group})]
        message = commit_message.compose(policy, base_digest, steps, planned.history)
        writes = [_write(policy, s) for s in steps]
        results, proposed = self.writer.propose(writes, message, branch, author=_author(policy))
        if proposed is None:
            # Nothing to propose: on the base already (a merged pull request carried it).
            pr = merged.url if merged is not None else ""
            return {k: dataclasses.replace(r, pull_request=pr) for k, r in results.items()}
        title, _, body = message.partition("\n")
        if self.read_only:
            shown = found.url if found is not None else f"(would open from {branch})"
            return {
                k: dataclasses.replace(r, pull_request=shown, head=branch)
                for k, r in results.items()
            }
        try:
            if found is None:
                found = client.open(branch, base, title, body.strip())
                self._told(url, "opened")
            elif proposed.pushed or found.title != title:
                found = client.update(found, title, body.strip())
                self._told(url, "updated")
        except GitError as exc:
            # The branch is pushed; the next check finds no pull request and opens it.
            return each(Written.FAILED, f"pull request from {branch}: {exc}")
        self.pull_requests.remember(url, branch, base, found)
        return {
            k: dataclasses.replace(r, pull_request=found.url, head=branch)
            for k, r in results.items()
            if k in {s.facts.key for s in group}
        }


def _waiting_on(planned: PolicyPlan, head: str, skip: set[str]) -> list[Step]:
    """The workloads whose rollout waits on ``head``'s pull request (proposed by an earlier
    check, not applied yet), as steps carrying their change again."""
    out = []
    for step in planned.steps:
        record = step.state.rollout
        if step.facts.key in skip or record is None or record.git is None:
            continue
        if record.git.head != head or not unapplied(record, step.facts.observation.images):
            continue
        images = {c: (record.previous.get(c, ""), t) for c, t in record.target.items()}
        source = step.facts.observation.source or record.git.source()
        out.append(dataclasses.replace(step, git=GitChange(source, images, False, head)))
    return out


def _head(step: Step) -> str:
    return step.git.head if step.git is not None else ""


def _grouped(steps: Iterable[Step]) -> dict[tuple[str, str, str], list[Step]]:
    """Steps by (repository URL, branch, pull request branch or "")."""
    out: dict[tuple[str, str, str], list[Step]] = {}
    for step in steps:
        assert step.git is not None
        out.setdefault((step.git.source.url, step.git.source.branch, step.git.head), []).append(
            step
        )
    return out


def _author(policy: PolicySpec) -> Author:
    return Author(policy.gitops.author_name, policy.gitops.author_email)


def _write(policy: PolicySpec, step: Step) -> GitWrite:
    git = step.git
    assert git is not None
    ref = step.facts.ref
    source = git.source
    changes = tuple(
        ImageChange(policy.name, ref.kind, ref.namespace, ref.name, container, old, new)
        for container, (old, new) in sorted(git.images.items())
    )
    layout = Layout(
        values_file=policy.gitops.values_file,
        helm_paths=policy.gitops.helm_paths,
        target_namespace=source.target_namespace,
        argocd_app=source.argocd_app,
        argocd_helm=source.argocd_helm,
    )
    return GitWrite(step.facts.key, source, changes, layout)
