"""Which of a repository's tags are inspected as candidates, in what order, and why each
other tag is not: the tag policy, the filters users bring from Flux and Argo CD, ACR patch
tags and the downgrade rule, applied in that order to the tags the registry lists.

0. A listed name that the OCI distribution grammar does not allow as a tag (overlong,
   non-ASCII, control characters: what a broken or hostile registry may send) is dropped
   here, before any filter or policy parser sees it.
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

from imagedrift.core import exclusions, patchtags, refs, tagmatch
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
    "well_formed",
]

# The fates a tag can meet; ``imagedrift plan`` groups by them.
NOT_A_TAG: Final = "not a tag"  # outside the OCI tag grammar
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


# Malformed names are noted one by one up to this many, then counted in one note: a
# registry that lists 10^5 of them must not make the plan (or the memory) 10^5 lines long.
MAX_NOT_A_TAG_NOTES: Final = 20
_SHOWN_CHARS: Final = 40


def _shown(name: object) -> str:
    """A malformed name as a human may see it: escaped (no control character reaches a
    terminal or a log) and cut short."""
    text = name if isinstance(name, str) else f"<{type(name).__name__}>"
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) <= _SHOWN_CHARS:
        return escaped
    return f"{escaped[:_SHOWN_CHARS]}... ({len(text)} chars)"


def well_formed(listed: Sequence[object]) -> tuple[list[str], list[TagNote]]:
    """Step 0: (the names that are tags, notes for the rest). A tag is what the
    distribution grammar allows: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    kept: list[str] = []
    dropped: list[object] = []
    for name in listed:
        if isinstance(name, str) and refs.is_tag(name):
            kept.append(name)
        else:
            dropped.append(name)
    why = "not a tag the OCI distribution grammar allows"
    notes = [TagNote(_shown(n), NOT_A_TAG, why) for n in dropped[:MAX_NOT_A_TAG_NOTES]]
    if len(dropped) > MAX_NOT_A_TAG_NOTES:
        more = len(dropped) - MAX_NOT_A_TAG_NOTES
        notes.append(TagNote(f"({more} more)", NOT_A_TAG, why))
    return kept, notes


def prefilter(listed: Sequence[str], spec: PolicySpec) -> tuple[list[str], list[TagNote]]:
    """Steps 0 to 2: (the tags the policy will see, notes for the tags dropped)."""
    listed, malformed = well_formed(listed)
    kept, excluded = exclusions.split(listed, spec.exclusions)
    notes = [*malformed, *(TagNote(t, EXCLUDED, "matches exclusionList") for t in excluded)]
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
