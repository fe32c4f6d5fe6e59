"""The plan of one check: every workload's final decision and its one write, from facts.

``plan`` sequences the pure steps over what observation found, in this order:

1. ``decide`` each workload against the policy's memory (rejections for this base);
2. record each candidate's verdict in the lineage (a rejection posts its Event once);
3. conclude the outcomes first (complete, rolled back, overridden, rollback settled): a
   rollout that failed in this very check rejects its candidate policy-wide *now*;
4. decide again every ``ROLL``, against the rejections step 3 added (a wave-1 failure
   stops the candidate before anything else starts on it in the same check);
5. let the wave planner choose which ``ROLL`` starts now, hold the rest;
6. compose each workload's rows and the one patch that writes its record and note.

``settle`` then folds in what the writes did: a write that failed leaves the workload what
it was (``transitions.patch_failed``), and the lineage follows the records that stand.
Nothing here does I/O.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from imagedrift.core import detail, history, transitions, waves
from imagedrift.core.conditions import parse_timestamp, timestamp
from imagedrift.core.decide import Action, Decision, PolicyView, WorkloadObservation, decide
from imagedrift.core.gitops_source import GitSource
from imagedrift.core.gitops_spec import Mode
from imagedrift.core.memory import Memory
from imagedrift.core.notices import Notice
from imagedrift.core.records import CandidateStatus, Rejection
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase
from imagedrift.core.spec import PolicySpec
from imagedrift.core.transitions import Subject, Transition
from imagedrift.core.workloads import (
    STATE_ANNOTATION,
    WorkloadRef,
    WorkloadState,
    followed,
    image_patch,
)


@dataclass(frozen=True)
class WorkloadFacts:
    """What observation found of one workload (no decision yet)."""

    ref: WorkloadRef
    version: str  # its resourceVersion: the precondition of a patch that sets images
    state: WorkloadState  # its record, completed from the lineage
    observation: WorkloadObservation
    running: Mapping[str, str] = field(default_factory=dict)  # container -> image as parsed
    note: Mapping[str, Any] = field(default_factory=dict)  # its imagedrift.io/status now
    idle: bool = False  # scaled to zero: no pod runs what a tag meant when it was pulled

    @property
    def key(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class GitChange:
    """A step whose images go to git: the source, and container -> (image now, image to set)."""

    source: GitSource
    images: Mapping[str, tuple[str, str]]
    rollback: bool = False
    head: str = ""  # propose on this branch (a pull request) instead of committing


@dataclass(frozen=True)
class Step:
    """One workload's end of the check, if its write lands."""

    facts: WorkloadFacts
    state: WorkloadState
    decision: Decision
    rows: list[dict[str, Any]]
    patch: dict[str, Any] | None = None  # the one write of this check
    landed: tuple[Notice, ...] = ()  # posted once the write landed
    before: tuple[WorkloadState, Decision] | None = None  # what it is if the write fails
    git: GitChange | None = None  # committed before ``patch`` is sent (which records it)


@dataclass(frozen=True)
class PolicyPlan:
    steps: tuple[Step, ...]
    waves: waves.Plan
    history: history.Lineage
    candidate: CandidateStatus | None
    rejected: Mapping[str, Rejection]  # app digest -> why, for this base
    validating: frozenset[str]  # digests of candidates whose verdict is pending
    notices: tuple[Notice, ...]  # posted whatever the writes do


GIT_FAULT = "git: "  # what a git write's failure says first (a workload's reason)


class Applied(Enum):
    LANDED = "Landed"
    CONFLICTED = "Conflicted"
    FAILED = "Failed"
    REFUSED = "Refused"  # its git change cannot be written there (a marker, no such image)


@dataclass(frozen=True)
class WriteResult:
    outcome: Applied
    error: str = ""


@dataclass(frozen=True)
class PolicyOutcome:
    steps: tuple[Step, ...]  # as they stand after the writes
    history: history.Lineage
    notices: tuple[Notice, ...]


def view(policy: PolicySpec, base_digest: str, rejected: Mapping[str, Rejection]) -> PolicyView:
    return PolicyView(
        base_digest,
        policy.rollout.suspend,
        {d: r.reason for d, r in rejected.items()},
        policy.gitops.mode is Mode.PATCH,
        policy.gitops.writes,
    )


