"""What a check reports: the policy's status, its conditions, and when to look again.

Composed from the check's outcome alone (as Argo CD Image Updater's ``status.go`` and
Flux's ``notify.go`` do), so every field has one author and a table test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagedrift.core import conditions as cond
from imagedrift.core import history, waves
from imagedrift.core.conditions import Condition, parse_timestamp, timestamp
from imagedrift.core.decide import DRIFTED_STATES, PRIORITY, Action, State
from imagedrift.core.images import ResolvedImage
from imagedrift.core.notices import Notice
from imagedrift.core.plan import GIT_FAULT, PolicyOutcome, PolicyPlan, Step
from imagedrift.core.records import SmokeRecord
from imagedrift.core.refs import ImageRef, short_digest
from imagedrift.core.rollout import Phase
from imagedrift.core.spec import PolicySpec
from imagedrift.core.status_size import fit
from imagedrift.core.workloads import rolling_back
from imagedrift.errors import RegistryThrottled

MAX_ATTENTION = 50  # workloads listed in status.workloads.items (the ones needing attention)
MAX_SMOKE_TESTS = 20
MAX_REJECTED = 20
MAX_PREVIOUS_BASES = 10
STATUS_BUDGET = 256 * 1024  # bytes of status, at any number of workloads
VALIDATING_INTERVAL = 2.0  # seconds between looks at a running smoke test
ROLLING_INTERVAL = 10.0  # a safety net: watch events on the workload come first


@dataclass(frozen=True)
class Report:
    status: dict[str, Any]
    conditions: list[Condition]
    next_check_in: float | None  # None: only a change (watch, schedule, push) brings it back
    counts: dict[str, int] = field(default_factory=dict)
    # Every container still on an old base (the status lists at most MAX_ATTENTION and may
    # be trimmed to fit): what a rebuild request names.
    drifted: list[dict[str, str]] = field(default_factory=list)
    fault: str = ""  # why the check could not do its work ("" when it could)


def base_status(
    previous: Mapping[str, Any], ref: ImageRef, image: ResolvedImage, now: datetime
) -> tuple[dict[str, Any], list[str], list[Notice]]:
    """``status.base`` for the base ``ref`` (pinned) now resolves to; the earlier base
    digests (newest first); a ``BaseChanged`` Notice when it moved."""
    digest = ref.digest
    out = dict(previous.get("base") or {})
    prior = [d for d in out.get("previousDigests") or [] if d != digest]
    notices: list[Notice] = []
    if out.get("digest") and out["digest"] != digest:
        prior = [out["digest"], *prior]
        notices.append(
            Notice(
                "Normal",
                "BaseChanged",
                f"{ref.name}:{ref.tag} moved {short_digest(out['digest'])} -> "
                f"{short_digest(digest)}",
            )
        )
        out["changedAt"] = timestamp(now)
    out.update(
        image=ref.name,
        tag=ref.tag,
        digest=digest,
        shortDigest=short_digest(digest),
        platforms=[
            {"platform": str(m.platform), "digest": m.digest} for m in image.manifests if m.platform
        ],
        checkedAt=timestamp(now),
        previousDigests=prior[:MAX_PREVIOUS_BASES],
        # When the base was built (newest platform): detection latency is measured from it.
        created=max((m.created for m in image.manifests), default=""),
    )
    out.setdefault("changedAt", timestamp(now))
    return out, prior[:MAX_PREVIOUS_BASES], notices


def failed(previous: Mapping[str, Any], reason: str, message: str, interval: float) -> Report:
    """The base could not be resolved: nothing else is known; look again soon."""
    status = {**previous, "lastError": message}
    return Report(status, cond.not_ready(reason, message), min(interval, 30.0), fault=reason)


def throttled(previous: Mapping[str, Any], exc: RegistryThrottled) -> Report:
    """The base's registry asked us to wait: no news about the policy; conditions stay."""
    wait = max(exc.retry_after, 1.0)
    status = {
        **previous,
        "lastError": f"throttled by {exc.registry}: retrying in {wait:g}s ({exc})",
    }
    kept = [
        Condition(c["type"], c["status"] == "True", c.get("reason", ""), c.get("message", ""))
        for c in previous.get("conditions") or []
    ] or cond.reconciling("Throttled", f"registry {exc.registry} asked us to wait {wait:g}s")
    return Report(status, kept, wait)


def _rolling_back_now(step: Step) -> bool:
    """Is this workload's rollback still being followed after this check?"""
    record = step.state.rollout
    return record is not None and rolling_back(record) and step.decision.action is Action.NONE


def _done_on(step: Step, base_digest: str) -> bool:
    record = step.state.rollout
    return bool(
        record
        and record.base_digest == base_digest
        and record.phase == Phase.COMPLETE.value
        and record.finished_at
    )


