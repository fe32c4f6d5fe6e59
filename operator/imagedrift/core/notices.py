"""What a check tells people: an Event on the policy, paired with one on the workload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notice:
    """One Event to post on the policy and, when ``workload`` names one, on that workload
    too (with ``workload_message`` when it says it differently there)."""

    type: str  # Normal | Warning
    reason: str
    message: str
    workload: str = ""  # the workload's key ("" : the policy only)
    workload_message: str = ""

    @property
    def on_workload(self) -> str:
        return self.workload_message or self.message
