"""One reconcile of one ImagePolicy: observe each workload, decide, act, compose status.

``PolicyChecker.check`` is called by the controller's workers (and once by ``imagedrift
plan``). Its input is what the watch cache holds: the policy body and the bodies of the
workloads it governs; it never GETs a workload. Per workload it gathers observations
(running digests, lineage, the candidate search; registry faults become an ``Error``
observation of that workload, never an exception that loses the rest of the check), leaves
the decision to ``imagedrift.core.decide``, lets the wave planner choose which ``ROLL``
decisions start now, and applies the actions. It returns the status to write, the
conditions, the Events, and when the policy wants to be looked at again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagedrift.core import conditions as cond
from imagedrift.core import history, newestbuild, patchtags, tagselect, waves
from imagedrift.core.conditions import Condition, timestamp
from imagedrift.core.decide import (
    DRIFTED_STATES,
    Action,
    CandidateView,
    ContainerObservation,
    Decision,
    PolicyView,
    State,
    WorkloadObservation,
    decide,
)
from imagedrift.core.gitops import describe_writer, image_managers, managed_by
from imagedrift.core.images import ResolvedImage
from imagedrift.core.lineage import BaseDigest, Lineage, built_on, remediated_in_place, trace
from imagedrift.core.newestbuild import NewestBuildPolicy, build_time
from imagedrift.core.podhealth import pod_health
from imagedrift.core.refs import ImageRef, short_digest
from imagedrift.core.rollout import Phase, Progress, progress
from imagedrift.core.running import pod_selector, pulled_digest, same_image
from imagedrift.core.spec import BaseSpec, PolicySpec
from imagedrift.core.status_size import fit
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.workloads import (
    STATUS_ANNOTATION,
    RolloutRecord,
    WorkloadRef,
    WorkloadState,
    followed,
    governed_containers,
    image_patch,
    paused,
    ref_of,
    rollback_images,
    rolling_back,
    status_annotation,
)
from imagedrift.engine.caches import BaseObservation, BaseWatcher, ImageCache, TtlCache
from imagedrift.engine.gates import GateIO, Verdict, validate
from imagedrift.engine.ports import Event, KubePort, PodReader, RegistryPort
from imagedrift.engine.pulls import PullWatch
from imagedrift.engine.shared_reads import SharedReads
from imagedrift.errors import (
    InvalidReference,
    KubeConflict,
    KubeError,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryThrottled,
)
from imagedrift.registry.base import RegistryClient, TagFacts

log = logging.getLogger(__name__)
MAX_PREVIOUS_BASES = 10
# What the engine found for a tag the selection made a candidate (``imagedrift plan``).
RUNNING, NOT_ON_BASE, REGISTRY_REFUSES, TAKEN = "running", "not on base", "refused", "taken"
NOT_INSPECTED = "not inspected"
MAX_ATTENTION = 50  # workloads listed in status.workloads.items (the ones needing attention)
MAX_SMOKE_TESTS = 20
MAX_REJECTED = 20
MAX_REASON = 300
STATUS_BUDGET = 256 * 1024  # bytes of status, at any number of workloads
VALIDATING_INTERVAL = 2.0  # seconds between looks at a running smoke test
ROLLING_INTERVAL = 10.0  # a safety net: watch events on the workload come first


@dataclass(frozen=True)
class Candidate:
    ref: ImageRef  # pinned by digest
    tag: str
    lineage: Lineage
    verdict: Verdict


@dataclass
class Search:
    """The outcome of looking for a rebuilt image for one (repository, running tag)."""

    candidate: Candidate | None = None
    rejected: list[str] = field(default_factory=list)
    notes: list[tagselect.TagNote] = field(default_factory=list)  # every tag's fate (plan)
    policy: str = ""  # the tag policy, described
    refused: str = ""  # why no tag could be a candidate at all (the policy failed closed)

    @property
    def excluded(self) -> list[str]:
        """Tags exclusionList dropped: never looked at."""
        return [n.tag for n in self.notes if n.fate == tagselect.EXCLUDED]

    def fail(self, why: str) -> Search:
        self.refused = why
        self.rejected.append(why)
        return self

    def refuse(self, tag: str, fate: str, why: str) -> None:
        self.rejected.append(f"{tag}: {why}")
        self.notes.append(tagselect.TagNote(tag, fate, why))


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


@dataclass
class _Context:
    """What one check knows: the policy, the base, and what it collected so far."""

    policy: PolicySpec
    body: Mapping[str, Any]
    now: datetime
    base: BaseDigest
    previous_bases: list[str]
    history: list[dict[str, Any]]
    events: list[Event] = field(default_factory=list)
    tag_digests: dict[str, str] = field(default_factory=dict)
    candidate_status: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)  # digest -> record
    smoke_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    throttled: dict[str, RegistryThrottled] = field(default_factory=dict)  # by host
    validating: set[str] = field(default_factory=set)  # digests of pending candidates
    conflicts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # workload -> others
    rolled: Mapping[str, _Rolled] = field(default_factory=dict)  # workload -> from the lineage
    base_changed_at: datetime | None = None  # the current base's creation (dates Copa patches)
    searches: dict[tuple[str, str], Search] = field(default_factory=dict)  # (repository, tag)


@dataclass
class _Rolled:
    """What the lineage says imagedrift did to one workload: its newest standing rollout
    (as a record) and the candidates someone replaced after it."""

    record: RolloutRecord | None = None
    overridden: tuple[str, ...] = ()


def _rolled(lineage: Iterable[Mapping[str, Any]]) -> dict[str, _Rolled]:
    """workload -> what the lineage remembers of imagedrift's rollouts on it.

    The workload's own annotation is the first record, but not the only one: tools that
    restore a whole template (``kubectl rollout undo`` copies the old ReplicaSet's
    annotations back) remove it, and imagedrift must still know what it had rolled there.
    """
    newest: dict[str, tuple[str, RolloutRecord]] = {}
    overridden: dict[str, list[str]] = {}
    for entry in lineage:
        target = f"{entry.get('app', '')}@{entry.get('appDigest', '')}"
        for row in entry.get("rollouts") or []:
            workload, container = str(row.get("workload", "")), str(row.get("container", ""))
            result, started = str(row.get("result", "")), str(row.get("startedAt", ""))
            if result == State.OVERRIDDEN.value:
                overridden.setdefault(workload, []).append(str(entry.get("appDigest", "")))
            if result not in (Phase.COMPLETE.value, Phase.PROGRESSING.value):
                continue
            if workload in newest and newest[workload][0] >= started:
                continue
            record = RolloutRecord(
                id=f"{entry.get('baseDigest', '')}|{entry.get('appDigest', '')}",
                base_digest=str(entry.get("baseDigest", "")),
                target={container: target},
                previous={container: str(row.get("previousImage", ""))},
                tags={container: str(entry.get("tag", ""))},
                started_at=started,
                phase=Phase.COMPLETE.value,  # only its target matters: what should be there
                reason=str(row.get("reason", "")),
                finished_at=str(row.get("finishedAt", "")),
            )
            newest[workload] = (started, record)
    names = newest.keys() | overridden.keys()
    return {
        n: _Rolled(newest[n][1] if n in newest else None, tuple(overridden.get(n, ())))
        for n in names
    }


def _remembered(state: WorkloadState, rolled: _Rolled | None) -> WorkloadState:
    """The workload's record, completed from the lineage when its annotation was lost."""
    if rolled is None:
        return state
    overridden = tuple(dict.fromkeys((*state.overridden, *rolled.overridden)))
    record = state.rollout
    if record is None or (rolled.record and rolled.record.started_at > record.started_at):
        record = rolled.record
    return WorkloadState(state.tags, record, state.rejected, overridden)


