"""One check of one ImagePolicy: detect, trace, choose, validate, roll out, verify, record.

``PolicyChecker.check`` is called by the wiring on every due tick. It reads the world through
the registry and Kubernetes ports, leaves every decision to ``imagedrift.core``, and returns
the status to write and the events to post; it never raises for registry faults (those
become conditions and a retry delay).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagedrift.core import conditions as cond
from imagedrift.core import history, waves
from imagedrift.core.conditions import Condition, timestamp
from imagedrift.core.images import ResolvedImage
from imagedrift.core.lineage import BaseDigest, Lineage, built_on, trace
from imagedrift.core.refs import ImageRef, short_digest
from imagedrift.core.rollout import Phase, progress
from imagedrift.core.spec import BaseSpec, PolicySpec
from imagedrift.core.tagpolicy import policy_from_spec
from imagedrift.core.workloads import (
    RolloutRecord,
    WorkloadRef,
    WorkloadState,
    governed_containers,
    image_patch,
    paused,
    ref_of,
)
from imagedrift.engine.caches import BaseObservation, BaseWatcher, ImageCache
from imagedrift.engine.gates import GateIO, Verdict, validate
from imagedrift.engine.ports import Event, KubePort, RegistryPort
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
MAX_STATUS_ITEMS = 500
MAX_SMOKE_TESTS = 20
MAX_REJECTED = 20
FOLLOW_INTERVAL = 2.0  # seconds between checks while a rollout is being verified


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


@dataclass
class CheckResult:
    status: dict[str, Any]
    conditions: list[Condition]
    events: list[Event]
    next_check_in: float
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pending:
    """A drifted workload with validated candidates, waiting for the wave planner."""

    ref: WorkloadRef
    obj: Mapping[str, Any]
    state: WorkloadState
    drifted: dict[str, tuple[ImageRef, str, Candidate]]
    items: list[dict[str, Any]]


@dataclass
class _Context:
    """Per-check state: caches that must not outlive one check (tag lists, tag digests)."""

    policy: PolicySpec
    body: Mapping[str, Any]
    now: datetime
    base: BaseDigest
    base_ref: ImageRef
    previous_bases: list[str]
    seen: Mapping[tuple[str, str], tuple[str, str]]  # (workload, container) -> (image, digest)
    history: list[dict[str, Any]]
    events: list[Event] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    searches: dict[tuple[str, str], Search] = field(default_factory=dict)
    tag_digests: dict[str, str] = field(default_factory=dict)
    tag_lists: dict[str, list[str]] = field(default_factory=dict)
    rolling: int = 0
    candidate_status: dict[str, Any] = field(default_factory=dict)
    # Policy-level rejections for the current base digest: candidate digest -> why.
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)
    smoke_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[_Pending] = field(default_factory=list)
    rolling_keys: list[str] = field(default_factory=list)
    done: list[tuple[str, datetime]] = field(default_factory=list)
    validating: int = 0


class PolicyChecker:
    def __init__(
        self, registries: RegistryPort, kube: KubePort, images: ImageCache, bases: BaseWatcher
    ) -> None:
        self.registries = registries
        self.kube = kube
        self.images = images
        self.bases = bases

    # -- detect -----------------------------------------------------------------------------

    def _lookup_base(
        self, base: BaseSpec, previous: BaseObservation | None, clock: float
    ) -> BaseObservation:
        client = self.registries.client_for(base.image.registry, base)
        tag = base.tag
        if base.semver_range:
            tag = (
                policy_from_spec({"semver": {"range": base.semver_range}}).latest(
                    client.list_tags(base.image)
                )
                or ""
            )
            if not tag:
                raise NotFound(
                    f"no tag of {base.image.name} satisfies {base.semver_range!r}",
                    registry=base.image.registry,
                )
        ref = base.image.with_tag(tag)
        digest = client.resolve_digest(ref)
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
    ) -> CheckResult:
        """Run one check; ``workloads`` are the (possibly stale) bodies the index holds."""
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
        base_status = dict(previous.get("base") or {})
        prior_digests = [d for d in base_status.get("previousDigests") or [] if d != base.digest]
        events: list[Event] = []
        if base_status.get("digest") and base_status["digest"] != base.digest:
            prior_digests = [base_status["digest"], *prior_digests]
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
            previousDigests=prior_digests[:MAX_PREVIOUS_BASES],
            # When the base was built (newest platform): detection latency is measured from it.
            created=max((m.created for m in observed.image.manifests), default=""),
        )
        base_status.setdefault("changedAt", timestamp(now))
        ctx = _Context(
            policy=policy,
            body=body,
            now=now,
            base=base,
            base_ref=observed.ref,
            previous_bases=prior_digests[:MAX_PREVIOUS_BASES],
            history=[dict(e) for e in previous.get("lineage") or []],
            seen={
                (i.get("workload", ""), i.get("container", "")): (
                    i.get("image", ""),
                    i.get("digest", ""),
                )
                for i in (previous.get("workloads") or {}).get("items") or []
            },
            events=events,
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
        registry_error: RegistryError | None = None
        for workload in sorted(workloads, key=lambda w: str(ref_of(w))):
            try:
                self._check_workload(ctx, ref_of(workload))
            except RegistryThrottled as exc:
                registry_error = exc
                break  # the rest waits for the registry's Retry-After
            except RegistryError as exc:
                registry_error = exc
            except KubeError as exc:
                log.warning("workload %s: %s", ref_of(workload), exc)
                ctx.items.append(
                    {"workload": str(ref_of(workload)), "state": "Error", "reason": str(exc)}
                )

        plan = self._plan_and_roll(ctx)
        counts = {
            "optedIn": len({i["workload"] for i in ctx.items}),
            "upToDate": sum(1 for i in ctx.items if i["state"] == "UpToDate"),
            "drifted": sum(
                1
                for i in ctx.items
                if i["state"] in ("Drifted", "Paused", "Suspended", "RolledBack", "Waiting")
            ),
            "rollingOut": ctx.rolling,
        }
        result: dict[str, Any] = {
            "observedGeneration": generation,
            "base": base_status,
            "workloads": {**counts, "items": ctx.items[:MAX_STATUS_ITEMS]},
            "lineage": ctx.history[: policy.history_limit],
            "candidate": ctx.candidate_status,
            "lastError": str(registry_error) if registry_error else "",
            "waves": {
                "baseDigest": base.digest,
                "current": plan.wave,
                "total": plan.waves,
                "done": len(ctx.done),
                "rolling": len(ctx.rolling_keys),
                "waiting": len(plan.held),
                "healthySince": timestamp(max(w for _, w in ctx.done)) if ctx.done else "",
                "message": plan.message,
                "rejected": list(ctx.rejected.values())[-MAX_REJECTED:],
            },
            "smokeTests": sorted(
                ctx.smoke_tests.values(), key=lambda t: str(t.get("startedAt", "")), reverse=True
            )[:MAX_SMOKE_TESTS],
        }
        if not result["waves"]["healthySince"]:
            del result["waves"]["healthySince"]
        next_in = policy.base.interval
        if plan.retry_at is not None:
            next_in = min(next_in, max((plan.retry_at - now).total_seconds(), 1.0))
        if ctx.validating:
            next_in = min(next_in, FOLLOW_INTERVAL)
        if ctx.rolling:
            conditions = cond.reconciling(
                "RolloutInProgress", f"{ctx.rolling} workload(s) rolling out"
            )
            next_in = min(next_in, FOLLOW_INTERVAL)
        elif isinstance(registry_error, RegistryThrottled):
            conditions = cond.reconciling("Throttled", str(registry_error))
            next_in = max(registry_error.retry_after, 1.0)
        elif registry_error:
            conditions = cond.not_ready("RegistryUnavailable", str(registry_error))
        elif plan.held:
            conditions = cond.ready("RolloutWaiting", plan.message)
        elif ctx.validating:
            conditions = cond.ready(
                "Validating", f"{ctx.validating} candidate(s) still being validated"
            )
        elif counts["drifted"]:
            conditions = cond.ready(
                "WaitingForRebuild",
                f"{counts['drifted']} of {counts['optedIn']} workload(s) on an old base; "
                "no validated rebuild to roll yet",
            )
        else:
            conditions = cond.ready(
                "UpToDate", f"{counts['upToDate']} workload(s) on base {short_digest(base.digest)}"
            )
        return CheckResult(result, conditions, ctx.events, next_in, counts)

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
            status, cond.not_ready(reason, message), events, min(policy.base.interval, 30.0)
        )

    # -- per workload -------------------------------------------------------------------------

    def _check_workload(self, ctx: _Context, ref: WorkloadRef) -> None:
        obj = self.kube.get_workload(ref)
        if obj is None:
            return
        state = WorkloadState.decode(obj)
        if state.rollout and state.rollout.phase == Phase.PROGRESSING.value:
            self._follow(ctx, ref, obj, state)
            return
        record = state.rollout
        if (
            record
            and record.base_digest == ctx.base.digest
            and record.phase == Phase.COMPLETE.value
            and record.finished_at
        ):
            ctx.done.append((str(ref), _parse_time(record.finished_at)))
        governed = governed_containers(obj, ctx.policy)
        drifted: dict[str, tuple[ImageRef, str, Candidate]] = {}
        items: list[dict[str, Any]] = []
        for container, image in sorted(governed.items()):
            item = {"workload": str(ref), "container": container, "image": image}
            ctx.items.append(item)
            items.append(item)
            try:
                running = ImageRef.parse(image)
            except InvalidReference as exc:
                item.update(state="Unknown", reason=str(exc))
                continue
            client = self.registries.client_for(running.registry, ctx.policy.base)
            tag = running.tag or state.tags.get(container, "")
            digest = running.digest or self._running_digest(
                ctx, client, running, str(ref), container
            )
            item["digest"] = digest
            app = self.images.get(client, running.with_digest(digest))
            lineage = self._trace(ctx, client, app)
            on_current, why = built_on(lineage, ctx.base, ctx.policy.base.image.repository)
            item["baseDigest"] = lineage.base_digest
            if on_current:
                item.update(state="UpToDate", reason=why)
                continue
            search = self._search(ctx, client, running, tag, digest)
            if search.candidate is None:
                item.update(
                    state="Drifted",
                    reason=f"{why}; " + ("; ".join(search.rejected[:3]) or "no rebuilt image yet"),
                )
                continue
            candidate = search.candidate
            if candidate.ref.digest in state.rejected:
                item.update(
                    state="RolledBack",
                    reason=f"{candidate.ref} was rolled back here before; not retried",
                )
                continue
            if candidate.verdict.pending:
                item.update(
                    state="Waiting",
                    reason=f"validating {candidate.tag}: " + "; ".join(candidate.verdict.reasons),
                )
                continue
            if not candidate.verdict.passed:
                item.update(
                    state="Drifted",
                    reason=f"candidate {candidate.tag} rejected: "
                    + "; ".join(candidate.verdict.reasons),
                )
                continue
            if ctx.policy.rollout.suspend:
                item.update(
                    state="Suspended", reason=f"policy suspended; would roll to {candidate.ref}"
                )
                continue
            if paused(obj):
                item.update(
                    state="Paused", reason=f"workload paused; would roll to {candidate.ref}"
                )
                continue
            item.update(
                state="Drifted",
                reason=f"{why}; rolling to {candidate.tag} ({short_digest(candidate.ref.digest)})",
            )
            drifted[container] = (running, tag, candidate)
        if drifted:
            ctx.pending.append(_Pending(ref, obj, state, drifted, items))

    # -- plan the waves -----------------------------------------------------------------------

    def _plan_and_roll(self, ctx: _Context) -> waves.Plan:
        """Ask the wave planner which pending workloads start now; roll those, hold the rest.

        Runs after every workload was looked at, so a rollout that failed in this very
        check (its candidate now rejected) stops the wave before anything else starts.
        """
        ready: list[_Pending] = []
        for pending in ctx.pending:
            blocked = {
                c: ctx.rejected[cand.ref.digest]
                for c, (_, _, cand) in pending.drifted.items()
                if cand.ref.digest in ctx.rejected
            }
            for item in pending.items:
                if item["container"] in blocked:
                    rejection = blocked[item["container"]]
                    item.update(
                        state="Drifted",
                        reason=f"candidate rejected for this base: {rejection.get('reason', '')}",
                    )
            for container in blocked:
                del pending.drifted[container]
            if pending.drifted:
                ready.append(pending)
        by_key = {str(p.ref): p for p in ready}
        plan = waves.plan(list(by_key), ctx.rolling_keys, ctx.done, ctx.policy.rollout, ctx.now)
        for key, why in plan.held.items():
            for item in by_key[key].items:
                if item["container"] in by_key[key].drifted:
                    item.update(state="Waiting", reason=why)
        for key in plan.start:
            pending = by_key[key]
            self._roll(ctx, pending.ref, pending.obj, pending.state, pending.drifted)
        return plan

    def _running_digest(
        self,
        ctx: _Context,
        client: RegistryClient,
        running: ImageRef,
        workload: str,
        container: str,
    ) -> str:
        """What a tag-referenced container runs: the digest its tag had when first seen.

        Re-resolving the tag would be wrong once the app's pipeline re-publishes it: the
        pods still run the digest they pulled, not the tag's new one.
        """
        image, digest = ctx.seen.get((workload, container), ("", ""))
        if digest and image == str(running):
            return digest
        return self._tag_digest(ctx, client, running)

    def _tag_digest(self, ctx: _Context, client: RegistryClient, ref: ImageRef) -> str:
        key = f"{ref.name}:{ref.tag or 'latest'}"
        if key not in ctx.tag_digests:
            ctx.tag_digests[key] = client.resolve_digest(ref)
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
        key = (running.name, tag)
        if key in ctx.searches:
            return ctx.searches[key]
        search = Search()
        ctx.searches[key] = search
        tags_spec = dict(ctx.policy.tags)
        if "sameTag" in tags_spec:
            if not tag:
                search.rejected.append(
                    "running image is pinned by digest with no known tag to follow"
                )
                return search
            ordered = [tag]
            policy = policy_from_spec({"sameTag": {"tag": tag}})
        else:
            policy = policy_from_spec(tags_spec)
            if running.name not in ctx.tag_lists:
                ctx.tag_lists[running.name] = client.list_tags(running)
            ordered = policy.ordered(ctx.tag_lists[running.name])
            if not tag:
                search.rejected.append(
                    "running image has no tag: cannot prove a candidate is not a downgrade"
                )
                return search
        for candidate_tag in ordered[: ctx.policy.max_candidates]:
            if policy.is_downgrade(candidate_tag, tag):
                search.rejected.append(f"{candidate_tag}: lower than the running {tag}")
                break  # ordered newest first: everything after is lower too
            candidate_ref = running.with_tag(candidate_tag)
            candidate_digest = self._tag_digest(ctx, client, candidate_ref)
            if candidate_digest == digest:
                # Not rebuilt yet; older tags may be, and are refused below as downgrades.
                search.rejected.append(
                    f"{candidate_tag}: is the running image ({short_digest(digest)})"
                )
                continue
            image = self.images.get(client, running.with_digest(candidate_digest))
            lineage = self._trace(ctx, client, image)
            on_current, why = built_on(lineage, ctx.base, ctx.policy.base.image.repository)
            if not on_current:
                search.rejected.append(f"{candidate_tag}: {why}")
                continue
            refused = _registry_refuses(client, running.with_tag(candidate_tag), candidate_digest)
            if refused:
                search.rejected.append(f"{candidate_tag}: {refused}")
                continue
            pinned = running.with_digest(candidate_digest)
            verdict = validate(
                ctx.policy,
                pinned,
                lineage,
                why,
                GateIO(client, self.kube, ctx.now, ctx.smoke_tests),
            )
            if candidate_digest in ctx.rejected:
                verdict = Verdict(
                    False,
                    (
                        *verdict.reasons,
                        f"rollout: {ctx.rejected[candidate_digest].get('reason', 'rolled back')}",
                    ),
                )
            if verdict.pending:
                ctx.validating += 1
            first_rejection = self._newly(ctx, candidate_digest)
            search.candidate = Candidate(pinned, candidate_tag, lineage, verdict)
            ctx.history = history.record_verdict(
                ctx.history,
                base_digest=ctx.base.digest,
                app=running.name,
                app_digest=candidate_digest,
                tag=candidate_tag,
                verdict=_verdict_word(verdict),
                reasons=verdict.reasons,
                at=timestamp(ctx.now),
                limit=ctx.policy.history_limit,
            )
            if not ctx.candidate_status:
                ctx.candidate_status = {
                    "image": f"{running.name}:{candidate_tag}",
                    "digest": candidate_digest,
                    "tag": candidate_tag,
                    "verdict": _verdict_word(verdict),
                    "reasons": list(verdict.reasons),
                }
            if not verdict.passed and not verdict.pending and first_rejection:
                failed = [r for r in verdict.reasons[1:] if not _passing(r)]
                ctx.events.append(
                    Event(
                        ctx.body,
                        "Warning",
                        "CandidateRejected",
                        f"{pinned}: {'; '.join(failed or verdict.reasons)}",
                    )
                )
            return search
        return search

    # -- roll out and verify --------------------------------------------------------------------

    def _roll(
        self,
        ctx: _Context,
        ref: WorkloadRef,
        obj: Mapping[str, Any],
        state: WorkloadState,
        drifted: Mapping[str, tuple[ImageRef, str, Candidate]],
    ) -> None:
        started = timestamp(ctx.now)
        first = next(iter(sorted(drifted.items())))[1][2]
        target = {c: str(cand.ref) for c, (_, _, cand) in drifted.items()}
        previous = {c: str(governed_image) for c, (governed_image, _, _) in drifted.items()}
        record = RolloutRecord(
            id=f"{ctx.base.digest}|{first.ref.digest}",
            base_digest=ctx.base.digest,
            target=target,
            previous=previous,
            tags={c: cand.tag for c, (_, _, cand) in drifted.items()},
            started_at=started,
            phase=Phase.PROGRESSING.value,
            policy=ctx.policy.name,
        )
        new_state = WorkloadState({**state.tags, **record.tags}, record, state.rejected)
        patch = image_patch(
            ref.kind, target, new_state, str((obj.get("metadata") or {}).get("resourceVersion", ""))
        )
        try:
            patched = self.kube.patch_workload(ref, patch)
        except KubeConflict:
            log.info("%s changed while we decided; deciding again next check", ref)
            ctx.rolling += 1
            ctx.rolling_keys.append(str(ref))
            return
        ctx.rolling += 1
        ctx.rolling_keys.append(str(ref))
        for item in ctx.items:
            if item["workload"] == str(ref) and item.get("container") in target:
                item.update(state="RollingOut", reason=f"patched to {target[item['container']]}")
        for container, (running, _, cand) in drifted.items():
            ctx.history = history.record_rollout(
                ctx.history,
                base_digest=ctx.base.digest,
                app_digest=cand.ref.digest,
                workload=str(ref),
                container=container,
                previous_image=str(running),
                result=Phase.PROGRESSING.value,
                reason="patched",
                started_at=started,
            )
        summary = ", ".join(f"{c}={t}" for c, t in sorted(target.items()))
        ctx.events.append(Event(ctx.body, "Normal", "RolloutStarted", f"{ref}: {summary}"))
        ctx.events.append(
            Event(
                patched,
                "Normal",
                "RolloutStarted",
                f"imagedrift policy {ctx.policy.name}: {summary}",
            )
        )

    def _follow(
        self, ctx: _Context, ref: WorkloadRef, obj: Mapping[str, Any], state: WorkloadState
    ) -> None:
        record = state.rollout
        assert record is not None
        started = datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
        result = progress(ref.kind, obj, started, ctx.now, ctx.policy.rollout.verify_timeout)
        for container, image in sorted(record.target.items()):
            ctx.items.append(
                {
                    "workload": str(ref),
                    "container": container,
                    "image": image,
                    "state": "RollingOut",
                    "baseDigest": record.base_digest,
                    "reason": result.reason,
                }
            )
        if result.phase is Phase.PROGRESSING:
            ctx.rolling += 1
            if record.base_digest == ctx.base.digest:
                ctx.rolling_keys.append(str(ref))
            return
        finished = timestamp(ctx.now)
        rejected = state.rejected
        images: dict[str, str] = {}
        phase = result.phase
        if phase is Phase.FAILED:
            images = dict(record.previous)  # roll back to exactly what ran before
            rejected = (
                *state.rejected,
                *(ImageRef.parse(t).digest for t in record.target.values()),
            )
            phase = Phase.ROLLED_BACK
        done = RolloutRecord(
            record.id,
            record.base_digest,
            record.target,
            record.previous,
            record.tags,
            record.started_at,
            phase.value,
            result.reason,
            finished,
            record.policy,
        )
        tags = dict(state.tags)
        if phase is Phase.ROLLED_BACK:
            for container, image in record.previous.items():
                prev = ImageRef.parse(image)
                tags[container] = prev.tag or tags.get(container, "")
        new_state = WorkloadState(tags, done, rejected)
        patch = image_patch(
            ref.kind, images, new_state, str((obj.get("metadata") or {}).get("resourceVersion", ""))
        )
        try:
            patched = self.kube.patch_workload(ref, patch)
        except KubeConflict:
            ctx.rolling += 1
            if record.base_digest == ctx.base.digest:
                ctx.rolling_keys.append(str(ref))
            return
        if phase is Phase.COMPLETE and record.base_digest == ctx.base.digest:
            ctx.done.append((str(ref), ctx.now))
        if phase is Phase.ROLLED_BACK and record.base_digest == ctx.base.digest:
            self._reject(ctx, record, ref, result.reason)
        for container, image in record.target.items():
            ctx.history = history.record_rollout(
                ctx.history,
                base_digest=record.base_digest,
                app_digest=ImageRef.parse(image).digest,
                workload=str(ref),
                container=container,
                previous_image=record.previous.get(container, ""),
                result=phase.value,
                reason=result.reason,
                started_at=record.started_at,
                finished_at=finished,
                app=ImageRef.parse(image).name,
                tag=record.tags.get(container, ""),
            )
        for item in ctx.items:
            if item["workload"] == str(ref):
                item["state"] = "UpToDate" if phase is Phase.COMPLETE else "RolledBack"
        if phase is Phase.COMPLETE:
            message = f"{ref}: rollout complete ({result.reason})"
            ctx.events.append(Event(ctx.body, "Normal", "RolloutComplete", message))
            ctx.events.append(Event(patched, "Normal", "RolloutComplete", message))
        else:
            message = f"{ref}: rollout failed ({result.reason}); rolled back to the previous image"
            ctx.events.append(Event(ctx.body, "Warning", "RolledBack", message))
            ctx.events.append(Event(patched, "Warning", "RolledBack", message))

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
