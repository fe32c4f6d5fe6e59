"""ACR continuous patching's tag conventions, from Microsoft's article "Continuous Patching
in Azure Container Registry" (Azure Container Registry documentation, key concepts):
incremental patches are pushed as ``<tag>-1`` …
``<tag>-999``, each made from the original tag; floating as ``<tag>-patched``. A suffix
above 999 is an original tag (ACR treats ``jammy-20240530`` as such), not a patch.
"""

from __future__ import annotations

import pytest

from imagedrift.core import patchtags
from imagedrift.core.spec import parse_policy
from imagedrift.errors import InvalidSpec


@pytest.mark.parametrize(
    ("tag", "number"),
    [
        ("3.12", 0),
        ("3.12-1", 1),
        ("3.12-999", 999),
        ("3.12-1000", None),  # above 999: an original tag of its own
        ("3.12-0", None),
        ("3.12-01", None),  # ACR counts 1, 2, …: a leading zero is not its suffix
        ("3.12-patched", None),  # the floating tag is not an incremental patch
        ("3.12-1-1", None),  # patches are made from the original, never of a patch
        ("3.12-slim", None),
        ("3.13-1", None),
        ("3.1-2", None),  # a different original that shares a prefix
    ],
)
def test_patch_number(tag: str, number: int | None) -> None:
    assert patchtags.patch_number(tag, "3.12") == number


@pytest.mark.parametrize(
    ("tags", "newest"),
    [
        (["3.12"], "3.12"),
        (["3.12", "3.12-1", "3.12-2"], "3.12-2"),
        (["3.12-2", "3.12", "3.12-10", "3.12-9"], "3.12-10"),  # numeric, not alphabetical
        (["3.12", "3.12-1", "3.12-1000"], "3.12-1"),  # 1000 is no patch of 3.12
        (["jammy", "jammy-20240530"], "jammy"),  # date-like suffix: not a patch
        (["3.12-3"], "3.12-3"),  # the original may have been deleted
        (["3.13", "latest"], None),
        ([], None),
    ],
)
def test_newest_incremental(tags: list[str], newest: str | None) -> None:
    original = "jammy" if "jammy" in tags else "3.12"
    assert patchtags.newest_incremental(tags, original) == newest


def test_floating() -> None:
    assert patchtags.floating("3.12-slim") == "3.12-slim-patched"


def spec(**base: object) -> dict[str, object]:
    return {"base": {"image": "r.io/base", **base}}


def test_the_policy_reads_patches_and_keys_the_lookup_by_it() -> None:
    plain = parse_policy("p", spec(tag="1")).base
    incremental = parse_policy("p", spec(tag="1", patches="incremental")).base
    assert incremental.patches == "incremental" and plain.patches == ""
    assert incremental.key != plain.key, "two ways of following one tag are two lookups"


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ({"tag": "1", "patches": "weekly"}, "'weekly' is not one of incremental, floating"),
        ({"semverRange": ">=1", "patches": "incremental"}, "set tag"),
    ],
)
def test_bad_patches_are_refused_naming_the_field(base: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidSpec, match=rf"spec\.base\.patches: .*{message}"):
        parse_policy("p", spec(**base))


# -- app candidates: a patch tag of the running tag is newer than its original -------------


@pytest.mark.parametrize(
    ("tag", "split"),
    [
        ("1.4.0", ("1.4.0", 0)),
        ("1.4.0-1", ("1.4.0", 1)),
        ("1.4.0-999", ("1.4.0", 999)),
        ("1.4.0-1000", ("1.4.0-1000", 0)),
        ("1.4.0-patched", ("1.4.0", 1000)),
        ("jammy-20240530", ("jammy-20240530", 0)),
        ("-patched", ("-patched", 0)),
    ],
)
def test_split(tag: str, split: tuple[str, int]) -> None:
    assert patchtags.split(tag) == split


def test_patches_sit_between_their_original_and_the_next_newer_original() -> None:
    tags = ["1.4.0", "1.4.0-1", "1.4.0-2", "1.5.0", "1.4.0-patched", "1.3.0-7", "1.4.0-1000"]
    originals = patchtags.originals(tags)
    assert originals == ["1.4.0", "1.5.0", "1.3.0", "1.4.0-1000"]  # 1.3.0: only its patch is left
    newest_first = ["1.5.0", "1.4.0", "1.3.0"]
    assert patchtags.with_patches(newest_first, tags, "incremental") == [
        "1.5.0",
        "1.4.0-2",
        "1.4.0-1",
        "1.4.0",
        "1.3.0-7",  # its original is gone: the patch still counts, the original does not
    ]
    assert patchtags.with_patches(newest_first, tags, "floating") == [
        "1.5.0",
        "1.4.0-patched",
        "1.4.0",
    ]


@pytest.mark.parametrize(
    ("candidate", "running", "across", "downgrade"),
    [
        ("1.4.0-1", "1.4.0", False, False),  # a patch of the running tag: newer
        ("1.4.0-2", "1.4.0-1", False, False),
        ("1.4.0-1", "1.4.0-2", False, True),  # an older patch
        ("1.4.0", "1.4.0-1", False, True),  # back to the unpatched original
        ("1.4.0-1", "1.4.0-1", False, False),  # the same tag: re-pushed, it may be a rebuild
        ("1.5.0", "1.4.0-3", False, False),  # across originals the tag policy decides
        ("1.3.0-9", "1.4.0", True, True),
    ],
)
def test_is_downgrade(candidate: str, running: str, across: bool, downgrade: bool) -> None:
    assert patchtags.is_downgrade(candidate, running, lambda _c, _r: across) is downgrade
