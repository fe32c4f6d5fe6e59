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
from collections.abc import Iterable

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
