"""What one check's observation knows while it looks, and the lineage reads it shares.

A ``Look`` lives for one check: the policy, the current base, and what was read so far
(tag digests, pods, the registries that throttled, the searches). It is never output;
the facts observation returns are (``core.plan.WorkloadFacts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imagedrift.core.images import ResolvedImage
from imagedrift.core.lineage import BaseDigest, Lineage, built_on, remediated_in_place, trace
from imagedrift.core.records import SmokeRecord
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import PolicySpec
from imagedrift.engine.caches import ImageCache
from imagedrift.engine.ports import RegistryPort
from imagedrift.engine.shared_reads import SharedReads
from imagedrift.errors import NotFound, RegistryThrottled
from imagedrift.registry.base import RegistryClient

if TYPE_CHECKING:
    from imagedrift.engine.search import Search


@dataclass
class Look:
    policy: PolicySpec
    generation: str  # of the policy: searches are cached per generation
    now: datetime
    base: BaseDigest
    previous_bases: list[str]  # older base digests, newest first (to name an old base)
    base_changed_at: datetime | None  # the current base's creation (dates Copa patches)
    # Smoke-test records by candidate digest: the gates start Jobs and note them here.
    smoke_tests: dict[str, SmokeRecord] = field(default_factory=dict)
    tag_digests: dict[str, str] = field(default_factory=dict)
    throttled: dict[str, RegistryThrottled] = field(default_factory=dict)  # by registry host
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by workload key
    searches: dict[tuple[str, str], Search] = field(default_factory=dict)  # (repository, tag)


class LineageReads:
    """Tag digests and lineage traces, through the shared caches."""

    def __init__(self, registries: RegistryPort, images: ImageCache, shared: SharedReads) -> None:
        self.registries = registries
        self.images = images
        self.shared = shared

    def tag_digest(self, look: Look, client: RegistryClient, ref: ImageRef) -> str:
        key = f"{ref.name}:{ref.tag or 'latest'}"
        if key not in look.tag_digests:
            look.tag_digests[key] = self.shared.tag_digest(client, ref, look.policy.base.interval)
        return look.tag_digests[key]

    def trace(self, look: Look, client: RegistryClient, app: ResolvedImage) -> Lineage:
        lineage = trace(app, [look.base])
        if lineage.known or not look.previous_bases:
            return lineage
        # Only an image not on the current base needs the older bases (for the record).
        known = [look.base]
        base = look.policy.base
        base_client = self.registries.client_for(base.image.registry, base)
        for digest in look.previous_bases:
            try:
                known.append(
                    BaseDigest.of(self.images.get(base_client, base.image.with_digest(digest)))
                )
            except NotFound:
                continue
        return trace(app, known)


def on_base(look: Look, lineage: Lineage) -> tuple[bool, str, bool]:
    """(counts as on the current base, why, only because it was patched in place)."""
    on_current, why = built_on(lineage, look.base, look.policy.base.image.repository)
    if on_current or not lineage.patched_at:
        return on_current, why, False
    accepted, why = remediated_in_place(lineage, look.base_changed_at, look.policy.accept_patched)
    return accepted, why, accepted