def plan(
    policy: PolicySpec,
    base_digest: str,
    memory: Memory,
    facts: Sequence[WorkloadFacts],
    lineage: Sequence[history.LineageEntry],
    now: datetime,
) -> PolicyPlan:
    """Every workload's decision and write for one check (see the module's docstring)."""
    rejected = dict(memory.rejected)
    decisions = [decide(f.observation, view(policy, base_digest, rejected)) for f in facts]
    notes = _Verdicts(policy, base_digest, rejected, tuple(lineage), now)
    for f in facts:
        notes.record(f.observation)
    states = [f.state for f in facts]
    made: dict[int, Transition] = {}
    before: dict[int, Decision] = {}  # what a workload is if its transition's write fails
    for i, f in enumerate(facts):
        subject = Subject(f.key, f.state, f.observation, decisions[i], f.running)
        action = decisions[i].action
        if action in (Action.FINISH, Action.ROLL_BACK):
            made[i] = transitions.conclude(subject, base_digest, now)
            progress = f.observation.progress
            notes.reject(made[i].rejections, f.key, progress.reason if progress else "")
        elif action is Action.YIELD:
            made[i] = transitions.yield_(subject, now)
        elif action is Action.SETTLE:
            made[i] = transitions.settle(subject, now)
    for i, t in made.items():
        before[i] = decisions[i]
        states[i], decisions[i] = t.state, t.decision
    again = view(policy, base_digest, rejected)
    for i, f in enumerate(facts):
        if decisions[i].action is Action.ROLL:
            decisions[i] = decide(f.observation, again)
    wave_plan = _waves(policy, base_digest, facts, states, decisions, now)
    for i, f in enumerate(facts):
        if decisions[i].action is not Action.ROLL:
            continue
        if f.key in wave_plan.held:
            decisions[i] = transitions.hold(decisions[i], wave_plan.held[f.key])
        elif f.key in wave_plan.start:
            subject = Subject(f.key, states[i], f.observation, decisions[i], f.running)
            prefix = policy.gitops.pull_request.branch_prefix if policy.gitops.proposes else ""
            made[i] = transitions.start(subject, policy.name, base_digest, now, prefix)
            before[i] = decisions[i]
            states[i], decisions[i] = made[i].state, made[i].decision
    steps = [
        _step(policy.name, f, states[i], decisions[i], made.get(i), (f.state, before.get(i)))
        for i, f in enumerate(facts)
    ]
    return PolicyPlan(
        tuple(steps),
        wave_plan,
        notes.history,
        notes.candidate,
        rejected,
        frozenset(notes.validating),
        tuple(notes.notices),
    )


def _step(
    policy: str,
    f: WorkloadFacts,
    state: WorkloadState,
    decision: Decision,
    t: Transition | None,
    before: tuple[WorkloadState, Decision | None],
) -> Step:
    mine = detail.rows(f.key, f.observation, state.rollout, decision)
    git = _git_change(f, state, t) if t is not None and t.by_commit else None
    images = t.images if t is not None and git is None else {}
    patch = image_patch(f.ref.kind, images, state, f.version) if t is not None else None
    if git is not None and patch is not None:
        # Only the record: it follows a commit already pushed, which a 409 would orphan.
        patch["metadata"].pop("resourceVersion", None)
    # A tag-referenced container's running digest is kept in the note (while pods run it).
    remember = not f.idle and any(
        r.get("digest") and "@" not in str(r.get("image", "")) for r in mine
    )
    note = detail.note(
        policy, mine, decision, f.note, patch is not None, followed(state.rollout), remember
    )
    if note is not None:
        if patch is None:
            # Only our own note: no resourceVersion precondition. While a workload rolls
            # its status moves every few seconds, and a precondition would turn most of
            # these writes into 409s and retries; a stale note is rewritten next check.
            patch = {"metadata": {"annotations": {}}}
        patch["metadata"]["annotations"].update(note)
    return Step(
        f,
        state,
        decision,
        mine,
        patch,
        t.landed if t is not None else (),
        (before[0], before[1]) if t is not None and before[1] is not None else None,
        git,
    )


def _git_change(f: WorkloadFacts, state: WorkloadState, t: Transition) -> GitChange | None:
    """What a by-commit transition writes to git: the source observed now (the record's
    when it is not known any more), each container from the image there now to the new."""
    record = state.rollout
    assert record is not None and record.git is not None
    g = record.git
    source = f.observation.source or g.source()
    rollback = record.phase == Phase.ROLLED_BACK.value
    old = record.target if rollback else record.previous
    images = {c: (old.get(c, f.running.get(c, "")), new) for c, new in t.images.items()}
    # A rollback is committed straight to the branch: the service is down meanwhile.
    return GitChange(source, images, rollback, "" if rollback else g.head)


def committed(step: Step, sha: str, pull_request: str = "", head: str = "") -> Step:
    """``step`` once its git change is on the branch (``sha`` the commit; "" when the files
    already said so) or proposed (``pull_request`` its URL): its record names them, and its
    patch records that."""
    record = step.state.rollout
    assert step.git is not None and step.patch is not None
    assert record is not None and record.git is not None
    if step.git.rollback:
        git = dataclasses.replace(record.git, rollback_commit=sha)
    else:
        git = dataclasses.replace(
            record.git, commit=sha, pull_request=pull_request, head=head or record.git.head
        )
    state = dataclasses.replace(step.state, rollout=dataclasses.replace(record, git=git))
    patch = copy.deepcopy(step.patch)
    patch["metadata"]["annotations"][STATE_ANNOTATION] = state.encode()
    return dataclasses.replace(step, state=state, patch=patch)


