"""The JSON merge patch (RFC 7386) that turns one document into another.

Status is written as the difference from what was last written: unchanged keys are not
sent, removed keys are sent as null (at any depth), lists are replaced whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new`` ({} when they are equal)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = diff(before, value)
        else:
            patch[key] = value
    return patch


_MISSING = object()
