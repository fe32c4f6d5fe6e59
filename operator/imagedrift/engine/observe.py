"""Observation: what each governed workload runs, where it came from, what could replace it.

I/O only, and it writes nothing: the digests a workload's containers run (its pods, its
own record, the tag), their lineage, the candidate search, or where a followed rollout
stands. A registry or API fault becomes part of the facts (an ``Error`` observation of that
workload or container), never an exception that loses the rest of the check.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.decide import CandidateView, ContainerObservation, WorkloadObservation
from imagedrift.core.gitops import describe_writer, image_managers, managed_by
from imagedrift.core.gitops_source import GitSource
from imagedrift.core.memory import Rolled, remembered
from imagedrift.core.plan import WorkloadFacts
from imagedrift.core.podhealth import pod_health
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase, Progress, progress
from imagedrift.core.running import (
    pod_count,
    pod_selector,
    pulled_digest,
    runs_no_pods,
    same_image,
)
from imagedrift.core.workloads import (
    RolloutRecord,
    WorkloadState,
    followed,
    governed_containers,
    paused,
    ref_of,
    rolling_back,
    status_annotation,
    unapplied,
)
from imagedrift.engine.gitops_sources import SourceFinder
from imagedrift.engine.look import LineageReads, Look, on_base
from imagedrift.engine.ports import KubePort, PodReader
from imagedrift.engine.proposals import PullRequestClients
from imagedrift.engine.pulls import PullWatch
from imagedrift.engine.search import CandidateSearch
from imagedrift.errors import (
    GitError,
    InvalidReference,
    KubeError,
    RegistryError,
    RegistryThrottled,
)

log = logging.getLogger(__name__)


def _exclusion_note(excluded: list[str]) -> tuple[str, ...]:
    if not excluded:
        return ()
    return (f"{len(excluded)} tag(s) never considered (exclusionList), e.g. {excluded[0]}",)


def registry_error(exc: RegistryError) -> str:
    where = f"registry {exc.registry}: " if exc.registry else "registry: "
    return f"{where}{exc}"


class Observer:
    def __init__(
        self,
        reads: LineageReads,
        search: CandidateSearch,
        kube: KubePort,
        pulls: PullWatch,
        sources: SourceFinder | None = None,
        proposals: PullRequestClients | None = None,
    ) -> None:
        self.reads = reads
        self.search = search
        self.kube = kube
        self.pulls = pulls
        self.sources = sources  # None: GitOps write-back is not wired
        self.proposals = proposals  # None: nor are pull requests

    def facts(
        self,
        look: Look,
        obj: Mapping[str, Any],
        recorded: WorkloadState,
        conflict: tuple[str, ...],
        rolled: Rolled | None,
    ) -> WorkloadFacts:
        """What one workload (a watch-cache body, ``recorded`` its decoded record) runs and
        where its rollout stands."""
        ref = ref_of(obj)
        key = str(ref)
        state = remembered(recorded, rolled)
        note = status_annotation(obj)
        record = state.rollout
        governed = governed_containers(obj, look.policy)
        gitops = managed_by(obj)
        hands: dict[str, Any] = {
            "images": governed,
            "writers": {c: describe_writer(m) for c, m in image_managers(obj).items()},
            "conflict": conflict,
            "gitops": gitops,
        }
        if gitops and look.policy.gitops.writes and not conflict:
            if self.sources is None:
                hands["source_error"] = "this operator was started without git write-back"
            else:
                found = self.sources.find(obj, look.policy.gitops)
                if isinstance(found, GitSource):
                    hands["source"] = found
                else:
                    hands["source_error"] = found
        running: dict[str, str] = {}
        if conflict:
            # Nothing to look up: neither policy may act on it.
            rows = tuple(ContainerObservation(c, i) for c, i in sorted(governed.items()))
            observation = WorkloadObservation(key, rows, state, paused(obj), **hands)
        elif record and followed(record):
            # A rollout, or the rollback of one, is followed from its own patch.
            when = record.started_at if record.phase == Phase.PROGRESSING.value else None
            started = parse_timestamp(when or record.finished_at) or look.now
            waiting = unapplied(record, governed)
            if waiting and record.git is not None and record.git.pull_request:
                result = self._proposed(look, record)
            elif waiting:
                result = _not_applied(look, record, started, waiting)
            else:
                result = self._progress(look, obj, record, started, governed)
            observation = WorkloadObservation(key, (), state, paused(obj), result, **hands)
        else:
            try:
                observed = self._observe(look, obj, state, governed, running, note)
                observation = dataclasses.replace(observed, **hands)
            except KubeError as exc:
                observation = WorkloadObservation(key, (), state, error=str(exc))
        return WorkloadFacts(
            ref,
            str((obj.get("metadata") or {}).get("resourceVersion", "")),
            state,
            observation,
            running,
            note,
            runs_no_pods(obj),
        )

    def _observe(
        self,
        look: Look,
        obj: Mapping[str, Any],
        state: WorkloadState,
        governed: Mapping[str, str],
        running: dict[str, str],
        note: Mapping[str, Any],
    ) -> WorkloadObservation:
        detail = {str(r.get("container")): r for r in note.get("containers") or []}
        out: list[ContainerObservation] = []
        for container, image in sorted(governed.items()):
            try:
                ref = ImageRef.parse(image)
            except InvalidReference as exc:
                out.append(ContainerObservation(container, image, invalid=str(exc)))
                continue
            running[container] = str(ref)
            if ref.registry in look.throttled:
                error = registry_error(look.throttled[ref.registry])
                out.append(ContainerObservation(container, image, error=error))
                continue
            try:
                out.append(self._container(look, obj, state, container, ref, detail))
            except RegistryThrottled as exc:
                look.throttled[ref.registry] = exc  # the rest waits for its Retry-After
                out.append(ContainerObservation(container, image, error=registry_error(exc)))
            except RegistryError as exc:
                out.append(ContainerObservation(container, image, error=registry_error(exc)))
        return WorkloadObservation(str(ref_of(obj)), tuple(out), state, paused(obj))

    def _container(
        self,
        look: Look,
        obj: Mapping[str, Any],
        state: WorkloadState,
        container: str,
        running: ImageRef,
        detail: Mapping[str, Mapping[str, Any]],
    ) -> ContainerObservation:
        client = self.reads.registries.client_for(running.registry, look.policy.base)
        tag = running.tag or state.tags.get(container, "")
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
            key = str(ref_of(obj))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            pulled = ""
            if not recorded or self.pulls.changed(key, container, version):
                pulled = self._pulled(look, obj, container, running)
                self.pulls.read(key, container, version)
            digest = pulled or recorded or self.reads.tag_digest(look, client, running)
        app = self.reads.images.get(client, running.with_digest(digest))
        lineage = self.reads.trace(look, client, app)
        on_current, why, patched = on_base(look, lineage)
        if on_current and not patched:
            return ContainerObservation(
                container, str(running), digest, True, why, lineage.base_digest
            )
        # Not on the current base, or only patched in place: a rebuild may still qualify.
        search = self.search.search(look, client, running, tag, digest)
        look.searches[running.name, tag] = search
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
        look: Look,
        obj: Mapping[str, Any],
        record: RolloutRecord,
        started: datetime,
        governed: Mapping[str, str],
    ) -> Progress:
        """Where a followed rollout (or its rollback) stands: the workload's conditions and
        what the pods running its template's images did since ``started``
        (``core.podhealth``). The template holds what imagedrift wrote last: the candidate
        while it rolls out, the restored images while it rolls back."""
        rollout = look.policy.rollout
        kind = str(obj.get("kind"))
        targets = {c: governed[c] for c in record.target if c in governed}
        health = None
        if kind != "CronJob":
            try:
                pods = self._pods(look, obj)
            except KubeError as exc:
                # Not judged without its pods: read again at the next check (the verify
                # timeout still bounds how long that may go on).
                result = progress(kind, obj, started, look.now, rollout.verify_timeout)
                if result.phase is Phase.FAILED:
                    return result
                unread = f"its pods could not be read ({exc})"
                return Progress(Phase.PROGRESSING, f"{result.reason}; {unread}")
            if pods is not None:
                health = pod_health(pods, targets, started)
        return progress(
            kind, obj, started, look.now, rollout.verify_timeout, health, rollout.settle_time
        )

    def _proposed(self, look: Look, record: RolloutRecord) -> Progress:
        """A rollout proposed on a pull request, not applied yet: it waits for a human as
        long as the pull request is open (no timeout: a review takes what it takes), then
        for the GitOps controller; a pull request closed unmerged fails it (the candidate is
        not proposed again)."""
        git = record.git
        assert git is not None
        spec = look.policy.gitops.pull_request
        wait = Progress(Phase.PROGRESSING, f"pull request {git.pull_request} is open", 30.0)
        if self.proposals is None:
            return wait
        try:
            pr = self.proposals.find(git.url, spec, git.head, git.branch)
        except GitError as exc:
            return Progress(Phase.PROGRESSING, f"{wait.reason} (its state unread: {exc})", 30.0)
        if pr is None or pr.state == "open":
            return wait
        if pr.state == "merged":
            return Progress(
                Phase.PROGRESSING,
                f"pull request {git.pull_request} merged; waiting for {git.via} to apply it",
                10.0,
            )
        return Progress(Phase.FAILED, f"pull request {git.pull_request} was closed without merging")

    def _pulled(self, look: Look, obj: Mapping[str, Any], container: str, running: ImageRef) -> str:
        """The digest the workload's pods report for ``container`` (see ``core.running``);
        "" when pods cannot be read here or report none."""
        if not pod_count(obj):
            return ""  # no pods (scaled to zero, or not created yet): nothing to read
        try:
            pods = self._pods(look, obj)
        except KubeError as exc:
            log.info("%s: pods not read (%s); using the tag's digest", ref_of(obj), exc)
            return ""
        return pulled_digest(pods or (), container, running)

    def _pods(self, look: Look, obj: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The first page of the workload's pods, read at most once per check (each
        container, and the rollout's verification, asks the same); None when they cannot
        be read here (no selector imagedrift can express, or a port without pods).
        Raises KubeError."""
        selector = pod_selector(obj)
        if not selector or not isinstance(self.kube, PodReader):
            return None
        ref = ref_of(obj)
        if str(ref) not in look.pods:
            look.pods[str(ref)] = self.kube.list_pods(ref.namespace, selector)
        return look.pods[str(ref)]


def _not_applied(
    look: Look, record: RolloutRecord, started: datetime, waiting: tuple[str, ...]
) -> Progress:
    """A rollout (or rollback) by commit the GitOps controller has not applied yet: still
    going until the verify timeout, then failed (the rollout is then rolled back by a
    commit; a rollback is left to a human)."""
    git = record.git
    assert git is not None
    sha = (git.rollback_commit if rolling_back(record) else git.commit)[:7] or "the change"
    what = "rollback " if rolling_back(record) else ""
    elapsed = (look.now - started).total_seconds()
    timeout = look.policy.gitops.apply_timeout
    if elapsed > timeout:
        return Progress(
            Phase.FAILED,
            f"{git.via} did not apply {what}commit {sha} of {git.url} within {timeout:g}s "
            f"({', '.join(waiting)} unchanged)",
        )
    return Progress(
        Phase.PROGRESSING,
        f"{what}commit {sha} pushed to {git.url} ({git.branch or 'default branch'}); "
        f"waiting for {git.via} to apply it",
        again_in=min(10.0, max(1.0, timeout - elapsed)),
    )
