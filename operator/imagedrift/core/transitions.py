"""How a workload's record moves when imagedrift acts: start, conclude, yield, settle, hold,
and what it is when the write that would record it fails.

Each transition is pure: from the workload as observed and decided, the state its record
will hold, the decision it ends the check with, the images the patch sets, the Notices to
post once the patch landed, and the rejections it causes whether or not it lands (a
candidate that failed is rejected at once: the next check must not start it elsewhere).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from imagedrift.core.conditions import timestamp
from imagedrift.core.decide import (
    Action,
    ContainerDecision,
    Decision,
    State,
    WorkloadObservation,
)
from imagedrift.core.notices import Notice
from imagedrift.core.records import Rejection
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase
from imagedrift.core.workloads import (
    GitRecord,
    RolloutRecord,
    WorkloadState,
    rollback_images,
    unapplied,
)
from imagedrift.errors import InvalidReference


@dataclass(frozen=True)
class Subject:
    """The workload a transition is about, as this check observed and decided it."""

    key: str
    state: WorkloadState
    observation: WorkloadObservation
    decision: Decision
    running: Mapping[str, str] = dataclasses.field(default_factory=dict)  # as written


@dataclass(frozen=True)
class Transition:
    state: WorkloadState
    decision: Decision
    images: Mapping[str, str]  # container -> image the patch sets (none: the record only)
    landed: tuple[Notice, ...] = ()  # posted once the patch landed
    rejections: tuple[Rejection, ...] = ()  # effective at once, landed or not
    # The images go to the workload's git source (a commit), not into the patch, which
    # then writes the record only.
    by_commit: bool = False


OUTCOMES = (Action.FINISH, Action.ROLL_BACK, Action.YIELD, Action.SETTLE)


def start(
    s: Subject, policy: str, base_digest: str, now: datetime, head_prefix: str = ""
) -> Transition:
    """A ``ROLL`` the planner let through: patch the targets (or commit them, or propose
    them on a pull request's branch under ``head_prefix``), record the rollout."""
    decision = s.decision
    targets = dict(decision.targets)
    if decision.by_commit:
        # In git a reference keeps its tag for the humans who read it: tag@digest.
        targets = {c: _tagged(image, decision.tags.get(c, "")) for c, image in targets.items()}
    first = ImageRef.parse(targets[sorted(targets)[0]])
    source = s.observation.source if decision.by_commit else None
    git = None
    if source is not None:
        # One branch per (policy, base digest, candidate): found again after a restart.
        # (A policy name may hold dots; a branch component may not end in ".lock".)
        name = policy.replace(".", "-")
        head = f"{head_prefix}{name}/{_hex(base_digest)}-{_hex(first.digest)}"
        head = head if head_prefix else ""
        git = GitRecord(source.url, source.branch, source.path, source.via, head=head)
    record = RolloutRecord(
        id=f"{base_digest}|{first.digest}",
        base_digest=base_digest,
        target=targets,
        previous={c: s.running[c] for c in targets},
        tags=dict(decision.tags),
        started_at=timestamp(now),
        phase=Phase.PROGRESSING.value,
        policy=policy,
        previous_digests={
            c.name: c.digest for c in s.observation.containers if c.name in targets and c.digest
        },
        git=git,
    )
    state = WorkloadState(
        {**s.state.tags, **record.tags}, record, s.state.rejected, s.state.overridden
    )
    verb = "committed" if git is not None else "patched"
    where = f" in {source.url} ({source.via})" if source is not None else ""
    rolling = Decision(
        State.ROLLING_OUT,
        verb,
        Action.ROLL,
        tuple(
            ContainerDecision(row.name, State.ROLLING_OUT, f"{verb} to {targets[row.name]}{where}")
            if row.name in targets
            else row
            for row in decision.containers
        ),
        targets,
        decision.tags,
        git is not None,
    )
    summary = ", ".join(f"{c}={t}" for c, t in sorted(targets.items()))
    started = Notice(
        "Normal",
        "RolloutStarted",
        f"{s.key}: {summary}" + (f" (committed to {source.url})" if source else ""),
        s.key,
        f"imagedrift policy {policy}: {summary}",
    )
    return Transition(state, rolling, targets, (started,), by_commit=git is not None)


def conclude(s: Subject, base_digest: str, now: datetime) -> Transition:
    """A followed rollout finished: complete, or failed and rolled back (the previous images
    restored on the containers still on its target, the candidate rejected)."""
    record = s.state.rollout
    assert record is not None and s.observation.progress is not None
    reason = s.observation.progress.reason
    failed = s.decision.action is Action.ROLL_BACK
    # Containers someone else set during the rollout are theirs now: left alone (a
    # rollback skips them) and never patched to this candidate again.
    # By commit: a container the controller has not applied yet still runs the previous
    # image, and git holds ours: it is restored in git like the others.
    waiting = unapplied(record, s.observation.images)
    now_images = {
        c: record.target[c] if c in waiting else i for c, i in s.observation.images.items()
    }
    restore, superseded = rollback_images(record, now_images)
    if record.git is not None:
        restore = {
            c: _tagged(image, _tag_of(record.previous.get(c, ""))) for c, image in restore.items()
        }
    images = restore if failed else {}
    digests = record.digests()
    overridden = (*s.state.overridden, *(digests[c] for c in sorted(superseded)))
    rejected = s.state.rejected
    tags = dict(s.state.tags)
    rejections: tuple[Rejection, ...] = ()
    if failed:
        # Back to exactly the digest that ran, on the containers still on our target.
        rejected = (*rejected, *digests.values())
        for container in images:
            tags[container] = _tag_of(record.previous[container]) or tags.get(container, "")
        if record.base_digest == base_digest:
            why = f"rolled back on {s.key}: {reason}"
            rejections = tuple(
                Rejection(digests[c], image, s.key, why, timestamp(now))
                for c, image in record.target.items()
            )
    phase = Phase.ROLLED_BACK if failed else Phase.COMPLETE
    done = dataclasses.replace(record, phase=phase.value, reason=reason, finished_at=timestamp(now))
    if failed and images:
        # The rollback is followed like any rollout (``settle`` records its outcome).
        done = dataclasses.replace(done, rollback=Phase.PROGRESSING.value)
    rows = tuple(
        ContainerDecision(
            row.name,
            State.OVERRIDDEN,
            f"superseded: changed to {superseded[row.name]} during the rollout; "
            + ("left alone by the rollback" if failed else "left alone"),
        )
        if row.name in superseded
        else ContainerDecision(row.name, State.ROLLED_BACK if failed else State.UP_TO_DATE, reason)
        for row in s.decision.containers
    )
    decision = Decision(s.decision.state, reason, s.decision.action, rows)
    if failed:
        restored = ", ".join(f"{c}={i}" for c, i in sorted(images.items()))
        message = f"{s.key}: rollout failed ({reason}); rolled back to {restored or 'nothing'}"
        if record.git is not None and images:
            message += f" by a commit to {record.git.url}"
        if superseded:
            message += f"; left alone (changed meanwhile): {', '.join(sorted(superseded))}"
        notice = Notice("Warning", "RolledBack", message, s.key)
    else:
        message = f"{s.key}: rollout complete ({reason})"
        if superseded:
            message += f"; changed by someone else meanwhile: {', '.join(sorted(superseded))}"
        notice = Notice("Normal", "RolloutComplete", message, s.key)
    state = WorkloadState(tags, done, rejected, overridden)
    by_commit = record.git is not None and bool(images)
    return Transition(state, decision, images, (notice,), rejections, by_commit)


def yield_(s: Subject, now: datetime) -> Transition:
    """Someone replaced the image imagedrift rolled: the record says so (the candidate goes
    to ``overridden``: never patched in again); no image is patched."""
    record = s.state.rollout
    assert record is not None
    reason = s.decision.reason
    digests = record.digests()
    replaced = tuple(digests[c] for c in s.decision.targets if c in digests)
    done = dataclasses.replace(
        record, phase=State.OVERRIDDEN.value, reason=reason, finished_at=timestamp(now)
    )
    state = WorkloadState(
        dict(s.state.tags), done, s.state.rejected, (*s.state.overridden, *replaced)
    )
    notice = Notice("Warning", "Overridden", f"{s.key}: {reason}", s.key)
    return Transition(state, s.decision, {}, (notice,))


def settle(s: Subject, now: datetime) -> Transition:
    """A rollback finished: is the workload back on what ran before? A failed rollback is a
    Warning for a human: imagedrift does not try a third time."""
    record = s.state.rollout
    assert record is not None and s.observation.progress is not None
    outcome = s.observation.progress
    done = dataclasses.replace(
        record,
        rollback=outcome.phase.value,
        rollback_reason=outcome.reason,
        rollback_at=timestamp(now),
    )
    ok = outcome.phase is Phase.COMPLETE
    decision = Decision(
        State.ROLLED_BACK,
        f"rolled back ({record.reason}); the rollback "
        + (f"completed: {outcome.reason}" if ok else f"failed: {outcome.reason}"),
        s.decision.action,
        s.decision.containers,
    )
    if ok:
        notice = Notice(
            "Normal", "RollbackComplete", f"{s.key}: rollback complete ({outcome.reason})", s.key
        )
    else:
        notice = Notice(
            "Warning",
            "RollbackFailed",
            f"{s.key}: rollback failed ({outcome.reason}); imagedrift leaves it as it is",
            s.key,
        )
    return Transition(dataclasses.replace(s.state, rollout=done), decision, {}, (notice,))


def hold(decision: Decision, why: str) -> Decision:
    """A ``ROLL`` the wave planner holds back: the targeted containers are ``Waiting``."""
    rows = tuple(
        ContainerDecision(row.name, State.WAITING, why) if row.name in decision.targets else row
        for row in decision.containers
    )
    return Decision(State.WAITING, why, Action.NONE, rows)


def patch_failed(before: Decision, error: str, conflict: bool) -> Decision:
    """What a workload is when the write of ``before`` failed: an outcome not recorded yet
    leaves the rollout running; a 409 is decided again on the workload's next event; any
    other failure is an ``Error``."""
    decision = before
    if before.action in OUTCOMES:
        decision = Decision(
            State.ROLLING_OUT,
            f"recording the outcome ({before.reason}) again: {error}",
            Action.NONE,
            before.containers,
        )
    if not conflict:
        rows = tuple(
            ContainerDecision(row.name, State.ERROR, error) if row.name in before.targets else row
            for row in decision.containers
        )
        decision = Decision(State.ERROR, error, Action.NONE, rows)
    return decision


def refused(before: Decision, reason: str) -> Decision:
    """A ``ROLL`` by commit the files refuse (a Flux marker owns the value, nothing sets
    the image, two manifests match): the workload is left to git, and says why."""
    why = f"cannot commit to git: {reason}"
    rows = tuple(
        ContainerDecision(row.name, State.MANAGED_BY_GITOPS, why)
        if row.name in before.targets
        else row
        for row in before.containers
    )
    return Decision(State.MANAGED_BY_GITOPS, why, Action.NONE, rows)


def _hex(digest: str) -> str:
    return digest.partition(":")[2][:12]


def _tagged(image: str, tag: str) -> str:
    """``name@digest`` as ``name:tag@digest`` (as it was when ``tag`` is "" or it does not
    parse)."""
    try:
        ref = ImageRef.parse(image)
    except InvalidReference:
        return image
    return str(ImageRef(ref.registry, ref.repository, tag, ref.digest)) if tag else image


def _tag_of(image: str) -> str:
    try:
        return ImageRef.parse(image).tag
    except InvalidReference:
        return ""
