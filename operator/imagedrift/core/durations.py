"""Durations as a spec writes them: Go-style h/m/s/ms parts (``90s``, ``1m30s``, ``2h``)."""

from __future__ import annotations

import re

from imagedrift.errors import InvalidSpec

_DURATION_RE = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+)s)?(?:([0-9]+)ms)?")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration made of h/m/s/ms parts (``90s``, ``1m30s``, ``2h``)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise InvalidSpec(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    h, m, s, ms = (int(g) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000
