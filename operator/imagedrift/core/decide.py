"""What to do with one workload: a pure function of what was observed about it.

The engine gathers a ``WorkloadObservation`` (running images and digests, lineage verdicts,
the candidate search result, the workload's own record, where its rollout stands, or the
error that stopped the observation), calls ``decide`` with the policy's view (``PolicyView``:
current base, policy-wide rejections, suspend, now), and applies the one ``Action`` it
returns. The wave planner may still hold a ``ROLL`` back (the workload is then ``Waiting``).

States (per container, and for the workload the most pressing of its containers):

    UpToDate    every governed container runs an image on the current base digest
    Patched     on an old base, but patched in place (Copa) after the base changed, and the
                policy accepts that as remediated (spec.app.acceptPatched)
    Drifted     on an old base; no validated candidate to roll (the reason says why)
    Waiting     a candidate is being validated, or waves/windows hold the rollout
    RollingOut  patched; the rollout is being verified
    RolledBack  the candidate failed here before; it is not retried on this workload
    Paused      the workload's annotation holds it
    Suspended   the policy's rollout.suspend holds it
    Overridden  someone else changed an image imagedrift rolled: left as they set it
    ManagedByGitOps  a GitOps controller manages the workload: reported, not patched (or,
                when the policy commits to git, the reason it cannot be written there)
    Conflict    another policy selects the workload too: neither patches it
    Error       the observation failed (registry or API fault); the reason names where
    Unknown     the image reference in the pod template does not parse
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from imagedrift.core.gitops_source import GitSource
from imagedrift.core.refs import short_digest
from imagedrift.core.rollout import Phase, Progress
from imagedrift.core.workloads import (
    RolloutRecord,
    WorkloadState,
    rolling_back,
    same_reference,
    unapplied,
)


class State(StrEnum):
    UP_TO_DATE = "UpToDate"
    DRIFTED = "Drifted"
    WAITING = "Waiting"
    ROLLING_OUT = "RollingOut"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    SUSPENDED = "Suspended"
    ERROR = "Error"
    UNKNOWN = "Unknown"
    OVERRIDDEN = "Overridden"
    PATCHED = "Patched"
    MANAGED_BY_GITOPS = "ManagedByGitOps"
    CONFLICT = "Conflict"


# The most pressing state names the workload when its containers differ.
PRIORITY = (
    State.ERROR,
    State.CONFLICT,
    State.OVERRIDDEN,
    State.ROLLING_OUT,
    State.WAITING,
    State.DRIFTED,
    State.ROLLED_BACK,
    State.MANAGED_BY_GITOPS,
    State.PAUSED,
    State.SUSPENDED,
    State.UNKNOWN,
    State.PATCHED,
    State.UP_TO_DATE,
)
# States in which the workload still runs an image on an old base.
DRIFTED_STATES = frozenset(
    {
        State.DRIFTED,
        State.WAITING,
        State.ROLLED_BACK,
        State.PAUSED,
        State.SUSPENDED,
        State.OVERRIDDEN,
        State.MANAGED_BY_GITOPS,
    }
)


class Action(StrEnum):
    NONE = "None"  # nothing to write
    ROLL = "Roll"  # patch the targets (subject to the wave planner)
    FINISH = "Finish"  # the rollout is complete: record it
    ROLL_BACK = "RollBack"  # the rollout failed: restore the previous images, record it
    YIELD = "Yield"  # someone replaced what we rolled: record it, post an Event, patch nothing
    SETTLE = "Settle"  # the rollback finished (complete or failed): record it, patch nothing


@dataclass(frozen=True)
class CandidateView:
    """The newest image of the running repository proven on the current base."""

    ref: str  # pinned by digest
    digest: str
    tag: str
    passed: bool
    pending: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ContainerObservation:
    name: str
    image: str  # as the pod template says
    digest: str = ""  # what it runs
    on_current: bool = False
    lineage_reason: str = ""
    base_digest: str = ""  # the base digest lineage found ("" when unknown)
    candidate: CandidateView | None = None
    search_notes: tuple[str, ...] = ()  # why tags were refused
    error: str = ""  # the observation failed; nothing else is known
    invalid: str = ""  # the reference does not parse
    patched: bool = False  # not on the current base, but patched in place and accepted


@dataclass(frozen=True)
class WorkloadObservation:
    key: str
    containers: tuple[ContainerObservation, ...]
    record: WorkloadState = field(default_factory=WorkloadState)
    paused: bool = False
    progress: Progress | None = None  # where a Progressing rollout stands
    error: str = ""  # the workload as a whole could not be observed
    images: Mapping[str, str] = field(default_factory=dict)  # governed container -> image now
    writers: Mapping[str, str] = field(default_factory=dict)  # container -> who last set it
    conflict: tuple[str, ...] = ()  # other policies that select this workload
    gitops: str = ""  # which GitOps controller manages it ("" none)
    # Where its manifests live, when the policy writes GitOps-managed workloads back to
    # git (``source_error``: why that is not known).
    source: GitSource | None = None
    source_error: str = ""


@dataclass(frozen=True)
class PolicyView:
    base_digest: str
    suspended: bool = False
    rejected: Mapping[str, str] = field(default_factory=dict)  # app digest -> why (policy-wide)
    patch_gitops: bool = False  # spec.gitops.mode Patch: patched like any workload
    commit_gitops: bool = False  # spec.gitops.mode Commit: committed to its git source


@dataclass(frozen=True)
class ContainerDecision:
    name: str
    state: State
    reason: str


@dataclass(frozen=True)
class Decision:
    state: State
    reason: str
    action: Action
    containers: tuple[ContainerDecision, ...]
    targets: Mapping[str, str] = field(default_factory=dict)  # container -> pinned ref (ROLL)
    tags: Mapping[str, str] = field(default_factory=dict)  # container -> candidate tag (ROLL)
    by_commit: bool = False  # ROLL: commit the targets to the workload's git source


def _container(
    obs: ContainerObservation,
    record: WorkloadState,
    paused: bool,
    policy: PolicyView,
    gitops: str = "",
    writer: str = "",
    source_error: str = "",
) -> tuple[ContainerDecision, CandidateView | None]:
    """The container's state, and the candidate to roll it to (None: nothing to roll)."""

    def say(state: State, reason: str) -> tuple[ContainerDecision, None]:
        return ContainerDecision(obs.name, state, reason), None

    if obs.invalid:
        return say(State.UNKNOWN, obs.invalid)
    if obs.error:
        return say(State.ERROR, obs.error)
    if obs.on_current:
        return say(State.UP_TO_DATE, obs.lineage_reason)
    cand = obs.candidate
    if cand is None:
        if obs.patched:  # remediated in place; a real rebuild would still roll
            return say(State.PATCHED, obs.lineage_reason)
        notes = "; ".join(obs.search_notes[:3]) or "no rebuilt image yet"
        return say(State.DRIFTED, f"{obs.lineage_reason}; {notes}")
    if cand.digest in record.overridden:
        return say(
            State.OVERRIDDEN,
            f"{obs.image} was set by {writer or 'someone'} after imagedrift rolled {cand.ref}; "
            "imagedrift will not fight it (a candidate on a later base may roll)",
        )
    if cand.digest in record.rejected:
        return say(State.ROLLED_BACK, f"{cand.ref} was rolled back here before; not retried")
    if cand.digest in policy.rejected:
        return say(
            State.DRIFTED, f"candidate rejected for this base: {policy.rejected[cand.digest]}"
        )
    if cand.pending:
        return say(State.WAITING, f"validating {cand.tag}: " + "; ".join(cand.reasons))
    if not cand.passed:
        return say(State.DRIFTED, f"candidate {cand.tag} rejected: " + "; ".join(cand.reasons))
    if policy.suspended:
        return say(State.SUSPENDED, f"policy suspended; would roll to {cand.ref}")
    if paused:
        return say(State.PAUSED, f"workload paused; would roll to {cand.ref}")
    if gitops and policy.commit_gitops and source_error:
        return say(
            State.MANAGED_BY_GITOPS,
            f"managed by {gitops}; would commit {cand.ref}, but {source_error}",
        )
    if gitops and not policy.patch_gitops and not policy.commit_gitops:
        return say(
            State.MANAGED_BY_GITOPS,
            f"managed by {gitops}; would roll to {cand.ref}: change it in git, or set "
            "spec.gitops.mode (Commit writes it to git)",
        )
    reason = f"{obs.lineage_reason}; rolling to {cand.tag} ({short_digest(cand.digest)})"
    return ContainerDecision(obs.name, State.DRIFTED, reason), cand


