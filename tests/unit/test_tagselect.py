"""Which listed tags become candidates, and the note every other tag gets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from imagedrift.core import tagselect
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.tagselect import TagNote, select


def spec(tags: dict[str, Any], **app: Any) -> PolicySpec:
    return parse_policy(
        "p", {"base": {"image": "r.example/base", "tag": "1"}, "app": {"tags": tags, **app}}
    )


def test_every_listed_tag_gets_a_fate() -> None:
    s = spec({"semver": {"range": ">=1.0.0"}}, ignoreTags=["*-debug"], maxCandidates=2)
    listed = ["0.9.0", "1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.3.0-debug", "latest", "x.sig"]
    selection = select(listed, "1.0.0", policy_from_spec(dict(s.tags)), s)
    assert selection.candidates == ("1.3.0", "1.2.0")
    fates = {n.tag: n.fate for n in selection.notes}
    assert fates == {
        "x.sig": tagselect.EXCLUDED,
        "1.3.0-debug": tagselect.IGNORED,
        "0.9.0": tagselect.INELIGIBLE,  # outside the range
        "latest": tagselect.INELIGIBLE,  # not a version
        "1.1.0": tagselect.BEYOND,
        "1.0.0": tagselect.BEYOND,
    }
    assert TagNote("latest", tagselect.INELIGIBLE, "not a version") in selection.notes
    assert set(fates) | set(selection.candidates) == set(listed)


def test_lower_tags_end_the_candidates() -> None:
    s = spec({"semver": {"range": "*"}})
    selection = select(["1.0.0", "2.0.0", "3.0.0"], "2.0.0", policy_from_spec(dict(s.tags)), s)
    assert selection.candidates == ("3.0.0", "2.0.0")
    assert selection.of(tagselect.LOWER) == ["1.0.0"]


def test_a_numerical_policy_over_a_number_less_tag_fails_closed() -> None:
    s = spec({"regex": {"pattern": "^build-(?P<n>.*)$", "extract": "$n", "order": "numerical"}})
    selection = select(
        ["build-1", "build-x", "other"], "build-1", policy_from_spec(dict(s.tags)), s
    )
    assert selection.candidates == ()
    assert "'build-x' extracts 'x', which is not a number" in selection.refused


def test_keel_levels_are_judged_from_the_running_tag() -> None:
    s = spec({"keel": {"level": "patch"}})
    listed = ["1.4.5", "1.4.6", "1.5.0", "2.0.0"]
    selection = select(listed, "1.4.5", policy_from_spec(dict(s.tags)), s)
    assert selection.candidates == ("1.4.6", "1.4.5")
    assert "beyond a patch bump" in next(n.reason for n in selection.notes if n.tag == "1.5.0")


def test_keel_with_patch_tags_judges_between_originals() -> None:
    s = spec({"keel": {"level": "patch"}}, patches="incremental")
    listed = ["1.4.5", "1.4.5-1", "1.4.5-2", "1.4.6", "1.5.0"]
    selection = select(listed, "1.4.5-1", policy_from_spec(dict(s.tags)), s)
    assert selection.candidates == ("1.4.6", "1.4.5-2", "1.4.5-1")
    assert selection.of(tagselect.LOWER) == ["1.4.5"]


def test_calver_and_allow_tags_together() -> None:
    s = spec({"calver": {}}, allowTags="regexp:^2024\\.")
    listed = ["2023.12.31", "2024.01.15", "2024.02.01", "latest"]
    selection = select(listed, "2024.01.15", policy_from_spec(dict(s.tags)), s)
    assert selection.candidates == ("2024.02.01", "2024.01.15")
    assert dict((n.tag, n.fate) for n in selection.notes) == {
        "2023.12.31": tagselect.NOT_ALLOWED,
        "latest": tagselect.NOT_ALLOWED,
    }


@pytest.mark.parametrize("mode", ["incremental", "floating"])
def test_patch_tags_of_the_other_mode_are_named_as_such(mode: str) -> None:
    s = dataclasses.replace(spec({"semver": {"range": "*"}}), app_patches=mode)
    selection = select(
        ["1.0.0", "1.0.0-1", "1.0.0-patched"], "1.0.0", policy_from_spec(dict(s.tags)), s
    )
    other = "1.0.0-patched" if mode == "incremental" else "1.0.0-1"
    note = next(n for n in selection.notes if n.tag == other)
    assert (note.fate, f"patches: {mode} follows the other kind" in note.reason) == (
        tagselect.INELIGIBLE,
        True,
    )
