"""Keel's policies, from Keel's documentation (https://keel.sh/docs/#policies) and its own
table tests (keel-hq/keel ``internal/policy/semver_test.go``, ``force_test.go``):

- ``all``: any higher version, pre-release check skipped; ``major``: any higher version
  with the pre-release check; ``minor``: same major; ``patch``: same major and minor.
- ``matchPreRelease`` (default true) compares the whole pre-release string.
- A running ``latest`` may move to any version; another running non-version goes nowhere.
- ``force``: a higher version (never down between versions, keel-hq/keel#901); with
  ``matchTag`` only the running tag itself.
"""

from __future__ import annotations

import pytest

from imagedrift.core.keel import ForcePolicy, KeelPolicy, keel_version
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.errors import InvalidReference


def should_update(level: str, current: str, new: str, match_pre: bool = True) -> bool:
    """Keel's ShouldUpdate(current, new), as imagedrift's relative policy answers it."""
    policy = KeelPolicy(level, match_pre).relative_to(current)
    return new != current and new in policy.ordered([current, new])


@pytest.mark.parametrize(
    ("level", "current", "new", "match_pre", "expected"),
    [
        # semver_test.go "TestShouldUpdate"
        ("major", "1.4.5", "2.0.0", True, True),
        ("major", "1.4.5", "1.4.6", True, True),
        ("major", "1.4.5", "1.4.4", True, False),
        ("major", "1.4.5", "1.4.5", True, False),
        ("minor", "1.4.5", "1.4.6", True, True),  # "patch increase, policy minor"
        ("minor", "1.4.5", "1.5.5", True, True),
        ("minor", "1.4.5", "2.0.0", True, False),
        ("patch", "1.4.5", "1.4.6", True, True),
        ("patch", "1.4.5", "1.5.0", True, False),
        ("patch", "1.4.5", "2.4.6", True, False),
        ("all", "1.4.5", "2.0.0", True, True),
        # matchPreRelease (keel-hq/keel#494): the whole pre-release string must match
        ("major", "1.4.5-xx", "1.4.6-xx", True, True),
        ("major", "1.4.5-xx", "1.4.6-yy", True, False),
        ("major", "1.4.5", "1.4.6-xx", True, False),
        ("major", "1.4.5-xx", "1.4.6", True, False),
        ("major", "1.2.3-rc.1", "1.2.3-rc.2", True, False),  # not identifier-level (#317)
        ("major", "1.4.5", "1.4.6-xx", False, True),
        ("major", "1.4.5-xx", "1.4.6-yy", False, True),
        ("all", "1.4.5", "1.4.6-xx", True, True),  # all skips the pre-release check
        ("major", "v1.0.0-metadata", "v1.0.1-metadata", True, True),
        ("major", "1.0.0+build1", "1.0.1+build2", True, True),  # build metadata is no pre-release
        # versions as Keel parses them
        ("major", "1.4.5", "v1.4.6", True, True),
        ("major", "1.4", "1.5", True, True),
        ("major", "1.4.5", "3050", True, False),  # "number": one part is no version
        ("major", "latest", "1.0.0", True, True),  # a running latest moves to any version
        ("major", "main", "1.0.0", True, False),  # any other non-version moves nowhere
    ],
)
def test_levels(level: str, current: str, new: str, match_pre: bool, expected: bool) -> None:
    assert should_update(level, current, new, match_pre) is expected


def test_the_highest_allowed_version_comes_first_and_the_running_tag_stays() -> None:
    policy = KeelPolicy("minor").relative_to("1.4.5")
    tags = ["1.4.4", "1.4.5", "1.4.6", "1.9.0", "2.0.0", "1.10.0-rc.1", "latest"]
    assert policy.ordered(tags) == ["1.9.0", "1.4.6", "1.4.5"]
    assert policy.skip_reason("2.0.0") == "a major bump; level minor stays on 1.x"
    assert policy.skip_reason("1.4.4") == "not higher than the running 1.4.5"
    assert policy.skip_reason("latest") == "not a version (Keel needs two or three numbers)"
    assert "matchPreRelease" in (policy.skip_reason("1.10.0-rc.1") or "")


def test_a_running_non_version_is_kept_for_its_digest_only() -> None:
    policy = KeelPolicy("major").relative_to("main")
    assert policy.ordered(["main", "1.0.0", "2.0.0"]) == ["main"]
    assert "is not a version" in (policy.skip_reason("2.0.0") or "")


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("1.4.6", "1.4.5", False),
        ("1.4.4", "1.4.5", True),
        ("1.4.5", "1.4.5", False),
        ("1.0.0", "latest", False),
        ("1.0.0", "main", True),
        ("main", "1.0.0", True),
    ],
)
def test_keel_downgrades(candidate: str, current: str, expected: bool) -> None:
    assert KeelPolicy("major").is_downgrade(candidate, current) is expected


@pytest.mark.parametrize(
    ("current", "new", "match_tag", "expected"),
    [
        # force_test.go after keel-hq/keel#901
        ("8.1.0", "8.0.0", False, False),
        ("7.9.1", "7.9.2", False, True),
        ("7.9.1-1-ubi8", "7.9.1", False, True),
        ("1.2.3-3", "1.2.3-4", False, True),
        ("1.2.3", "2.0.0-rc.1", False, True),  # any level, any pre-release
        ("1.2.3", "1.2.4", True, False),  # "different higher semver tag is not an update"
        ("latest", "main", False, False),  # poll trigger: a non-version is followed by digest
    ],
)
def test_force(current: str, new: str, match_tag: bool, expected: bool) -> None:
    policy = ForcePolicy(match_tag).relative_to(current)
    assert (new in policy.ordered([current, new])) is expected
    assert current in policy.ordered([current, new]), "the running tag (a re-push) stays"


def test_force_orders_higher_versions_newest_first() -> None:
    policy = ForcePolicy().relative_to("1.0.0")
    assert policy.ordered(["0.9.0", "1.0.0", "3.0.0", "2.0.0", "edge"]) == [
        "3.0.0",
        "2.0.0",
        "1.0.0",
    ]
    assert ForcePolicy(True).is_downgrade("1.0.1", "1.0.0") is True


@pytest.mark.parametrize(
    ("tag", "parses"),
    [("1.2.3", True), ("v1.2", True), ("1", False), ("1.2.3.4", False), ("1.2.3-a.b.c", True)],
)
def test_keel_versions(tag: str, parses: bool) -> None:
    assert (keel_version(tag) is not None) is parses


def test_from_a_spec() -> None:
    assert policy_from_spec({"keel": {"level": "minor"}}).describe() == "keel minor"
    described = policy_from_spec({"keel": {"level": "major", "matchPreRelease": False}})
    assert described.describe() == "keel major any pre-release"
    assert policy_from_spec({"force": {"matchTag": True}}).describe() == "force matchTag"
    with pytest.raises(InvalidReference, match="keel level 'newest' is not one of"):
        policy_from_spec({"keel": {"level": "newest"}})
    with pytest.raises(InvalidReference, match=r"keel\.matchPreRelease must be true or false"):
        policy_from_spec({"keel": {"level": "all", "matchPreRelease": "yes"}})


def test_force_takes_a_one_number_version_and_never_invents_the_running_tag() -> None:
    policy = ForcePolicy().relative_to("2.0.0")
    assert policy.ordered(["3", "1"]) == ["3"]  # 2.0.0 itself is not listed