def compose(
    policy: PolicySpec,
    base_digest: str,
    base: dict[str, Any],
    planned: PolicyPlan,
    outcome: PolicyOutcome,
    smoke_tests: Sequence[SmokeRecord],
    generation: int,
    now: datetime,
    registry_wait: RegistryThrottled | None = None,
) -> Report:
    steps = outcome.steps
    states = [s.decision.state for s in steps]
    rolling = sum(1 for s in states if s is State.ROLLING_OUT)
    # A rollback being followed is a rollout too: checked as often, Reconciling meanwhile.
    rolling_back_now = sum(1 for s in steps if _rolling_back_now(s))
    errors = [s for s in steps if s.decision.state is State.ERROR]
    counts = {
        "optedIn": len(steps),
        "upToDate": sum(1 for s in states if s is State.UP_TO_DATE),
        "drifted": sum(1 for s in states if s in DRIFTED_STATES),
        "rollingOut": rolling,
        "errors": len(errors),
    }
    rows = [r for s in steps for r in s.rows]
    attention = sorted(
        (r for r in rows if r["state"] != State.UP_TO_DATE),
        key=lambda r: (PRIORITY.index(State(r["state"])), r["workload"], r["container"]),
    )
    done = [s for s in steps if _done_on(s, base_digest)]
    plan: waves.Plan = planned.waves
    candidate = planned.candidate or history.candidate_of(outcome.history, base_digest)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "base": base,
        "workloads": {
            **counts,
            "states": {str(s): states.count(s) for s in sorted(set(states))},
            "items": attention[:MAX_ATTENTION],
            "unlisted": max(len(attention) - MAX_ATTENTION, 0),
        },
        "lineage": history.to_status(outcome.history[: policy.history_limit]),
        "candidate": candidate.to_status() if candidate else {},
        "lastError": errors[0].decision.reason if errors else "",
        "waves": {
            "baseDigest": base_digest,
            "current": plan.wave,
            "total": plan.waves,
            "done": len(done),
            "rolling": rolling,
            "waiting": len(plan.held),
            "message": plan.message,
            "rejected": [r.to_status() for r in planned.rejected.values()][-MAX_REJECTED:],
        },
        "smokeTests": [
            t.to_status()
            for t in sorted(smoke_tests, key=lambda t: t.started_at, reverse=True)[:MAX_SMOKE_TESTS]
        ],
    }
    finished = [
        t
        for s in done
        if s.state.rollout and (t := parse_timestamp(s.state.rollout.finished_at)) is not None
    ]
    if finished:
        status["waves"]["healthySince"] = timestamp(max(finished))
    status = fit(status, STATUS_BUDGET)

    waits: list[float] = []
    if counts["drifted"]:
        waits.append(policy.base.interval)  # a rebuilt image may appear: look again
    if plan.retry_at is not None:
        waits.append(max((plan.retry_at - now).total_seconds(), 1.0))
    if planned.validating:
        waits.append(VALIDATING_INTERVAL)
    if rolling or rolling_back_now:
        waits.append(min(ROLLING_INTERVAL, policy.rollout.verify_timeout, policy.base.interval))
    for s in steps:  # a settling window ends: look then, not a whole interval later
        progress = s.facts.observation.progress
        if progress and progress.again_in is not None and s.decision.action is Action.NONE:
            waits.append(progress.again_in)
    next_in = min(waits) if waits else None
    # A fault outranks progress: the SRE must see what cannot be checked.
    if registry_wait is not None:
        conditions = cond.reconciling("Throttled", str(registry_wait))
        next_in = max(registry_wait.retry_after, 1.0)
    elif errors:
        conditions = cond.not_ready(
            _fault_of(errors),
            f"{len(errors)} of {len(steps)} workload(s) could not be checked: "
            f"{errors[0].facts.key}: {errors[0].decision.reason}",
        )
    elif rolling or rolling_back_now:
        parts = [f"{rolling} workload(s) rolling out"] if rolling else []
        if rolling_back_now:
            parts.append(f"{rolling_back_now} rolling back")
        conditions = cond.reconciling("RolloutInProgress", ", ".join(parts))
    elif plan.held:
        conditions = cond.ready("RolloutWaiting", plan.message)
    elif planned.validating:
        conditions = cond.ready(
            "Validating", f"{len(planned.validating)} candidate(s) still being validated"
        )
    elif counts["drifted"]:
        conditions = cond.ready(
            "WaitingForRebuild",
            f"{counts['drifted']} of {counts['optedIn']} workload(s) on an old base; "
            "no validated rebuild to roll yet",
        )
    else:
        conditions = cond.ready(
            "UpToDate", f"{counts['upToDate']} workload(s) on base {short_digest(base_digest)}"
        )
    drifted = [
        {k: str(r.get(k, "")) for k in ("workload", "container", "image", "baseDigest")}
        for r in rows
        if r["state"] in DRIFTED_STATES
    ]
    fault = _fault_of(errors) if errors and registry_wait is None else ""
    return Report(status, conditions, next_in, counts, drifted, fault)


def _fault_of(errors: Sequence[Step]) -> str:
    """What failed: the git repositories of write-back, when only they did."""
    if all(s.decision.reason.startswith(GIT_FAULT) for s in errors):
        return "GitUnavailable"
    return "RegistryUnavailable"