def _replaced(obs: WorkloadObservation) -> dict[str, str]:
    """Containers whose image someone changed after imagedrift set it (container -> now).

    Only while imagedrift's rollout stands (in progress or complete) and only once: the
    candidate is then in ``overridden`` and the record says so.
    """
    record = obs.record.rollout
    if record is None or record.phase not in (Phase.PROGRESSING.value, Phase.COMPLETE.value):
        return {}
    waiting = unapplied(record, obs.images)  # committed, not applied yet: not a change
    changed: dict[str, str] = {}
    for container, target in record.target.items():
        now = obs.images.get(container)
        digest = target.rpartition("@")[2]
        if container in waiting:
            continue
        if (
            now is not None
            and not same_reference(now, target)
            and digest not in obs.record.overridden
        ):
            changed[container] = now
    return changed


def _in_flight(
    obs: WorkloadObservation, record: RolloutRecord, changed: Mapping[str, str]
) -> Decision:
    """A rollout imagedrift started, followed: done (record it), failed (roll back), or not
    yet. ``changed``: containers someone else set meanwhile (shown as such, left alone)."""
    progress = obs.progress or Progress(Phase.PROGRESSING, "waiting for the rollout status")
    rows = tuple(
        ContainerDecision(
            name,
            State.OVERRIDDEN,
            f"changed to {changed[name]} by {obs.writers.get(name) or 'someone'} during "
            "the rollout; left alone",
        )
        if name in changed
        else ContainerDecision(name, State.ROLLING_OUT, progress.reason)
        for name in record.target
    )
    if progress.phase is Phase.COMPLETE:
        return Decision(State.UP_TO_DATE, progress.reason, Action.FINISH, rows)
    if progress.phase is Phase.FAILED:
        return Decision(State.ROLLED_BACK, progress.reason, Action.ROLL_BACK, rows)
    return Decision(State.ROLLING_OUT, progress.reason, Action.NONE, rows)