def _exclusion_note(excluded: list[str]) -> tuple[str, ...]:
    if not excluded:
        return ()
    return (f"{len(excluded)} tag(s) never considered (exclusionList), e.g. {excluded[0]}",)


def _rolling_back_now(w: _Workload) -> bool:
    """Is ``w``'s rollback still being followed after this check?"""
    record = w.state.rollout
    return record is not None and rolling_back(record) and w.decision.action is Action.NONE


def _tag_of(image: str) -> str:
    try:
        return ImageRef.parse(image).tag
    except InvalidReference:
        return ""


@dataclass
class _Workload:
    ref: WorkloadRef
    obj: Mapping[str, Any]
    state: WorkloadState
    observation: WorkloadObservation
    decision: Decision
    running: dict[str, ImageRef] = field(default_factory=dict)  # container -> as written
    patch: dict[str, Any] | None = None  # the one write of this check, once prepared
    before: tuple[WorkloadState, Decision] | None = None  # what it is if the patch fails
    landed: Callable[[], None] | None = None  # records what the patch did, once it landed
    failed: bool = False
    pods: list[dict[str, Any]] | None = None  # its pods, once read in this check


def workload_detail(policy: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the workload's ``imagedrift.io/status`` annotation says (the CLI reads it)."""
    return {"policy": policy, "containers": rows}


def _tags(client: RegistryClient, image: ImageRef) -> list[str]:
    """The repository's tags that are tags: what the registry lists, minus any name the OCI
    grammar does not allow (``tagselect.well_formed``), for lookups that note nothing."""
    return tagselect.well_formed(client.list_tags(image))[0]


class PolicyChecker:
    def __init__(
        self,
        registries: RegistryPort,
        kube: KubePort,
        images: ImageCache,
        bases: BaseWatcher,
        searches: TtlCache | None = None,
        pulls: PullWatch | None = None,
    ) -> None:
        self.registries = registries
        self.kube = kube
        self.images = images
        self.bases = bases
        self.searches = searches if searches is not None else TtlCache()
        self.shared = SharedReads(self.searches)  # tag digests and tag lists, for everyone
        self.pulls = pulls if pulls is not None else PullWatch()

    # -- detect -----------------------------------------------------------------------------

    def _lookup_base(
        self, base: BaseSpec, previous: BaseObservation | None, clock: float
    ) -> BaseObservation:
        client = self.registries.client_for(base.image.registry, base)
        tag = base.tag
        if base.semver_range:
            tag = (
                policy_from_spec({"semver": {"range": base.semver_range}}).latest(
                    _tags(client, base.image)
                )
                or ""
            )
            if not tag:
                raise NotFound(
                    f"no tag of {base.image.name} satisfies {base.semver_range!r}",
                    registry=base.image.registry,
                )
        elif base.patches == patchtags.INCREMENTAL:
            # One request more than a plain tag: the list says which patch is the newest.
            tag = patchtags.newest_incremental(_tags(client, base.image), base.tag) or ""
            if not tag:
                raise NotFound(
                    f"neither {base.image.name}:{base.tag} nor a patch tag of it "
                    f"({base.tag}-1 … {base.tag}-{patchtags.MAX_PATCH}) exists",
                    registry=base.image.registry,
                )
        if base.patches == patchtags.FLOATING:
            # The floating patch tag when ACR made one, else the original.
            try:
                tag = patchtags.floating(base.tag)
                digest = client.resolve_digest(base.image.with_tag(tag))
            except NotFound:
                tag = base.tag
                digest = client.resolve_digest(base.image.with_tag(tag))
        else:
            digest = client.resolve_digest(base.image.with_tag(tag))
        ref = base.image.with_tag(tag)
        if previous and previous.image.digest == digest and previous.ref.tag == tag:
            return BaseObservation(previous.ref, previous.image, clock)
        image = self.images.get(client, base.image.with_digest(digest))
        return BaseObservation(ImageRef(ref.registry, ref.repository, tag, digest), image, clock)

    def observe_base(self, base: BaseSpec, clock: float) -> BaseObservation:
        return self.bases.observe(
            base.key, base.interval, lambda prev: self._lookup_base(base, prev, clock)
        )

    # -- the check ----------------------------------------------------------------------------

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
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        try:
            observed = self.observe_base(policy.base, clock)
        except RegistryThrottled as exc:
            wait = max(exc.retry_after, 1.0)
            status = {
                **previous,
                "lastError": f"throttled by {exc.registry}: retrying in {wait:g}s ({exc})",
            }
            # A 429 delays; it is no news about the policy: its conditions stay as they are.
            kept = [
                Condition(
                    c["type"], c["status"] == "True", c.get("reason", ""), c.get("message", "")
                )
                for c in previous.get("conditions") or []
            ] or cond.reconciling(
                "Throttled", f"registry {exc.registry} asked us to wait {wait:g}s"
            )
            return CheckResult(status, kept, [], wait)
        except RegistryAuthError as exc:
            return self._failed(previous, "AuthenticationFailed", str(exc), policy, body)
        except NotFound as exc:
            return self._failed(previous, "BaseNotFound", str(exc), policy, body)
        except RegistryError as exc:
            return self._failed(previous, "RegistryUnavailable", str(exc), policy, body)

        base = BaseDigest.of(observed.image)
        base_status, prior, events = self._base_status(previous, observed, base, body, now)
        ctx = _Context(
            policy=policy,
            body=body,
            now=now,
            base=base,
            previous_bases=prior,
            history=[dict(e) for e in previous.get("lineage") or []],
            events=events,
            conflicts=dict(conflicts or {}),
            base_changed_at=build_time(observed.image),
        )
        waves_status = dict(previous.get("waves") or {})
        if waves_status.get("baseDigest") == base.digest:
            ctx.rejected = {
                str(r.get("digest")): dict(r) for r in waves_status.get("rejected") or []
            }
        ctx.smoke_tests = {
            str(t.get("digest")): dict(t)
            for t in previous.get("smokeTests") or []
            if t.get("digest")
        }
        ctx.rolled = _rolled(ctx.history)
        governed = sorted(workloads, key=lambda w: str(ref_of(w)))
        # Rejections are rebuilt from the workloads' own records too: a lost status write
        # must not be the only memory of a candidate that failed on this base.
        for obj in governed:
            record = WorkloadState.decode(obj).rollout
            if (
                record
                and record.phase == Phase.ROLLED_BACK.value
                and record.base_digest == base.digest
            ):
                for image in record.target.values():
                    digest = ImageRef.parse(image).digest
                    ctx.rejected.setdefault(
                        digest,
                        {
                            "digest": digest,
                            "image": image,
                            "workload": str(ref_of(obj)),
                            "reason": f"rolled back on {ref_of(obj)}: {record.reason}",
                            "at": record.finished_at,
                        },
                    )

        view = self._view(ctx)
        seen = [self._look(ctx, obj, view) for obj in governed]
        # Finish and roll back first: a rollout that failed in this very check rejects its
        # candidate policy-wide before the planner may start anything on it.
        for w in seen:
            if w.decision.action in (Action.FINISH, Action.ROLL_BACK):
                self._conclude(ctx, w)
            elif w.decision.action is Action.YIELD:
                self._yield(ctx, w)
            elif w.decision.action is Action.SETTLE:
                self._settle(ctx, w)
        view = self._view(ctx)
        for w in seen:
            if w.decision.action is Action.ROLL:
                w.decision = decide(w.observation, view)
        plan = self._plan_and_roll(ctx, seen)
        rows = [self._rows(ctx, w) for w in seen]
        for w, mine in zip(seen, rows, strict=True):
            self._mark(ctx, w, mine)
            self._send(ctx, w)
        rows = [
            self._rows(ctx, w) if w.failed else mine for w, mine in zip(seen, rows, strict=True)
        ]
        for w in seen:
            self._sync_lineage(ctx, w)
        return self._result(ctx, seen, rows, plan, base_status, generation)

    # -- observe ------------------------------------------------------------------------------

    def _view(self, ctx: _Context) -> PolicyView:
        return PolicyView(
            ctx.base.digest,
            ctx.policy.rollout.suspend,
            {d: str(r.get("reason", "rolled back")) for d, r in ctx.rejected.items()},
            ctx.policy.rollout.patch_gitops_managed,
        )

    def _look(self, ctx: _Context, obj: Mapping[str, Any], view: PolicyView) -> _Workload:
        ref = ref_of(obj)
        state = _remembered(WorkloadState.decode(obj), ctx.rolled.get(str(ref)))
        w = _Workload(ref, obj, state, WorkloadObservation(str(ref), ()), _NONE)
        record = state.rollout
        governed = governed_containers(obj, ctx.policy)
        hands: dict[str, Any] = {
            "images": governed,
            "writers": {c: describe_writer(m) for c, m in image_managers(obj).items()},
            "conflict": tuple(ctx.conflicts.get(str(ref), ())),
            "gitops": managed_by(obj),
        }
        if hands["conflict"]:
            # Nothing to look up: neither policy may act on it.
            rows = tuple(ContainerObservation(c, i) for c, i in sorted(governed.items()))
            w.observation = WorkloadObservation(str(ref), rows, state, paused(obj), **hands)
        elif record and followed(record):
            # A rollout, or the rollback of one, is followed from its own patch.
            started = _parse_time(
                record.started_at if record.phase == Phase.PROGRESSING.value else record.finished_at
            )
            result = self._progress(ctx, w, record, started, governed)
            w.observation = WorkloadObservation(str(ref), (), state, paused(obj), result, **hands)
        else:
            try:
                observed = self._observe(ctx, w, governed)
                w.observation = dataclasses.replace(observed, **hands)
            except KubeError as exc:
                w.observation = WorkloadObservation(str(ref), (), state, error=str(exc))
        w.decision = decide(w.observation, view)
        return w

    def _observe(
        self, ctx: _Context, w: _Workload, governed: Mapping[str, str]
    ) -> WorkloadObservation:
        detail = {
            str(r.get("container")): r for r in status_annotation(w.obj).get("containers") or []
        }
        out: list[ContainerObservation] = []
        for container, image in sorted(governed.items()):
            try:
                running = ImageRef.parse(image)
            except InvalidReference as exc:
                out.append(ContainerObservation(container, image, invalid=str(exc)))
                continue
            w.running[container] = running
            if running.registry in ctx.throttled:
                throttled = ctx.throttled[running.registry]
                out.append(ContainerObservation(container, image, error=_registry_error(throttled)))
                continue
            try:
                out.append(self._observe_container(ctx, w, container, running, detail))
            except RegistryThrottled as exc:
                ctx.throttled[running.registry] = exc  # the rest waits for its Retry-After
                out.append(ContainerObservation(container, image, error=_registry_error(exc)))
            except RegistryError as exc:
                out.append(ContainerObservation(container, image, error=_registry_error(exc)))
        return WorkloadObservation(str(w.ref), tuple(out), w.state, paused(w.obj))

    def _observe_container(
        self,
        ctx: _Context,
        w: _Workload,
        container: str,
        running: ImageRef,
        detail: Mapping[str, Mapping[str, Any]],
    ) -> ContainerObservation:
        client = self.registries.client_for(running.registry, ctx.policy.base)
        tag = running.tag or w.state.tags.get(container, "")
        digest = running.digest
        if not digest:
            # What a tag-referenced container runs: the digest its pods pulled, recorded on
            # the workload. Re-resolving the tag would be wrong once the pipeline re-publishes
            # it: the pods still run what they pulled, until they are replaced and pull again,
            # which moves the workload's resourceVersion (``engine.pulls``).
            known = detail.get(container) or {}
            recorded = (
                str(known["digest"])
                if same_image(known.get("image"), running) and known.get("digest")
                else ""
            )
            version = str((w.obj.get("metadata") or {}).get("resourceVersion") or "")
            pulled = ""
            if not recorded or self.pulls.changed(str(w.ref), container, version):
                pulled = self._pulled(w, container, running)
                self.pulls.read(str(w.ref), container, version)
            digest = pulled or recorded or self._tag_digest(ctx, client, running)
        app = self.images.get(client, running.with_digest(digest))
        lineage = self._trace(ctx, client, app)
        on_current, why, patched = self._on_base(ctx, lineage)
        if on_current and not patched:
            return ContainerObservation(
                container, str(running), digest, True, why, lineage.base_digest
            )
        # Not on the current base, or only patched in place: a rebuild may still qualify.
        search = self._search(ctx, client, running, tag, digest)
        view = None
        if search.candidate is not None:
            cand = search.candidate
            view = CandidateView(
                str(cand.ref),
                cand.ref.digest,
                cand.tag,
                cand.verdict.passed,
                cand.verdict.pending,
                cand.verdict.reasons,
            )
        return ContainerObservation(
            container,
            str(running),
            digest,
            False,
            why,
            lineage.base_digest,
            view,
            (*search.rejected, *_exclusion_note(search.excluded)),
            patched=patched,
        )

    def _progress(
        self,
        ctx: _Context,
        w: _Workload,
        record: RolloutRecord,
        started: datetime,
        governed: Mapping[str, str],
    ) -> Progress:
        """Where a followed rollout (or its rollback) stands: the workload's conditions and
        what the pods running its template's images did since ``started``
        (``core.podhealth``). The template holds what imagedrift wrote last: the candidate
        while it rolls out, the restored images while it rolls back."""
        rollout = ctx.policy.rollout
        targets = {c: governed[c] for c in record.target if c in governed}
        health = None
        if w.ref.kind != "CronJob":
            try:
                pods = self._pods(w)
            except KubeError as exc:
                # Not judged without its pods: read again at the next check (the verify
                # timeout still bounds how long that may go on).
                result = progress(w.ref.kind, w.obj, started, ctx.now, rollout.verify_timeout)
                if result.phase is Phase.FAILED:
                    return result
                unread = f"its pods could not be read ({exc})"
                return Progress(Phase.PROGRESSING, f"{result.reason}; {unread}")
            if pods is not None:
                health = pod_health(pods, targets, started)
        return progress(
            w.ref.kind,
            w.obj,
            started,
            ctx.now,
            rollout.verify_timeout,
            health,
            rollout.settle_time,
        )

    def _pulled(self, w: _Workload, container: str, running: ImageRef) -> str:
        """The digest ``w``'s pods report for ``container`` (see ``core.running``); "" when
        pods cannot be read here or report none. Read once per image a container gets:
        the result is recorded on the workload."""
        status = w.obj.get("status") or {}
        if not int(status.get("replicas") or status.get("desiredNumberScheduled") or 0):
            return ""  # no pods (scaled to zero, or not created yet): nothing to read
        try:
            pods = self._pods(w)
        except KubeError as exc:
            log.info("%s: pods not read (%s); using the tag's digest", w.ref, exc)
            return ""
        return pulled_digest(pods or (), container, running)

    def _pods(self, w: _Workload) -> list[dict[str, Any]] | None:
        """The first page of ``w``'s pods, read at most once per check (each container,
        and the rollout's verification, asks the same); None when they cannot be read here
        (no selector imagedrift can express, or a port without pods). Raises KubeError."""
        selector = pod_selector(w.obj)
        if not selector or not isinstance(self.kube, PodReader):
            return None
        if w.pods is None:
            w.pods = self.kube.list_pods(w.ref.namespace, selector)
        return w.pods

    def _on_base(self, ctx: _Context, lineage: Lineage) -> tuple[bool, str, bool]:
        """(counts as on the current base, why, only because it was patched in place)."""
        on_current, why = built_on(lineage, ctx.base, ctx.policy.base.image.repository)
        if on_current or not lineage.patched_at:
            return on_current, why, False
        accepted, why = remediated_in_place(lineage, ctx.base_changed_at, ctx.policy.accept_patched)
        return accepted, why, accepted

    def _tag_digest(self, ctx: _Context, client: RegistryClient, ref: ImageRef) -> str:
        key = f"{ref.name}:{ref.tag or 'latest'}"
        if key not in ctx.tag_digests:
            ctx.tag_digests[key] = self.shared.tag_digest(client, ref, ctx.policy.base.interval)
        return ctx.tag_digests[key]

    def _trace(self, ctx: _Context, client: RegistryClient, app: ResolvedImage) -> Lineage:
        lineage = trace(app, [ctx.base])
        if lineage.known or not ctx.previous_bases:
            return lineage
        # Only an image not on the current base needs the older bases (for the record).
        known = [ctx.base]
        base_client = self.registries.client_for(ctx.policy.base.image.registry, ctx.policy.base)
        for digest in ctx.previous_bases:
            try:
                known.append(
                    BaseDigest.of(
                        self.images.get(base_client, ctx.policy.base.image.with_digest(digest))
                    )
                )
            except NotFound:
                continue
        return trace(app, known)

    # -- choose and validate -------------------------------------------------------------------

    def _search(
        self, ctx: _Context, client: RegistryClient, running: ImageRef, tag: str, digest: str
    ) -> Search:
        """The candidate for (repository, running tag) on the current base.

        Cached per policy generation and base digest until the policy's interval passes
        or a push event for the repository drops it; a verdict still pending (a smoke test
        running) is never cached.
        """
        generation = str((ctx.body.get("metadata") or {}).get("generation") or 0)
        key = (running.name, ctx.policy.name, generation, tag, digest, ctx.base.digest)
        cached = self.searches.get(key)
        if isinstance(cached, Search):
            search = cached
        else:
            search = self._find(ctx, client, running, tag, digest)
            pending = search.candidate is not None and search.candidate.verdict.pending
            self.searches.put(key, search, 0.0 if pending else ctx.policy.base.interval)
        if search.candidate is not None:
            self._record_candidate(ctx, running, search.candidate)
        ctx.searches[running.name, tag] = search
        return search

    def _find(
        self, ctx: _Context, client: RegistryClient, running: ImageRef, tag: str, digest: str
    ) -> Search:
        search = Search()
        tags_spec = dict(ctx.policy.tags)
        same_tag = "sameTag" in tags_spec
        lower: list[str] = []  # tags the selection found lower than the running one
        if same_tag:
            if not tag:
                return search.fail("running image is pinned by digest with no known tag to follow")
            ordered = [tag]
            policy = policy_from_spec({"sameTag": {"tag": tag}})
            search.policy = policy.describe()
            if ctx.policy.app_patches:
                original = patchtags.split(tag)[0]
                listed_tags = self.shared.tags(client, running, ctx.policy.base.interval)
                ordered = patchtags.with_patches(
                    [original], tagselect.well_formed(listed_tags)[0], ctx.policy.app_patches
                )
        else:
            policy = policy_from_spec(tags_spec)
            search.policy = policy.describe()
            if not tag:
                return search.fail(
                    "running image has no tag: cannot prove a candidate is not a downgrade"
                )
            listed = self.shared.tags(client, running, ctx.policy.base.interval)
            if isinstance(policy, NewestBuildPolicy):
                kept, _ = tagselect.prefilter(listed, ctx.policy)
                if len(kept) > newestbuild.MAX_TAGS:
                    return search.fail(NewestBuildPolicy.too_many(len(kept)))
                # The running tag's time too, when it is listed: it bounds the downgrades.
                names = [*kept, *([tag] if tag in listed and tag not in kept else [])]
                policy = policy.with_times(self._build_times(ctx, client, running, names))
            selection = tagselect.select(listed, tag, policy, ctx.policy)
            search.notes = list(selection.notes)
            if selection.refused:
                return search.fail(selection.refused)
            ordered = list(selection.candidates)  # none lower than the running tag
            lower = selection.of(tagselect.LOWER)
        for candidate_tag in ordered[: ctx.policy.max_candidates]:
            if same_tag and tagselect.is_downgrade(ctx.policy, policy, candidate_tag, tag):
                search.refuse(candidate_tag, tagselect.LOWER, f"lower than the running {tag}")
                break  # ordered newest first: everything after is lower too
            candidate_ref = running.with_tag(candidate_tag)
            candidate_digest = self._tag_digest(ctx, client, candidate_ref)
            if candidate_digest == digest:
                # Not rebuilt yet; older tags may be, and are refused below as downgrades.
                search.refuse(
                    candidate_tag, RUNNING, f"is the running image ({short_digest(digest)})"
                )
                continue
            image = self.images.get(client, running.with_digest(candidate_digest))
            lineage = self._trace(ctx, client, image)
            on_current, why, _ = self._on_base(ctx, lineage)
            if not on_current:
                search.refuse(candidate_tag, NOT_ON_BASE, why)
                continue
            refused = _registry_refuses(client, candidate_ref, candidate_digest)
            if refused:
                search.refuse(candidate_tag, REGISTRY_REFUSES, refused)
                continue
            pinned = running.with_digest(candidate_digest)
            verdict = validate(
                ctx.policy,
                pinned,
                lineage,
                why,
                GateIO(client, self.kube, ctx.now, ctx.smoke_tests),
            )
            search.candidate = Candidate(pinned, candidate_tag, lineage, verdict)
            search.notes.append(tagselect.TagNote(candidate_tag, TAKEN, _verdict_word(verdict)))
            search.notes += [
                tagselect.TagNote(t, NOT_INSPECTED, f"{candidate_tag} is newer and was taken")
                for t in ordered[ordered.index(candidate_tag) + 1 :]
            ]
            return search
        if lower and len(ordered) < ctx.policy.max_candidates:
            # The search reached the running tag's level and went no lower: say where.
            search.rejected.append(f"{lower[0]}: lower than the running {tag}")
        return search

    def _build_times(
        self, ctx: _Context, client: RegistryClient, running: ImageRef, names: list[str]
    ) -> dict[str, datetime | None]:
        """Build time (config ``created``) of each tag in ``names``."""
        times: dict[str, datetime | None] = {}
        for name in names:
            digest = self._tag_digest(ctx, client, running.with_tag(name))
            times[name] = build_time(self.images.get(client, running.with_digest(digest)))
        return times

    def _record_candidate(self, ctx: _Context, running: ImageRef, candidate: Candidate) -> None:
        """Put the candidate's verdict into the lineage and ``status.candidate`` (once)."""
        verdict = candidate.verdict
        digest = candidate.ref.digest
        if digest in ctx.rejected:  # its rollout failed on this base: rejected, whatever the gates
            why = ctx.rejected[digest].get("reason", "rolled back")
            verdict = Verdict(False, (*verdict.reasons, f"rollout: {why}"))
        if verdict.pending:
            # Candidates, not the workloads or containers waiting on them: ten workloads
            # waiting on one smoke test are one candidate being validated.
            ctx.validating.add(digest)
        first_rejection = self._newly(ctx, digest)
        ctx.history = history.record_verdict(
            ctx.history,
            base_digest=ctx.base.digest,
            app=running.name,
            app_digest=digest,
            tag=candidate.tag,
            verdict=_verdict_word(verdict),
            reasons=verdict.reasons,
            at=timestamp(ctx.now),
            limit=ctx.policy.history_limit,
        )
        if not ctx.candidate_status:
            ctx.candidate_status = history.candidate_status(
                running.name, digest, candidate.tag, _verdict_word(verdict), verdict.reasons
            )
        if not verdict.passed and not verdict.pending and first_rejection:
            failed = [r for r in verdict.reasons[1:] if not _passing(r)]
            ctx.events.append(
                Event(
                    ctx.body,
                    "Warning",
                    "CandidateRejected",
                    f"{candidate.ref}: {'; '.join(failed or verdict.reasons)}",
                )
            )

    # -- plan the waves -----------------------------------------------------------------------

    def _plan_and_roll(self, ctx: _Context, seen: list[_Workload]) -> waves.Plan:
        """Ask the wave planner which ``ROLL`` decisions start now; roll those, hold the rest."""
        ready = {str(w.ref): w for w in seen if w.decision.action is Action.ROLL}
        rolling: list[str] = []
        done: list[tuple[str, datetime]] = []
        for w in seen:
            record = w.state.rollout
            if record is None or record.base_digest != ctx.base.digest:
                continue
            if record.phase == Phase.PROGRESSING.value and w.decision.action is Action.NONE:
                rolling.append(str(w.ref))
            elif record.phase == Phase.COMPLETE.value and record.finished_at:
                done.append((str(w.ref), _parse_time(record.finished_at)))
        plan = waves.plan(list(ready), rolling, done, ctx.policy.rollout, ctx.now)
        for key, why in plan.held.items():
            w = ready[key]
            w.decision = _held(w.decision, why)
        for key in plan.start:
            self._roll(ctx, ready[key])
        return plan

    # -- act ------------------------------------------------------------------------------------
    # An action is prepared first (the patch, what to record once it landed, what the
    # workload is if it does not), the workload's status note joins the same patch, and
    # each workload gets at most one write per check.

    def _prepare(
        self,
        w: _Workload,
        patch: dict[str, Any],
        state: WorkloadState,
        decision: Decision,
        landed: Callable[[], None],
    ) -> None:
        w.patch, w.before, w.landed = patch, (w.state, w.decision), landed
        w.state, w.decision = state, decision

    def _send(self, ctx: _Context, w: _Workload) -> None:
        """Send the workload's one patch; on success record what it did, else undo."""
        if w.patch is None:
            return
        try:
            self.kube.patch_workload(w.ref, w.patch)
        except KubeError as exc:
            if w.before is not None:
                w.state, w.decision = w.before
            if w.decision.action in (Action.FINISH, Action.ROLL_BACK, Action.YIELD, Action.SETTLE):
                # The outcome is not recorded yet: the rollout still counts as running.
                w.decision = Decision(
                    State.ROLLING_OUT,
                    f"recording the outcome ({w.decision.reason}) again: {exc}",
                    Action.NONE,
                    w.decision.containers,
                )
            if isinstance(exc, KubeConflict):
                log.info("%s changed while we decided; deciding again on its next event", w.ref)
            else:
                w.decision = Decision(State.ERROR, str(exc), Action.NONE, w.decision.containers)
            w.failed = True
            return
        if w.landed is not None:
            w.landed()

    def _roll(self, ctx: _Context, w: _Workload) -> None:
        decision = w.decision
        started = timestamp(ctx.now)
        targets = dict(decision.targets)
        first = ImageRef.parse(targets[sorted(targets)[0]])
        record = RolloutRecord(
            id=f"{ctx.base.digest}|{first.digest}",
            base_digest=ctx.base.digest,
            target=targets,
            previous={c: str(w.running[c]) for c in targets},
            tags=dict(decision.tags),
            started_at=started,
            phase=Phase.PROGRESSING.value,
            policy=ctx.policy.name,
            previous_digests={
                c.name: c.digest for c in w.observation.containers if c.name in targets and c.digest
            },
        )
        new_state = WorkloadState(
            {**w.state.tags, **record.tags}, record, w.state.rejected, w.state.overridden
        )
        rolling = Decision(
            State.ROLLING_OUT,
            "patched",
            Action.ROLL,
            tuple(
                type(row)(row.name, State.ROLLING_OUT, f"patched to {targets[row.name]}")
                if row.name in targets
                else row
                for row in decision.containers
            ),
            targets,
            decision.tags,
        )

        def landed() -> None:  # the lineage follows the record (_sync_lineage)
            summary = ", ".join(f"{c}={t}" for c, t in sorted(targets.items()))
            ctx.events.append(Event(ctx.body, "Normal", "RolloutStarted", f"{w.ref}: {summary}"))
            ctx.events.append(
                Event(
                    w.obj,
                    "Normal",
                    "RolloutStarted",
                    f"imagedrift policy {ctx.policy.name}: {summary}",
                )
            )

        patch = image_patch(w.ref.kind, targets, new_state, _version(w.obj))
        self._prepare(w, patch, new_state, rolling, landed)

    def _conclude(self, ctx: _Context, w: _Workload) -> None:
        """A rollout finished (complete, or failed and rolled back): record it on the
        workload in one patch (with the restored images when it failed)."""
        record = w.state.rollout
        assert record is not None and w.observation.progress is not None
        reason = w.observation.progress.reason
        finished = timestamp(ctx.now)
        failed = w.decision.action is Action.ROLL_BACK
        phase = Phase.ROLLED_BACK if failed else Phase.COMPLETE
        # Containers someone else set during the rollout are theirs now: left alone (a
        # rollback skips them) and never patched to this candidate again.
        restore, superseded = rollback_images(record, w.observation.images)
        images = restore if failed else {}
        overridden = (
            *w.state.overridden,
            *(ImageRef.parse(record.target[c]).digest for c in sorted(superseded)),
        )
        rejected = w.state.rejected
        tags = dict(w.state.tags)
        if failed:
            # Back to exactly the digest that ran, on the containers still on our target.
            rejected = (*rejected, *(ImageRef.parse(t).digest for t in record.target.values()))
            for container in images:
                tags[container] = _tag_of(record.previous[container]) or tags.get(container, "")
            if record.base_digest == ctx.base.digest:
                # Rejected at once, even if the patch below is lost: the candidate failed.
                self._reject(ctx, record, w.ref, reason)
        done = dataclasses.replace(record, phase=phase.value, reason=reason, finished_at=finished)
        if failed and images:
            # The rollback is followed like any rollout (``_settle`` records its outcome).
            done = dataclasses.replace(done, rollback=Phase.PROGRESSING.value)
        new_state = WorkloadState(tags, done, rejected, overridden)
        rows = tuple(
            type(row)(
                row.name,
                State.OVERRIDDEN,
                f"superseded: changed to {superseded[row.name]} during the rollout; "
                + ("left alone by the rollback" if failed else "left alone"),
            )
            if row.name in superseded
            else type(row)(row.name, State.ROLLED_BACK if failed else State.UP_TO_DATE, reason)
            for row in w.decision.containers
        )
        decision = Decision(w.decision.state, reason, w.decision.action, rows)

        def landed() -> None:  # the lineage follows the record (_sync_lineage)
            if failed:
                restored = ", ".join(f"{c}={i}" for c, i in sorted(images.items()))
                message = (
                    f"{w.ref}: rollout failed ({reason}); rolled back to {restored or 'nothing'}"
                )
                if superseded:
                    message += f"; left alone (changed meanwhile): {', '.join(sorted(superseded))}"
                ctx.events.append(Event(ctx.body, "Warning", "RolledBack", message))
                ctx.events.append(Event(w.obj, "Warning", "RolledBack", message))
            else:
                message = f"{w.ref}: rollout complete ({reason})"
                if superseded:
                    message += (
                        f"; changed by someone else meanwhile: {', '.join(sorted(superseded))}"
                    )
                ctx.events.append(Event(ctx.body, "Normal", "RolloutComplete", message))
                ctx.events.append(Event(w.obj, "Normal", "RolloutComplete", message))

        patch = image_patch(w.ref.kind, images, new_state, _version(w.obj))
        self._prepare(w, patch, new_state, decision, landed)

    def _yield(self, ctx: _Context, w: _Workload) -> None:
        """Someone replaced the image imagedrift rolled: record that on the workload (the
        candidate goes to ``overridden``: never patched in again), say so, patch nothing."""
        record = w.state.rollout
        assert record is not None
        reason = w.decision.reason
        finished = timestamp(ctx.now)
        replaced = dict(w.decision.targets)  # container -> the image now
        digests = tuple(
            ImageRef.parse(record.target[c]).digest for c in replaced if c in record.target
        )
        done = dataclasses.replace(
            record, phase=State.OVERRIDDEN.value, reason=reason, finished_at=finished
        )
        new_state = WorkloadState(
            dict(w.state.tags), done, w.state.rejected, (*w.state.overridden, *digests)
        )

        def landed() -> None:  # the lineage follows the record (_sync_lineage)
            message = f"{w.ref}: {reason}"
            ctx.events.append(Event(ctx.body, "Warning", "Overridden", message))
            ctx.events.append(Event(w.obj, "Warning", "Overridden", message))

        patch = image_patch(w.ref.kind, {}, new_state, _version(w.obj))
        self._prepare(w, patch, new_state, w.decision, landed)

    def _settle(self, ctx: _Context, w: _Workload) -> None:
        """A rollback finished: record whether the workload is back on what ran before.
        A failed rollback is a Warning for a human: imagedrift does not try a third time."""
        record = w.state.rollout
        assert record is not None and w.observation.progress is not None
        outcome = w.observation.progress
        done = dataclasses.replace(
            record,
            rollback=outcome.phase.value,
            rollback_reason=outcome.reason,
            rollback_at=timestamp(ctx.now),
        )
        new_state = dataclasses.replace(w.state, rollout=done)
        ok = outcome.phase is Phase.COMPLETE
        decision = Decision(
            State.ROLLED_BACK,
            f"rolled back ({record.reason}); the rollback "
            + (f"completed: {outcome.reason}" if ok else f"failed: {outcome.reason}"),
            w.decision.action,
            w.decision.containers,
        )

        def landed() -> None:
            if ok:
                message = f"{w.ref}: rollback complete ({outcome.reason})"
                ctx.events.append(Event(ctx.body, "Normal", "RollbackComplete", message))
                ctx.events.append(Event(w.obj, "Normal", "RollbackComplete", message))
            else:
                message = (
                    f"{w.ref}: rollback failed ({outcome.reason}); imagedrift leaves it as it is"
                )
                ctx.events.append(Event(ctx.body, "Warning", "RollbackFailed", message))
                ctx.events.append(Event(w.obj, "Warning", "RollbackFailed", message))

        patch = image_patch(w.ref.kind, {}, new_state, _version(w.obj))
        self._prepare(w, patch, new_state, decision, landed)

    def _sync_lineage(self, ctx: _Context, w: _Workload) -> None:
        """The lineage says of each rollout what the workload's own record says.

        This is the only place rollouts enter the lineage: after a check's patches landed
        (a rollout started, finished, rolled back or was overridden, the record says so),
        and after a lost status write (the operator died, the API failed), when the next
        check restores the rollout from the record: never half-recorded.
        """
        record = w.state.rollout
        if record is None:
            return
        for container, image in record.target.items():
            digest = ImageRef.parse(image).digest
            key = (record.base_digest, digest)
            entry = next(
                (e for e in ctx.history if (e.get("baseDigest"), e.get("appDigest")) == key), None
            )
            if entry is None and record.base_digest != ctx.base.digest:
                continue  # an old entry the history limit dropped: not brought back
            row: Mapping[str, Any] = next(
                (
                    r
                    for r in (entry or {}).get("rollouts") or []
                    if (r.get("workload"), r.get("container"), r.get("startedAt"))
                    == (str(w.ref), container, record.started_at)
                ),
                {},
            )
            if row.get("result") == record.phase and row.get("rollback", "") == record.rollback:
                continue
            ctx.history = history.record_rollout(
                ctx.history,
                base_digest=record.base_digest,
                app_digest=digest,
                workload=str(w.ref),
                container=container,
                previous_image=record.previous.get(container, ""),
                result=record.phase,
                reason=record.reason
                or ("patched" if record.phase == Phase.PROGRESSING.value else _RESTORED),
                started_at=record.started_at,
                finished_at=record.finished_at,
                app=ImageRef.parse(image).name,
                tag=record.tags.get(container, ""),
                rollback=record.rollback,
            )

    def _rows(self, ctx: _Context, w: _Workload) -> list[dict[str, Any]]:
        """The per-container rows of ``w`` (status items and the workload's annotation)."""
        obs = {c.name: c for c in w.observation.containers}
        record = w.state.rollout
        if not w.decision.containers and w.decision.state is not State.UP_TO_DATE:
            return [
                {
                    "workload": str(w.ref),
                    "container": "",
                    "image": "",
                    "state": str(w.decision.state),
                    "reason": w.decision.reason[:MAX_REASON],
                }
            ]
        rows: list[dict[str, Any]] = []
        for row in w.decision.containers:
            seen = obs.get(row.name)
            target = record.target.get(row.name, "") if record else ""
            item: dict[str, Any] = {
                "workload": str(w.ref),
                "container": row.name,
                "image": seen.image if seen else target,
                "state": str(row.state),
                "reason": row.reason[:MAX_REASON],
            }
            rolled = row.state is State.ROLLING_OUT or (row.state is State.UP_TO_DATE and not seen)
            if record and target and rolled:
                # What the rollout writes: the same row at the patch, while it is followed
                # and once it completed, so none of those checks rewrites the workload.
                item["image"] = target
                if row.state is State.UP_TO_DATE:
                    item["digest"] = ImageRef.parse(target).digest
                item["baseDigest"] = record.base_digest
            else:
                if seen and seen.digest:
                    item["digest"] = seen.digest
                if seen and seen.base_digest:
                    item["baseDigest"] = seen.base_digest
            rows.append(item)
        return rows

    def _mark(self, ctx: _Context, w: _Workload, rows: list[dict[str, Any]]) -> None:
        """Put the workload's own ``imagedrift.io/status`` note in step with its rows.

        Joins the workload's patch of this check, if any; on its own it is written only
        when it changed, and a workload that was always up to date, pinned by digest,
        carries none (no write per workload at fleet scale).
        """
        if w.decision.state in (State.ERROR, State.CONFLICT):
            # A fault is no news to record on the workload; and of two policies that both
            # select it, neither may write: their notes would replace each other forever.
            return
        mine = [{k: v for k, v in r.items() if k != "workload"} for r in rows]
        wanted = workload_detail(ctx.policy.name, mine)
        current = status_annotation(w.obj)
        # While a rollout (or its rollback) is followed, its progress ("1 of 3 replicas
        # updated") moves every few seconds; every annotation write bumps a Deployment's
        # generation and is copied onto its ReplicaSets, so the progress is left to the
        # policy's status and the workload is written when its record changes state.
        moving = w.patch is None and followed(w.state.rollout)
        if _gist(current, moving) == _gist(wanted, moving):
            return  # nothing an SRE would act on changed (an up-to-date reason's wording)
        remember = any(
            r.get("digest") and "@" not in str(r.get("image", "")) for r in mine
        )  # a tag-referenced container: its running digest must be kept
        quiet = all(r["state"] == State.UP_TO_DATE for r in mine)
        if not current and quiet and not remember and w.patch is None:
            return
        text = json.dumps(wanted, sort_keys=True, separators=(",", ":"))
        if w.patch is None:
            # Only our own detail annotation: no resourceVersion precondition. While a
            # workload rolls its status moves on every few seconds, and a precondition
            # would turn most of these writes into 409s and retries (a fleet-size rollout
            # made five times more PATCHes than workloads); a stale detail is rewritten by
            # the next check.
            w.patch = {"metadata": {"annotations": {}}}
        w.patch["metadata"]["annotations"][STATUS_ANNOTATION] = text

    # -- status ---------------------------------------------------------------------------------

    def _base_status(
        self,
        previous: Mapping[str, Any],
        observed: BaseObservation,
        base: BaseDigest,
        body: Mapping[str, Any],
        now: datetime,
    ) -> tuple[dict[str, Any], list[str], list[Event]]:
        base_status = dict(previous.get("base") or {})
        prior = [d for d in base_status.get("previousDigests") or [] if d != base.digest]
        events: list[Event] = []
        if base_status.get("digest") and base_status["digest"] != base.digest:
            prior = [base_status["digest"], *prior]
            events.append(
                Event(
                    body,
                    "Normal",
                    "BaseChanged",
                    f"{observed.ref.name}:{observed.ref.tag} moved "
                    f"{short_digest(base_status['digest'])} -> {short_digest(base.digest)}",
                )
            )
            base_status["changedAt"] = timestamp(now)
        base_status.update(
            image=observed.ref.name,
            tag=observed.ref.tag,
            digest=base.digest,
            shortDigest=short_digest(base.digest),
            platforms=[
                {"platform": str(m.platform), "digest": m.digest}
                for m in observed.image.manifests
                if m.platform
            ],
            checkedAt=timestamp(now),
            previousDigests=prior[:MAX_PREVIOUS_BASES],
            # When the base was built (newest platform): detection latency is measured from it.
            created=max((m.created for m in observed.image.manifests), default=""),
        )
        base_status.setdefault("changedAt", timestamp(now))
        return base_status, prior[:MAX_PREVIOUS_BASES], events

    def _result(
        self,
        ctx: _Context,
        seen: list[_Workload],
        rows: list[list[dict[str, Any]]],
        plan: waves.Plan,
        base_status: dict[str, Any],
        generation: int,
    ) -> CheckResult:
        policy = ctx.policy
        states = [w.decision.state for w in seen]
        rolling = sum(1 for s in states if s is State.ROLLING_OUT)
        # A rollback being followed is a rollout too: checked as often, Reconciling meanwhile.
        rolling_back_now = sum(1 for w in seen if _rolling_back_now(w))
        errors = [w for w in seen if w.decision.state is State.ERROR]
        counts = {
            "optedIn": len(seen),
            "upToDate": sum(1 for s in states if s is State.UP_TO_DATE),
            "drifted": sum(1 for s in states if s in DRIFTED_STATES),
            "rollingOut": rolling,
            "errors": len(errors),
        }
        attention = sorted(
            (r for mine in rows for r in mine if r["state"] != State.UP_TO_DATE),
            key=lambda r: (_ATTENTION_ORDER.get(r["state"], 9), r["workload"], r["container"]),
        )
        done = [w for w in seen if _done_on(w, ctx.base.digest)]
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "base": base_status,
            "workloads": {
                **counts,
                "states": {str(s): states.count(s) for s in sorted(set(states))},
                "items": attention[:MAX_ATTENTION],
                "unlisted": max(len(attention) - MAX_ATTENTION, 0),
            },
            "lineage": ctx.history[: policy.history_limit],
            "candidate": ctx.candidate_status or history.candidate_of(ctx.history, ctx.base.digest),
            "lastError": errors[0].decision.reason if errors else "",
            "waves": {
                "baseDigest": ctx.base.digest,
                "current": plan.wave,
                "total": plan.waves,
                "done": len(done),
                "rolling": rolling,
                "waiting": len(plan.held),
                "message": plan.message,
                "rejected": list(ctx.rejected.values())[-MAX_REJECTED:],
            },
            "smokeTests": sorted(
                ctx.smoke_tests.values(), key=lambda t: str(t.get("startedAt", "")), reverse=True
            )[:MAX_SMOKE_TESTS],
        }
        finished = [_parse_time(w.state.rollout.finished_at) for w in done if w.state.rollout]
        if finished:
            status["waves"]["healthySince"] = timestamp(max(finished))
        status = fit(status, STATUS_BUDGET)

        next_in: float | None = None

        def sooner(seconds: float) -> None:
            nonlocal next_in
            next_in = seconds if next_in is None else min(next_in, seconds)

        if counts["drifted"]:
            sooner(policy.base.interval)  # a rebuilt image may appear: look again
        if plan.retry_at is not None:
            sooner(max((plan.retry_at - ctx.now).total_seconds(), 1.0))
        if ctx.validating:
            sooner(VALIDATING_INTERVAL)
        if rolling or rolling_back_now:
            sooner(min(ROLLING_INTERVAL, policy.rollout.verify_timeout, policy.base.interval))
        for w in seen:  # a settling window ends: look then, not a whole interval later
            again = w.observation.progress.again_in if w.observation.progress else None
            if again is not None and w.decision.action is Action.NONE:
                sooner(again)
        throttled = next(iter(ctx.throttled.values()), None)
        # A fault outranks progress: the SRE must see what cannot be checked.
        if throttled is not None:
            conditions = cond.reconciling("Throttled", str(throttled))
            next_in = max(throttled.retry_after, 1.0)
        elif errors:
            conditions = cond.not_ready(
                "RegistryUnavailable",
                f"{len(errors)} of {len(seen)} workload(s) could not be checked: "
                f"{errors[0].ref}: {errors[0].decision.reason}",
            )
        elif rolling or rolling_back_now:
            parts = [f"{rolling} workload(s) rolling out"] if rolling else []
            if rolling_back_now:
                parts.append(f"{rolling_back_now} rolling back")
            conditions = cond.reconciling("RolloutInProgress", ", ".join(parts))
        elif plan.held:
            conditions = cond.ready("RolloutWaiting", plan.message)
        elif ctx.validating:
            conditions = cond.ready(
                "Validating", f"{len(ctx.validating)} candidate(s) still being validated"
            )
        elif counts["drifted"]:
            conditions = cond.ready(
                "WaitingForRebuild",
                f"{counts['drifted']} of {counts['optedIn']} workload(s) on an old base; "
                "no validated rebuild to roll yet",
            )
        else:
            conditions = cond.ready(
                "UpToDate",
                f"{counts['upToDate']} workload(s) on base {short_digest(ctx.base.digest)}",
            )
        drifted = [
            {k: str(r.get(k, "")) for k in ("workload", "container", "image", "baseDigest")}
            for mine in rows
            for r in mine
            if r["state"] in DRIFTED_STATES
        ]
        fault = "RegistryUnavailable" if errors and throttled is None else ""
        return CheckResult(
            status, conditions, ctx.events, next_in, counts, ctx.searches, drifted, fault
        )

    def _failed(
        self,
        previous: Mapping[str, Any],
        reason: str,
        message: str,
        policy: PolicySpec,
        body: Mapping[str, Any],
    ) -> CheckResult:
        status = {**previous, "lastError": message}
        was = {c.get("type"): c for c in previous.get("conditions") or []}.get("Ready") or {}
        events = [] if was.get("reason") == reason else [Event(body, "Warning", reason, message)]
        return CheckResult(
            status,
            cond.not_ready(reason, message),
            events,
            min(policy.base.interval, 30.0),
            fault=reason,
        )

    def _newly(self, ctx: _Context, digest: str) -> bool:
        """Is this the first check to reject ``digest`` (so its Event is posted once)?"""
        return not any(
            e.get("appDigest") == digest
            and e.get("baseDigest") == ctx.base.digest
            and e.get("verdict") == "Rejected"
            for e in ctx.history
        )

    def _reject(self, ctx: _Context, record: RolloutRecord, ref: WorkloadRef, reason: str) -> None:
        """A rollout failed: its candidates are rejected for this base digest, policy-wide,
        so the remaining waves stop and no other workload starts on them."""
        for image in record.target.values():
            digest = ImageRef.parse(image).digest
            why = f"rolled back on {ref}: {reason}"
            ctx.rejected[digest] = {
                "digest": digest,
                "image": image,
                "workload": str(ref),
                "reason": why,
                "at": timestamp(ctx.now),
            }
            for entry in ctx.history:
                if entry.get("baseDigest") == ctx.base.digest and entry.get("appDigest") == digest:
                    entry["verdict"] = "Rejected"
                    entry["reasons"] = [*(entry.get("reasons") or []), f"rollout: {why}"]
            if ctx.candidate_status.get("digest") == digest:
                ctx.candidate_status["verdict"] = "Rejected"
                ctx.candidate_status["reasons"] = [
                    *ctx.candidate_status.get("reasons", []),
                    f"rollout: {why}",
                ]
            ctx.events.append(
                Event(
                    ctx.body,
                    "Warning",
                    "CandidateRejected",
                    f"{image}: rollout failed on {ref} ({reason}); remaining waves stopped",
                )
            )


