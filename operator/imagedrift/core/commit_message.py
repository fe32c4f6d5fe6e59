"""The message of a write-back commit: the policy's template (``spec.gitops.commitMessage``)
filled with the base, each change and the gates' verdicts; a rollback's says why.

A reviewer reading ``git log`` sees what changed and on what evidence, without kubectl.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagedrift.core.gitops_spec import render_message
from imagedrift.core.history import LineageEntry
from imagedrift.core.plan import Step
from imagedrift.core.refs import short_digest
from imagedrift.core.spec import PolicySpec

TRAILER = "Imagedrift-Policy"  # a git trailer naming the policy: `git log --grep` finds ours


def _changes(steps: Sequence[Step]) -> list[tuple[str, str, str, str]]:
    """(workload, container, old image, new image) of every step's git change."""
    out = []
    for step in steps:
        if step.git is None:
            continue
        for container, (old, new) in sorted(step.git.images.items()):
            out.append((step.facts.key, container, old, new))
    return out


def compose(
    policy: PolicySpec,
    base_digest: str,
    steps: Sequence[Step],
    lineage: Sequence[LineageEntry],
) -> str:
    """The message of the commit that rolls ``steps`` forward."""
    changes = _changes(steps)
    digests = {new.rpartition("@")[2] for _, _, _, new in changes}
    verdicts = [
        f"{e.app}:{e.tag} ({short_digest(e.app_digest)}): {e.verdict}"
        + "".join(f"\n  - {r}" for r in e.reasons)
        for e in lineage
        if e.base_digest == base_digest and e.app_digest in digests
    ]
    base = policy.base
    values = {
        "policy": policy.name,
        "base": f"{base.image.name}:{base.tag or base.semver_range}",
        "baseDigest": base_digest,
        "baseShort": short_digest(base_digest),
        "changes": "\n".join(f"- {w} {c}: {old} -> {new}" for w, c, old, new in changes),
        "workloads": str(len({w for w, _, _, _ in changes})),
        "verdicts": "Gate verdicts:\n" + "\n".join(verdicts) if verdicts else "",
    }
    text = render_message(policy.gitops.message, values).rstrip()
    return f"{text}\n\n{TRAILER}: {policy.name}\n"


def rollback(policy: PolicySpec, steps: Sequence[Step]) -> str:
    """The message of the commit that restores the previous images of failed rollouts."""
    changes = _changes(steps)
    lines = []
    for step in steps:
        if step.git is not None:
            lines.append(f"- {step.facts.key}: {step.decision.reason}")
    return (
        f"imagedrift: {policy.name}: roll back {len({w for w, _, _, _ in changes})} workload(s)\n"
        "\n"
        "The rollout failed; the exact previous images are restored:\n"
        + "\n".join(f"- {w} {c}: {old} -> {new}" for w, c, old, new in changes)
        + "\n\nWhy:\n"
        + "\n".join(lines)
        + f"\n\n{TRAILER}: {policy.name}\n"
    )