def _worst(decisions: Sequence[ContainerDecision]) -> ContainerDecision | None:
    return min(decisions, key=lambda d: PRIORITY.index(d.state), default=None)


def decide(obs: WorkloadObservation, policy: PolicyView) -> Decision:
    """The workload's state, why, and the one action to take. Pure; never raises."""
    record = obs.record.rollout
    if obs.error:
        rows = tuple(ContainerDecision(c.name, State.ERROR, obs.error) for c in obs.containers)
        return Decision(State.ERROR, obs.error, Action.NONE, rows)
    if obs.conflict:
        why = (
            f"also selected by policy {', '.join(obs.conflict)}: neither policy patches it "
            "until only one selects it"
        )
        rows = tuple(ContainerDecision(c.name, State.CONFLICT, why) for c in obs.containers)
        return Decision(State.CONFLICT, why, Action.NONE, rows)
    changed = _replaced(obs)
    in_flight = record is not None and record.phase == Phase.PROGRESSING.value
    if record is not None and in_flight and changed and set(record.target) - set(changed):
        # Someone changed some of the containers mid-rollout, not all: the rollout is still
        # partly ours, so it is followed to its end; a rollback then restores only ours.
        return _in_flight(obs, record, changed)
    if changed:
        first, image = sorted(changed.items())[0]
        who = obs.writers.get(first, "") or "someone"
        why = f"{first} was changed to {image} by {who}; imagedrift will not fight it"
        rows = tuple(ContainerDecision(name, State.OVERRIDDEN, why) for name in sorted(changed))
        return Decision(State.OVERRIDDEN, why, Action.YIELD, rows, dict(changed))
    if record is not None and in_flight:
        return _in_flight(obs, record, {})
    if record is not None and rolling_back(record):
        # The rollback is a rollout too: nothing else starts on this workload until it
        # settled, and its outcome is recorded (a failed rollback needs a human).
        progress = obs.progress or Progress(Phase.PROGRESSING, "waiting for the rollout status")
        rows = tuple(
            ContainerDecision(name, State.ROLLED_BACK, f"rolling back: {progress.reason}")
            for name in record.target
        )
        if progress.phase is Phase.PROGRESSING:
            return Decision(
                State.ROLLED_BACK, f"rolling back: {progress.reason}", Action.NONE, rows
            )
        return Decision(State.ROLLED_BACK, progress.reason, Action.SETTLE, rows)
    rows_list: list[ContainerDecision] = []
    targets: dict[str, str] = {}
    tags: dict[str, str] = {}
    for container in obs.containers:
        row, candidate = _container(
            container,
            obs.record,
            obs.paused,
            policy,
            obs.gitops,
            obs.writers.get(container.name, ""),
            "" if obs.source is not None else obs.source_error or "its git source is not known",
        )
        rows_list.append(row)
        if candidate is not None:
            targets[container.name] = candidate.ref
            tags[container.name] = candidate.tag
    rows = tuple(rows_list)
    worst = _worst(rows)
    if worst is None:
        return Decision(State.UP_TO_DATE, "no governed containers", Action.NONE, rows)
    if targets:
        summary = ", ".join(f"{c}={t}" for c, t in sorted(targets.items()))
        by_commit = bool(obs.gitops) and policy.commit_gitops and obs.source is not None
        verb = "committing" if by_commit else "rolling"
        return Decision(
            State.DRIFTED, f"{verb} {summary}", Action.ROLL, rows, targets, tags, by_commit
        )
    return Decision(worst.state, worst.reason, Action.NONE, rows)