_NONE = Decision(State.UP_TO_DATE, "", Action.NONE, ())
_RESTORED = "restored from the workload's rollout record"
_ATTENTION_ORDER = {
    State.ERROR: 0,
    State.ROLLING_OUT: 1,
    State.ROLLED_BACK: 2,
    State.WAITING: 3,
    State.DRIFTED: 4,
    State.PAUSED: 5,
    State.SUSPENDED: 6,
    State.UNKNOWN: 7,
}


def _held(decision: Decision, why: str) -> Decision:
    """A ``ROLL`` the wave planner holds back: the targeted containers are ``Waiting``."""
    rows = tuple(
        type(row)(row.name, State.WAITING, why) if row.name in decision.targets else row
        for row in decision.containers
    )
    return Decision(State.WAITING, why, Action.NONE, rows)


def _done_on(w: _Workload, base_digest: str) -> bool:
    record = w.state.rollout
    return bool(
        record
        and record.base_digest == base_digest
        and record.phase == Phase.COMPLETE.value
        and record.finished_at
    )


def _gist(detail: Mapping[str, Any], moving: bool = False) -> Any:
    """What of a status note is worth a write: every field, except the reason of an
    up-to-date container (it only rewords why the container is fine), and, while a rollout
    is ``moving``, any reason (its progress)."""
    rows = [
        {
            k: v
            for k, v in r.items()
            if not (k == "reason" and (moving or r.get("state") == State.UP_TO_DATE))
        }
        for r in detail.get("containers") or []
    ]
    return (detail.get("policy"), rows)


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _registry_error(exc: RegistryError) -> str:
    where = f"registry {exc.registry}: " if exc.registry else "registry: "
    return f"{where}{exc}"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _verdict_word(verdict: Verdict) -> str:
    if verdict.pending:
        return "Pending"
    return "Passed" if verdict.passed else "Rejected"


def _passing(reason: str) -> bool:
    """Lineage reasons are passing by construction (a candidate is only validated once its
    lineage is proven); the Event shows every other gate's reason."""
    return reason.startswith("lineage: ")


def _registry_refuses(client: RegistryClient, tagged: ImageRef, digest: str) -> str:
    """Why the registry itself says ``tagged`` must not run ("" when it does not).

    ACR quarantine: a quarantined image (or one whose tag moved meanwhile) is not a
    candidate until the registry's own scanner lets it pass. Asked only for a candidate
    already proven on the current base, so it costs nothing in steady state.
    """
    if not isinstance(client, TagFacts):
        return ""
    try:
        info = client.tag_info(tagged)
    except RegistryAuthError:
        return ""  # e.g. anonymous pull: no metadata rights, so no facts to consult
    if info.digest and info.digest != digest:
        return f"tag moved to {short_digest(info.digest)} while it was inspected"
    if info.quarantine_state and info.quarantine_state.lower() != "passed":
        return f"the registry holds it in quarantine (state {info.quarantine_state})"
    return ""
