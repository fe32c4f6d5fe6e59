"""Validation gates a candidate must pass before it may run.

Lineage (the candidate sits on the current base digest) is always required and is proven
before ``validate`` is called; the policy's ``spec.validation`` adds further gates.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagedrift.core.lineage import Lineage
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import PolicySpec


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]


def validate(
    policy: PolicySpec, candidate: ImageRef, lineage: Lineage, lineage_reason: str
) -> Verdict:
    """Every gate's outcome for ``candidate``; passed only when all pass."""
    reasons = [f"lineage: {lineage_reason}"]
    unsupported = sorted(set(policy.raw_validation) - set())
    if unsupported:
        # A gate we cannot evaluate must never be skipped silently: reject instead.
        return Verdict(
            False,
            (*reasons, f"gates not supported by this operator version: {', '.join(unsupported)}"),
        )
    return Verdict(True, tuple(reasons))
