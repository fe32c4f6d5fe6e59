"""Which of a repository's tags are inspected as candidates, in what order, and why each
other tag is not: the tag policy, the filters users bring from Flux and Argo CD, ACR patch
tags and the downgrade rule, applied in that order to the tags the registry lists.

1. Flux's ``exclusionList`` (``spec.app.exclusionList``): never candidates.
2. Argo CD Image Updater's ``ignoreTags`` then ``allowTags`` (``spec.app``).
3. The tag policy orders what is left, newest first (with ``patches``, it orders the
   original tags and each one's patch tags go just before it). A policy that cannot order
   the tags (Flux's numerical policy over a value that is not a number) fails closed: no
   candidate at all, with its reason.
4. From the newest down, tags are candidates until the first one lower than the running tag
   (everything after it is lower too), at most ``maxCandidates`` of them.

Every listed tag that is not a candidate gets a ``TagNote`` saying why, which is what
``imagedrift plan`` prints. Pure: tags in, a ``Selection`` out; the engine then inspects
the candidates in order (digest, lineage, gates) and notes what it found for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from imagedrift.core import exclusions, patchtags, tagmatch
from imagedrift.core.spec import PolicySpec
from imagedrift.core.tagpolicy import TagPolicy
from imagedrift.errors import TagPolicyFailed

__all__ = [
    "RelativePolicy",
    "Selection",
    "TagNote",
    "is_downgrade",
    "prefilter",
    "select",
]

# The fates a tag can meet; ``imagedrift plan`` groups by them.
EXCLUDED: Final = "excluded"  # exclusionList
IGNORED: Final = "ignored"  # ignoreTags
NOT_ALLOWED: Final = "not allowed"  # allowTags
INELIGIBLE: Final = "ineligible"  # the tag policy does not take it
LOWER: Final = "lower"  # lower than the running tag
BEYOND: Final = "beyond maxCandidates"


@runtime_checkable
class RelativePolicy(Protocol):
    """A policy whose eligible tags depend on what runs (Keel's update levels)."""

    def relative_to(self, current: str) -> TagPolicy:
        """The policy as it applies to a workload running ``current``."""
        ...


@dataclass(frozen=True)
class TagNote:
    """What became of one tag, and why."""

    tag: str
    fate: str
    reason: str = ""


@dataclass(frozen=True)
class Selection:
    """``candidates`` newest first; ``notes`` for every other listed tag; ``refused`` says
    why the policy fails closed (then there are no candidates)."""

    candidates: tuple[str, ...]
    notes: tuple[TagNote, ...] = ()
    refused: str = ""

    def of(self, fate: str) -> list[str]:
        return [n.tag for n in self.notes if n.fate == fate]


def is_downgrade(spec: PolicySpec, policy: TagPolicy, candidate: str, running: str) -> bool:
    """Would rolling ``running`` to ``candidate`` go backwards? Patch tags of the running
    tag never do (see ``patchtags.is_downgrade``); otherwise the tag policy decides."""
    if not spec.app_patches:
        return policy.is_downgrade(candidate, running)
    return patchtags.is_downgrade(candidate, running, policy.is_downgrade)


def prefilter(listed: Sequence[str], spec: PolicySpec) -> tuple[list[str], list[TagNote]]:
    """Steps 1 and 2: (the tags the policy will see, notes for the tags dropped)."""
    kept, excluded = exclusions.split(listed, spec.exclusions)
    notes = [TagNote(t, EXCLUDED, "matches exclusionList") for t in excluded]
    kept, filtered = tagmatch.split(kept, spec.allow_tags, spec.ignore_tags)
    notes += [TagNote(t, IGNORED if ignored else NOT_ALLOWED, why) for t, ignored, why in filtered]
    return kept, notes


def select(listed: Sequence[str], running: str, policy: TagPolicy, spec: PolicySpec) -> Selection:
    """The candidates among ``listed`` for a workload running tag ``running``."""
    if isinstance(policy, RelativePolicy):
        # With patch tags the levels are judged between originals (1.4.0-2 runs 1.4.0).
        policy = policy.relative_to(patchtags.split(running)[0] if spec.app_patches else running)
    kept, notes = prefilter(listed, spec)
    try:
        if spec.app_patches:
            ordered = patchtags.with_patches(
                policy.ordered(patchtags.originals(kept)), kept, spec.app_patches
            )
        else:
            ordered = policy.ordered(kept)
    except TagPolicyFailed as exc:
        return Selection((), tuple(notes), str(exc))
    taken = set(ordered)
    for tag in kept:
        if tag not in taken:
            notes.append(TagNote(tag, INELIGIBLE, _ineligible(policy, spec, tag)))
    candidates: list[str] = []
    for i, tag in enumerate(ordered):
        if is_downgrade(spec, policy, tag, running):
            notes += [TagNote(t, LOWER, f"lower than the running {running}") for t in ordered[i:]]
            break
        if len(candidates) >= spec.max_candidates:
            notes.append(TagNote(tag, BEYOND, f"beyond maxCandidates ({spec.max_candidates})"))
            continue
        candidates.append(tag)
    return Selection(tuple(candidates), tuple(notes))


def _ineligible(policy: TagPolicy, spec: PolicySpec, tag: str) -> str:
    if spec.app_patches:
        original, number = patchtags.split(tag)
        why = policy.skip_reason(original)
        if number and not why:
            kind = "floating" if number > patchtags.MAX_PATCH else "numbered"
            return f"a {kind} patch tag; patches: {spec.app_patches} follows the other kind"
        return why or f"{policy.describe()} does not take it"
    return policy.skip_reason(tag) or f"{policy.describe()} does not take it"
