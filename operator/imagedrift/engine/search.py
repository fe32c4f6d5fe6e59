"""The candidate search: the newest rebuilt image of a running tag proven on the current base.

Per (repository, running tag, running digest), the tag policy orders the repository's
tags, and each is looked at newest first until one is on the current base, not refused
by the registry, and judged by the gates. Every tag's fate is noted (``imagedrift plan``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from imagedrift.core import newestbuild, patchtags, tagselect
from imagedrift.core.history import verdict_word
from imagedrift.core.lineage import Lineage
from imagedrift.core.newestbuild import NewestBuildPolicy, build_time
from imagedrift.core.refs import ImageRef, short_digest
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.engine.caches import TtlCache
from imagedrift.engine.gates import GateIO, Verdict, validate
from imagedrift.engine.look import LineageReads, Look, on_base
from imagedrift.engine.ports import KubePort
from imagedrift.errors import RegistryAuthError
from imagedrift.registry.base import RegistryClient, TagFacts

# What the engine found for a tag the selection made a candidate (``imagedrift plan``).
RUNNING, NOT_ON_BASE, REGISTRY_REFUSES, TAKEN = "running", "not on base", "refused", "taken"
NOT_INSPECTED = "not inspected"


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


class CandidateSearch:
    def __init__(self, reads: LineageReads, kube: KubePort, cache: TtlCache) -> None:
        self.reads = reads
        self.kube = kube
        self.cache = cache

    def search(
        self, look: Look, client: RegistryClient, running: ImageRef, tag: str, digest: str
    ) -> Search:
        """The candidate for (repository, running tag) on the current base.

        Cached per policy generation and base digest until the policy's interval passes
        or a push event for the repository drops it; a verdict still pending (a smoke test
        running) is never cached.
        """
        policy = look.policy
        key = (running.name, policy.name, look.generation, tag, digest, look.base.digest)
        cached = self.cache.get(key)
        if isinstance(cached, Search):
            return cached
        search = self._find(look, client, running, tag, digest)
        pending = search.candidate is not None and search.candidate.verdict.pending
        self.cache.put(key, search, 0.0 if pending else policy.base.interval)
        return search

    def _find(
        self, look: Look, client: RegistryClient, running: ImageRef, tag: str, digest: str
    ) -> Search:
        search = Search()
        spec = look.policy
        interval = spec.base.interval
        tags_spec = dict(spec.tags)
        same_tag = "sameTag" in tags_spec
        lower: list[str] = []  # tags the selection found lower than the running one
        if same_tag:
            if not tag:
                return search.fail("running image is pinned by digest with no known tag to follow")
            ordered = [tag]
            policy = policy_from_spec({"sameTag": {"tag": tag}})
            search.policy = policy.describe()
            if spec.app_patches:
                original = patchtags.split(tag)[0]
                listed_tags = self.reads.shared.tags(client, running, interval)
                ordered = patchtags.with_patches(
                    [original], tagselect.well_formed(listed_tags)[0], spec.app_patches
                )
        else:
            policy = policy_from_spec(tags_spec)
            search.policy = policy.describe()
            if not tag:
                return search.fail(
                    "running image has no tag: cannot prove a candidate is not a downgrade"
                )
            listed = self.reads.shared.tags(client, running, interval)
            if isinstance(policy, NewestBuildPolicy):
                kept, _ = tagselect.prefilter(listed, spec)
                if len(kept) > newestbuild.MAX_TAGS:
                    return search.fail(NewestBuildPolicy.too_many(len(kept)))
                # The running tag's time too, when it is listed: it bounds the downgrades.
                names = [*kept, *([tag] if tag in listed and tag not in kept else [])]
                policy = policy.with_times(self._build_times(look, client, running, names))
            selection = tagselect.select(listed, tag, policy, spec)
            search.notes = list(selection.notes)
            if selection.refused:
                return search.fail(selection.refused)
            ordered = list(selection.candidates)  # none lower than the running tag
            lower = selection.of(tagselect.LOWER)
        for candidate_tag in ordered[: spec.max_candidates]:
            if same_tag and tagselect.is_downgrade(spec, policy, candidate_tag, tag):
                search.refuse(candidate_tag, tagselect.LOWER, f"lower than the running {tag}")
                break  # ordered newest first: everything after is lower too
            candidate_ref = running.with_tag(candidate_tag)
            candidate_digest = self.reads.tag_digest(look, client, candidate_ref)
            if candidate_digest == digest:
                # Not rebuilt yet; older tags may be, and are refused below as downgrades.
                search.refuse(
                    candidate_tag, RUNNING, f"is the running image ({short_digest(digest)})"
                )
                continue
            image = self.reads.images.get(client, running.with_digest(candidate_digest))
            lineage = self.reads.trace(look, client, image)
            on_current, why, _ = on_base(look, lineage)
            if not on_current:
                search.refuse(candidate_tag, NOT_ON_BASE, why)
                continue
            refused = registry_refuses(client, candidate_ref, candidate_digest)
            if refused:
                search.refuse(candidate_tag, REGISTRY_REFUSES, refused)
                continue
            pinned = running.with_digest(candidate_digest)
            io = GateIO(client, self.kube, look.now, look.smoke_tests)
            verdict = validate(spec, pinned, lineage, why, io)
            search.candidate = Candidate(pinned, candidate_tag, lineage, verdict)
            word = verdict_word(verdict.passed, verdict.pending)
            search.notes.append(tagselect.TagNote(candidate_tag, TAKEN, word))
            search.notes += [
                tagselect.TagNote(t, NOT_INSPECTED, f"{candidate_tag} is newer and was taken")
                for t in ordered[ordered.index(candidate_tag) + 1 :]
            ]
            return search
        if lower and len(ordered) < spec.max_candidates:
            # The search reached the running tag's level and went no lower: say where.
            search.rejected.append(f"{lower[0]}: lower than the running {tag}")
        return search

    def _build_times(
        self, look: Look, client: RegistryClient, running: ImageRef, names: list[str]
    ) -> dict[str, datetime | None]:
        """Build time (config ``created``) of each tag in ``names``."""
        times: dict[str, datetime | None] = {}
        for name in names:
            digest = self.reads.tag_digest(look, client, running.with_tag(name))
            times[name] = build_time(self.reads.images.get(client, running.with_digest(digest)))
        return times


def registry_refuses(client: RegistryClient, tagged: ImageRef, digest: str) -> str:
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
