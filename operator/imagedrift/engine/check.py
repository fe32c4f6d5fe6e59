"""One reconcile of one ImagePolicy, as a pipeline: observe, recall, plan, apply, settle, report.

``PolicyChecker.check`` is called by the controller's workers (and once by ``imagedrift
plan``). Its input is what the watch cache holds: the policy body and the bodies of the
workloads it governs; it never GETs a workload. The stages:

    base    = BaseLookup.observe            the digest the base means now (shared cache)
    memory  = core.memory.recall            rejections, rollouts the lineage remembers
    facts   = Observer.facts, per workload  I/O only: digests, lineage, candidate search
    plan    = core.plan.plan                every final decision and each workload's write
    applied = apply(plan)                   the writes: Landed | Conflicted | Failed
    outcome = core.plan.settle              what stands once the writes were made
    report  = core.report.compose           status, conditions, requeue, counts

Only ``apply`` writes to a workload, at most once per workload per check.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagedrift.core import report
from imagedrift.core.conditions import Condition
from imagedrift.core.lineage import BaseDigest
from imagedrift.core.memory import recall
from imagedrift.core.newestbuild import build_time
from imagedrift.core.notices import Notice
from imagedrift.core.plan import Applied, PolicyPlan, WriteResult, plan, settle
from imagedrift.core.report import MAX_ATTENTION, STATUS_BUDGET
from imagedrift.core.spec import BaseSpec, PolicySpec
from imagedrift.core.workloads import WorkloadState, ref_of
from imagedrift.engine.base_lookup import BaseLookup
from imagedrift.engine.caches import BaseObservation, BaseWatcher, ImageCache, TtlCache
from imagedrift.engine.commits import Committer
from imagedrift.engine.gitops_sources import SourceFinder
from imagedrift.engine.look import LineageReads, Look
from imagedrift.engine.observe import Observer
from imagedrift.engine.ports import Event, KubePort, RegistryPort
from imagedrift.engine.pulls import PullWatch
from imagedrift.engine.search import CandidateSearch, Search
from imagedrift.engine.shared_reads import SharedReads
from imagedrift.errors import (
    KubeConflict,
    KubeError,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryThrottled,
)
from imagedrift.registry.manifests import DOCUMENTS

__all__ = ["MAX_ATTENTION", "STATUS_BUDGET", "CheckResult", "PolicyChecker", "Search"]

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    status: dict[str, Any]
    conditions: list[Condition]
    events: list[Event]
    next_check_in: float | None  # None: only a change (watch, schedule, push) brings it back
    counts: dict[str, int] = field(default_factory=dict)
    # (repository, running tag) -> what became of each listed tag (``imagedrift plan``).
    tags: dict[tuple[str, str], Search] = field(default_factory=dict)
    # Every container still on an old base, from the decisions (the status lists at most
    # MAX_ATTENTION and may be trimmed to fit): what a rebuild request names.
    drifted: list[dict[str, str]] = field(default_factory=list)
    # Why the check could not do its work ("" when it could): the controller backs off.
    fault: str = ""


class PolicyChecker:
    def __init__(
        self,
        registries: RegistryPort,
        kube: KubePort,
        images: ImageCache,
        bases: BaseWatcher,
        searches: TtlCache | None = None,
        pulls: PullWatch | None = None,
        sources: SourceFinder | None = None,
        committer: Committer | None = None,
    ) -> None:
        self.kube = kube
        self.committer = committer  # None: GitOps write-back is not wired
        cache = searches if searches is not None else TtlCache()
        reads = LineageReads(registries, images, SharedReads(cache, DOCUMENTS))
        self.base = BaseLookup(registries, images, bases)
        self.observer = Observer(
            reads,
            CandidateSearch(reads, kube, cache),
            kube,
            pulls if pulls is not None else PullWatch(),
            sources,
            committer.pull_requests if committer is not None else None,
        )

    def observe_base(self, base: BaseSpec, clock: float) -> BaseObservation:
        return self.base.observe(base, clock)

    def check(
        self,
        policy: PolicySpec,
        body: Mapping[str, Any],
        workloads: Iterable[Mapping[str, Any]],
        now: datetime,
        clock: float,
        conflicts: Mapping[str, tuple[str, ...]] | None = None,
    ) -> CheckResult:
        """Run one check over ``workloads`` (the watch cache's bodies this policy selects);
        ``conflicts`` names, per workload, the other policies that select it too."""
        previous = dict(body.get("status") or {})
        meta = body.get("metadata") or {}
        try:
            observed = self.observe_base(policy.base, clock)
        except RegistryThrottled as exc:
            return _result(report.throttled(previous, exc), body, [], {}, {})
        except RegistryError as exc:
            reason = (
                "AuthenticationFailed"
                if isinstance(exc, RegistryAuthError)
                else "BaseNotFound"
                if isinstance(exc, NotFound)
                else "RegistryUnavailable"
            )
            failed = report.failed(previous, reason, str(exc), policy.base.interval)
            was = {c.get("type"): c for c in previous.get("conditions") or []}.get("Ready") or {}
            notices = [] if was.get("reason") == reason else [Notice("Warning", reason, str(exc))]
            return _result(failed, body, notices, {}, {})

        base = BaseDigest.of(observed.image)
        base_status, prior, base_notices = report.base_status(
            previous, observed.ref, observed.image, now
        )
        governed = sorted(workloads, key=lambda w: str(ref_of(w)))
        keys = [str(ref_of(obj)) for obj in governed]
        records = [(k, WorkloadState.decode(o)) for k, o in zip(keys, governed, strict=True)]
        memory = recall(previous, base.digest, records)
        look = Look(
            policy,
            str(meta.get("generation") or 0),
            now,
            base,
            prior,
            build_time(observed.image),
            smoke_tests=dict(memory.smoke_tests),
        )
        conflicts = conflicts or {}
        facts = [
            self.observer.facts(look, obj, state, tuple(conflicts.get(k, ())), memory.rolled.get(k))
            for (k, state), obj in zip(records, governed, strict=True)
        ]
        planned = plan(policy, base.digest, memory, facts, memory.lineage, now)
        planned, applied = self.apply(policy, base.digest, planned)
        outcome = settle(planned, applied, base.digest)
        composed = report.compose(
            policy,
            base.digest,
            base_status,
            planned,
            outcome,
            list(look.smoke_tests.values()),
            int(meta.get("generation") or 0),
            now,
            next(iter(look.throttled.values()), None),
        )
        objs = dict(zip(keys, governed, strict=True))
        notices = [*base_notices, *outcome.notices]
        return _result(composed, body, notices, objs, look.searches)

    def apply(
        self, policy: PolicySpec, base_digest: str, planned: PolicyPlan
    ) -> tuple[PolicyPlan, dict[str, WriteResult]]:
        """Commit the git changes, then send each workload's one write; say per workload
        whether it landed (a step whose commit failed sends none)."""
        applied: dict[str, WriteResult] = {}
        if any(s.git is not None for s in planned.steps):
            if self.committer is None:
                raise AssertionError("a rollout by commit was planned without a committer")
            steps, applied = self.committer.apply(policy, base_digest, planned)
            planned = dataclasses.replace(planned, steps=steps)
        for step in planned.steps:
            if step.patch is None or step.facts.key in applied:
                continue
            ref = step.facts.ref
            try:
                self.kube.patch_workload(ref, step.patch)
            except KubeConflict as exc:
                log.info("%s changed while we decided; deciding again on its next event", ref)
                applied[step.facts.key] = WriteResult(Applied.CONFLICTED, str(exc))
            except KubeError as exc:
                applied[step.facts.key] = WriteResult(Applied.FAILED, str(exc))
            else:
                applied[step.facts.key] = WriteResult(Applied.LANDED)
        return planned, applied


def _result(
    composed: report.Report,
    body: Mapping[str, Any],
    notices: Iterable[Notice],
    objs: Mapping[str, Mapping[str, Any]],
    searches: Mapping[tuple[str, str], Search],
) -> CheckResult:
    """The controller's result: the report, and each Notice as Events on the policy and
    (when it names one) on the workload."""
    events: list[Event] = []
    for n in notices:
        events.append(Event(body, n.type, n.reason, n.message))
        if n.workload and n.workload in objs:
            events.append(Event(objs[n.workload], n.type, n.reason, n.on_workload))
    return CheckResult(
        composed.status,
        composed.conditions,
        events,
        composed.next_check_in,
        composed.counts,
        dict(searches),
        composed.drifted,
        composed.fault,
    )
