"""How much a registry may make us read: bytes and seconds per body, entries per document.

A registry's answers are input like any other. A manifest can declare 4 KiB and send
4 GiB, send no length at all (chunked), arrive one byte a second, or list 100,000 children.
Every read the registry clients make is bounded by one ``ReadLimits`` and stops with a
reason naming the limit and its setting as soon as the limit is passed. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Final

MiB: Final = 1024 * 1024

# An error body only lends its words to the error message; past this it is dropped.
ERROR_BODY_BYTES: Final = 64 * 1024
# Blob stores sit one hop away; chains longer than this are not a registry's doing.
MAX_REDIRECTS: Final = 5

SETTINGS: Final = {
    "manifest_bytes": "IMAGEDRIFT_MAX_MANIFEST_BYTES",
    "config_bytes": "IMAGEDRIFT_MAX_CONFIG_BYTES",
    "blob_bytes": "IMAGEDRIFT_MAX_BLOB_BYTES",
    "document_bytes": "IMAGEDRIFT_MAX_DOCUMENT_BYTES",
    "body_seconds": "IMAGEDRIFT_MAX_BODY_SECONDS",
    "index_children": "IMAGEDRIFT_MAX_INDEX_CHILDREN",
    "referrers": "IMAGEDRIFT_MAX_REFERRERS",
}
"""The environment variable that sets each field of ``ReadLimits``."""


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one registry read may cost.

    - ``manifest_bytes``: a manifest or index (distribution itself refuses more than 4 MiB);
    - ``config_bytes``: an image config;
    - ``blob_bytes``: any other blob read whole (signature payloads, vulnerability reports);
    - ``document_bytes``: everything else (tag list pages, referrer lists, token answers);
    - ``body_seconds``: wall time to read one body, however it trickles in;
    - ``index_children``: entries of one manifest index;
    - ``referrers``: artifacts listed for one image.
    """

    manifest_bytes: int = 4 * MiB
    config_bytes: int = 16 * MiB
    blob_bytes: int = 32 * MiB
    document_bytes: int = 4 * MiB
    body_seconds: float = 30.0
    index_children: int = 1000
    referrers: int = 500

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError(f"{SETTINGS[item.name]} must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReadLimits:
        """The defaults, overridden by the ``SETTINGS`` variables set in ``environ``.

        Raises ValueError naming the variable when a value is not a positive number.
        """
        values: dict[str, int | float] = {}
        for item in fields(cls):
            raw = environ.get(SETTINGS[item.name], "").strip()
            if not raw:
                continue
            try:
                values[item.name] = float(raw) if item.name == "body_seconds" else int(raw)
            except ValueError:
                raise ValueError(f"{SETTINGS[item.name]}={raw!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]


DEFAULT_LIMITS: Final = ReadLimits()


class ReadRefused(ValueError):
    """A body broke a limit; the message says which. Adapters add host and request."""


def too_many_bytes(limit: int, setting: str = "") -> ReadRefused:
    named = f" ({setting})" if setting else ""
    return ReadRefused(f"body is more than the {limit} bytes allowed{named}")


def read_bounded(
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    seconds: float,
    clock: Callable[[], float],
    setting: str = "",
) -> bytes:
    """The concatenated ``chunks``, or ReadRefused as soon as they pass ``max_bytes`` or
    ``seconds`` have gone by since the first was asked for.

    The clock is read after each chunk, so a body that stalls inside one chunk is cut off
    by the transport's own read timeout first; the whole read then takes at most
    ``seconds`` plus one read timeout. ``setting`` names the byte limit in the reason.
    """
    started = clock()
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise too_many_bytes(max_bytes, setting)
        parts.append(chunk)
        if clock() - started > seconds:
            raise ReadRefused(
                f"body took more than the {seconds:g} s allowed "
                f"({size} bytes by then; {SETTINGS['body_seconds']})"
            )
    return b"".join(parts)


def read_body(
    chunks: Iterable[bytes],
    *,
    headers: Mapping[str, str],
    success: bool,
    cap: tuple[int, str],
    seconds: float,
    clock: Callable[[], float],
) -> bytes:
    """One response body, read within the limits. ``cap`` is (bytes, the setting naming them).

    For a success: ReadRefused when the body declares more than the cap (before a byte is
    read), sends more, takes longer than ``seconds``, or comes in a content coding other
    than identity (the only one asked for: other bytes would be counted wrongly). An
    error answer's body only lends its words to the error message, so past
    ERROR_BODY_BYTES, the deadline or in another coding it is dropped (``b""``) and the
    status speaks alone.
    """
    max_bytes, setting = cap if success else (ERROR_BODY_BYTES, "")
    coding = (headers.get("Content-Encoding") or "identity").strip().lower()
    declared = (headers.get("Content-Length") or "").strip()
    try:
        if coding != "identity":
            raise ReadRefused(f"answered Content-Encoding {coding!r}, not identity")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_many_bytes(max_bytes, setting)
        return read_bounded(
            chunks, max_bytes=max_bytes, seconds=seconds, clock=clock, setting=setting
        )
    except ReadRefused:
        if success:
            raise
        return b""


def check_count(count: int, limit: int, what: str, setting: str) -> None:
    """ReadRefused when a document lists more than ``limit`` entries: better no answer
    than one that quietly leaves out the entry that mattered."""
    if count > limit:
        raise ReadRefused(
            f"{what} lists {count} entries, more than the {limit} allowed ({setting})"
        )
