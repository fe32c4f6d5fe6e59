"""The apply stage's git half: a check's rollouts and rollbacks by commit, written before
the patches that record them.

Every step with a ``GitChange`` becomes one ``GitWrite`` (all its containers or none);
the rollouts of the check are one commit per repository and branch, the rollbacks another
(their messages differ). Each step then either stands (``plan.committed``: its record names
the commit and its patch records it) or does not (``Applied.REFUSED`` / ``FAILED``, and its
record is not written: the next check decides again, and a commit already pushed is found
in the files, never pushed twice).
"""

from __future__ import annotations

from imagedrift.core import commit_message
from imagedrift.core.plan import Applied, PolicyPlan, Step, WriteResult, committed
from imagedrift.core.setters import ImageChange, Layout
from imagedrift.core.spec import PolicySpec
from imagedrift.engine.git_writes import GitWrite, GitWriter, GitWritten, Written
from imagedrift.git.repository import Author


class Committer:
    def __init__(self, writer: GitWriter) -> None:
        self.writer = writer

    def apply(
        self, policy: PolicySpec, base_digest: str, planned: PolicyPlan
    ) -> tuple[tuple[Step, ...], dict[str, WriteResult]]:
        """The steps once their git changes were written, and the failures by workload key
        (those steps' patches must not be sent)."""
        forward = [s for s in planned.steps if s.git is not None and not s.git.rollback]
        back = [s for s in planned.steps if s.git is not None and s.git.rollback]
        written: dict[str, GitWritten] = {}
        author = Author(policy.gitops.author_name, policy.gitops.author_email)
        if forward:
            message = commit_message.compose(policy, base_digest, forward, planned.history)
            writes = [_write(policy, s) for s in forward]
            written.update(self.writer.write(writes, message, author=author))
        if back:
            message = commit_message.rollback(policy, back)
            writes = [_write(policy, s) for s in back]
            written.update(self.writer.write(writes, message, author=author))
        steps: list[Step] = []
        failed: dict[str, WriteResult] = {}
        for step in planned.steps:
            result = written.get(step.facts.key)
            if step.git is None or result is None:
                steps.append(step)
            elif result.outcome in (Written.COMMITTED, Written.UP_TO_DATE):
                steps.append(committed(step, result.sha))
            else:
                refused = result.outcome in (Written.REFUSED, Written.NOT_FOUND)
                outcome = Applied.REFUSED if refused else Applied.FAILED
                failed[step.facts.key] = WriteResult(outcome, f"git: {result.reason}")
                steps.append(step)
        return tuple(steps), failed


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
