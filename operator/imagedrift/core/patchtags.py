"""ACR continuous patching's tags: which of ``T``, ``T-1`` … ``T-999``, ``T-patched`` is newest.

ACR continuous patching (``az acr supply-chain workflow``, Copacetic underneath) patches the
OS packages of an image in place and pushes the result under a new tag, each time made
from the original tag ``T``:

- ``incremental``: ``T-1``, ``T-2``, … ``T-999``; the newest patch is the highest suffix.
  A suffix above 999 is not a patch: ACR treats date-like tags (``jammy-20240530``) as
  original tags, and so does imagedrift.
- ``floating``: one tag ``T-patched``, moved to each new patch.

Pure: tag names in, the tag to follow out. The base lookup (``engine.check``) lists the
repository's tags for ``incremental`` (one request more than a plain tag) and tries
``T-patched`` before ``T`` for ``floating``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

INCREMENTAL, FLOATING = "incremental", "floating"
MODES = (INCREMENTAL, FLOATING)
MAX_PATCH = 999
FLOATING_SUFFIX = "-patched"
_SUFFIX = re.compile(r"-([1-9][0-9]{0,2})")


def patch_number(tag: str, original: str) -> int | None:
    """0 for ``original`` itself, N for ``original-N`` (1..999), None for any other tag."""
    if tag == original:
        return 0
    if not tag.startswith(original):
        return None
    match = _SUFFIX.fullmatch(tag[len(original) :])
    return int(match.group(1)) if match else None


def newest_incremental(tags: Iterable[str], original: str) -> str | None:
    """The tag with the highest patch number among ``original`` and its patch tags; None
    when neither the original nor any patch of it exists."""
    best: tuple[int, str] | None = None
    for tag in tags:
        number = patch_number(tag, original)
        if number is not None and (best is None or number > best[0]):
            best = (number, tag)
    return best[1] if best else None


def floating(original: str) -> str:
    return original + FLOATING_SUFFIX


def split(tag: str) -> tuple[str, int]:
    """(original, patch number) of a tag in a repository that uses patch tags: ``T-N``
    (1..999) is patch N of ``T``, ``T-patched`` the floating patch (a number above any),
    any other tag its own original (0)."""
    if tag.endswith(FLOATING_SUFFIX) and len(tag) > len(FLOATING_SUFFIX):
        return tag[: -len(FLOATING_SUFFIX)], MAX_PATCH + 1
    head, sep, tail = tag.rpartition("-")
    if sep and head and _SUFFIX.fullmatch(f"-{tail}"):
        return head, int(tail)
    return tag, 0


def originals(tags: Iterable[str]) -> list[str]:
    """The original of every tag (what a tag policy orders), once each, in first-seen order.
    An original that was deleted while its patches remain is still named here."""
    return list(dict.fromkeys(split(t)[0] for t in tags))


def with_patches(ordered: Iterable[str], tags: Iterable[str], mode: str) -> list[str]:
    """``ordered`` (original tags, newest first) with each one's patch tags in front of it,
    newest patch first: a patch of ``T`` is newer than ``T`` and older than the next
    original. ``mode`` picks which patch tags count (incremental or floating); ``ordered``
    may name originals that no longer exist (their patches still count)."""
    tags = list(tags)
    patches: dict[str, list[tuple[int, str]]] = {}
    for tag in tags:
        original, number = split(tag)
        floating_tag = number == MAX_PATCH + 1
        if number and floating_tag == (mode == FLOATING):
            patches.setdefault(original, []).append((number, tag))
    present = set(tags)  # an original deleted since its patches were made is no candidate
    out: list[str] = []
    for original in ordered:
        out.extend(tag for _, tag in sorted(patches.get(original, ()), reverse=True))
        if original in present:
            out.append(original)
    return out


def is_downgrade(
    candidate: str, running: str, policy_downgrade: Callable[[str, str], bool]
) -> bool:
    """A patch tag is never a downgrade of its own original or of an older patch of it, and
    the running tag is none of itself (re-pushed, it may be a rebuild); across originals the
    tag policy decides (``policy_downgrade(original, original)``)."""
    (c_original, c_number), (r_original, r_number) = split(candidate), split(running)
    if c_original == r_original:
        return c_number < r_number
    return policy_downgrade(c_original, r_original)