def _waves(
    policy: PolicySpec,
    base_digest: str,
    facts: Sequence[WorkloadFacts],
    states: Sequence[WorkloadState],
    decisions: Sequence[Decision],
    now: datetime,
) -> waves.Plan:
    """The wave planner's inputs: ready ``ROLL``s, rollouts in flight and those done."""
    ready = [f.key for f, d in zip(facts, decisions, strict=True) if d.action is Action.ROLL]
    rolling: list[str] = []
    done: list[tuple[str, datetime]] = []
    for f, state, decision in zip(facts, states, decisions, strict=True):
        record = state.rollout
        if record is None or record.base_digest != base_digest:
            continue
        if record.phase == Phase.PROGRESSING.value and decision.action is Action.NONE:
            rolling.append(f.key)
        elif record.phase == Phase.COMPLETE.value and record.finished_at:
            finished = parse_timestamp(record.finished_at)
            if finished is not None:
                done.append((f.key, finished))
    return waves.plan(ready, rolling, done, policy.rollout, now)


def settle(
    planned: PolicyPlan, applied: Mapping[str, WriteResult], base_digest: str
) -> PolicyOutcome:
    """The check as it stands once its writes were made: ``applied`` says, per workload
    key that had a write, whether it landed. The lineage follows every standing record."""
    steps: list[Step] = []
    notices = list(planned.notices)
    for step in planned.steps:
        result = applied.get(step.facts.key)
        if step.patch is None or result is None or result.outcome is Applied.LANDED:
            steps.append(step)
            notices += step.landed
            continue
        state, decision = step.before or (step.state, step.decision)
        if result.outcome is Applied.REFUSED and decision.action is Action.ROLL:
            decision = transitions.refused(decision, result.error)
        else:
            decision = transitions.patch_failed(
                decision, result.error, result.outcome is Applied.CONFLICTED
            )
        mine = detail.rows(step.facts.key, step.facts.observation, state.rollout, decision)
        steps.append(Step(step.facts, state, decision, mine))
    lineage = planned.history
    for step in steps:
        if step.state.rollout is not None:
            lineage = history.sync_rollout(lineage, step.facts.key, step.state.rollout, base_digest)
    return PolicyOutcome(tuple(steps), lineage, tuple(notices))


@dataclass
class _Verdicts:
    """The lineage and ``status.candidate`` as the check's verdicts and rejections fill them."""

    policy: PolicySpec
    base_digest: str
    rejected: dict[str, Rejection]
    history: history.Lineage
    now: datetime
    candidate: CandidateStatus | None = None
    validating: set[str] = field(default_factory=set)
    notices: list[Notice] = field(default_factory=list)

    def record(self, observation: WorkloadObservation) -> None:
        for container in observation.containers:
            cand = container.candidate
            if cand is None:
                continue
            passed, pending, reasons = cand.passed, cand.pending, cand.reasons
            if cand.digest in self.rejected:  # its rollout failed on this base
                passed, pending = False, False
                reasons = (*reasons, f"rollout: {self.rejected[cand.digest].reason}")
            if pending:
                # Candidates, not the workloads or containers waiting on them.
                self.validating.add(cand.digest)
            first = history.newly_rejected(self.history, self.base_digest, cand.digest)
            word = history.verdict_word(passed, pending)
            app = ImageRef.parse(cand.ref).name
            self.history = history.record_verdict(
                self.history,
                base_digest=self.base_digest,
                app=app,
                app_digest=cand.digest,
                tag=cand.tag,
                verdict=word,
                reasons=reasons,
                at=timestamp(self.now),
                limit=self.policy.history_limit,
            )
            if self.candidate is None:
                self.candidate = CandidateStatus.of(app, cand.digest, cand.tag, word, reasons)
            if not passed and not pending and first:
                # Lineage reasons pass by construction; the Event shows the other gates'.
                failed = [r for r in reasons[1:] if not r.startswith("lineage: ")]
                self.notices.append(
                    Notice(
                        "Warning",
                        "CandidateRejected",
                        f"{cand.ref}: {'; '.join(failed or reasons)}",
                    )
                )

    def reject(self, rejections: Sequence[Rejection], key: str, reason: str) -> None:
        """A rollout failed: its candidates are rejected for this base digest, policy-wide,
        so the remaining waves stop and no other workload starts on them."""
        for r in rejections:
            self.rejected[r.digest] = r
            self.history = history.reject(self.history, self.base_digest, r.digest, r.reason)
            if self.candidate is not None and self.candidate.digest == r.digest:
                self.candidate = self.candidate.rejected(r.reason)
            self.notices.append(
                Notice(
                    "Warning",
                    "CandidateRejected",
                    f"{r.image}: rollout failed on {key} ({reason}); remaining waves stopped",
                )
            )
