"""What a check remembers between checks, as values: rejections, smoke tests, the candidate.

Each is written into the policy's status (``status.waves.rejected``, ``status.smokeTests``,
``status.candidate``) and read back from it; the dict shapes there are the API and stay as
they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """A candidate rejected for the current base because its rollout failed somewhere."""

    digest: str
    image: str
    workload: str
    reason: str
    at: str

    @classmethod
    def from_status(cls, row: Mapping[str, Any]) -> Rejection:
        return cls(
            str(row.get("digest", "")),
            str(row.get("image", "")),
            str(row.get("workload", "")),
            str(row.get("reason", "rolled back")),
            str(row.get("at", "")),
        )

    def to_status(self) -> dict[str, str]:
        return {
            "digest": self.digest,
            "image": self.image,
            "workload": self.workload,
            "reason": self.reason,
            "at": self.at,
        }


@dataclass(frozen=True)
class SmokeRecord:
    """The smoke-test Job run for one candidate digest (at most one per digest, ever)."""

    digest: str
    job: str
    namespace: str
    result: str  # Running | Succeeded | Failed
    reason: str
    started_at: str
    finished_at: str = ""

    @property
    def finished(self) -> bool:
        return self.result in ("Succeeded", "Failed")

    @classmethod
    def from_status(cls, row: Mapping[str, Any]) -> SmokeRecord:
        return cls(
            str(row.get("digest", "")),
            str(row.get("job", "")),
            str(row.get("namespace", "")),
            str(row.get("result", "")),
            str(row.get("reason", "")),
            str(row.get("startedAt", "")),
            str(row.get("finishedAt", "")),
        )

    def to_status(self) -> dict[str, str]:
        row = {
            "digest": self.digest,
            "job": self.job,
            "namespace": self.namespace,
            "result": self.result,
            "reason": self.reason,
            "startedAt": self.started_at,
        }
        if self.finished_at:
            row["finishedAt"] = self.finished_at
        return row


@dataclass(frozen=True)
class CandidateStatus:
    """``status.candidate``: the candidate ``app:tag`` (``digest``) and how it was judged."""

    app: str
    digest: str
    tag: str
    verdict: str
    reasons: tuple[str, ...]

    @classmethod
    def of(
        cls, app: str, digest: str, tag: str, verdict: str, reasons: Sequence[str]
    ) -> CandidateStatus:
        return cls(app, digest, tag, verdict, tuple(reasons))

    def rejected(self, why: str) -> CandidateStatus:
        """The same candidate once its rollout failed (``why``)."""
        return replace(self, verdict="Rejected", reasons=(*self.reasons, f"rollout: {why}"))

    def to_status(self) -> dict[str, Any]:
        return {
            "image": f"{self.app}:{self.tag}",
            "digest": self.digest,
            "tag": self.tag,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
        }
