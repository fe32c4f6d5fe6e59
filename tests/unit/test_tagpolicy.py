"""Tag policies mean what they mean in Flux and Argo CD Image Updater (Masterminds semver v3).

Most rows come from Masterminds semver's constraints_test.go and Flux's
internal/policy/*_test.go; the rest pin down the choices documented in the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from imagedrift.core.goregex import compile_go
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.tagpolicy import (
    RegexPolicy,
    SameTagPolicy,
    SemverPolicy,
    TagPolicy,
    VersionRange,
    expand_template,
    parse_version,
)
from imagedrift.errors import InvalidReference, TagPolicyFailed

# --- versions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("1.2.3", (1, 2, 3, None, None)),
        ("v1.2.3", (1, 2, 3, None, None)),
        ("1.2", (1, 2, 0, None, None)),
        ("1", (1, 0, 0, None, None)),
        ("v2", (2, 0, 0, None, None)),
        ("1.2.3-beta.1+build345", (1, 2, 3, "beta.1", "build345")),
        ("1.2-rc1", (1, 2, 0, "rc1", None)),
        ("01.2.3", (1, 2, 3, None, None)),  # NewVersion accepts leading zeros in numbers
        ("1.2.3-0a", (1, 2, 3, "0a", None)),
        ("1.2.3+001", (1, 2, 3, None, "001")),  # build metadata may have leading zeros
        ("18446744073709551615", (2**64 - 1, 0, 0, None, None)),
        ("latest", None),
        ("1.2.3.4", None),
        ("1.0.0p", None),
        ("b1.2.3", None),
        ("V1.2.3", None),  # only a lowercase v
        ("1.2.3-01", None),  # numeric pre-release identifiers have no leading zeros
        ("1.2.3-", None),
        ("1.2.3-a..b", None),
        ("18446744073709551616", None),  # beyond uint64
        ("", None),
        ("1.2.3\n", None),
        (" 1.2.3", None),
    ],
)
def test_parse_version(tag: str, expected: tuple[Any, ...] | None) -> None:
    version = parse_version(tag)
    assert (version.to_tuple() if version is not None else None) == expected


# --- version ranges: Masterminds constraints_test.go (TestConstraintCheck, TestConstraintsCheck)

MASTERMINDS_CHECKS = [
    ("=2.0.0", "1.2.3", False),
    ("=2.0.0", "2.0.0", True),
    ("=2.0", "1.2.3", False),
    ("=2.0", "2.0.0", True),
    ("=2.0", "2.0.1", True),
    ("4.1", "4.1.0", True),
    ("!=4.1.0", "4.1.0", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "4.1.1", False),
    ("!=4.1", "5.1.0-alpha.1", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1", "5.1.0", True),
    ("<11", "0.1.0", True),
    ("<11", "11.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<=11", "1.2.3", True),
    ("<=11", "12.2.3", False),
    ("<=11", "11.2.3", True),
    ("<=1.1", "1.2.3", False),
    ("<=1.1", "0.1.0", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.1", "1.1.1", True),
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">0", "0", False),
    (">0", "1", True),
    (">0", "0.0.1-alpha", False),
    (">0.0", "0.0.1-alpha", False),
    (">0-0", "0.0.1-alpha", False),
    (">0.0-0", "0.0.1-alpha", False),
    (">0", "0.0.0-alpha", False),
    (">0-0", "0.0.0-alpha", False),
    (">0.0.0-0", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">11", "11.1.0", False),
    (">11.1", "11.1.0", False),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    (">=11", "11.1.2", True),
    (">=11.1", "11.1.2", True),
    (">=11.1", "11.0.2", False),
    (">=1.1", "4.1.0", True),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    (">=0", "0.0.1-alpha", False),
    (">=0.0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">=0.0-0", "0.0.1-alpha", True),
    (">=0", "0.0.0-alpha", False),
    (">=0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "1.2.3", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    ("<0", "0.0.0-alpha", False),
    ("<0-z", "0.0.0-alpha", True),
    (">=0", "0", True),
    ("=0", "1", False),
    ("*", "1", True),
    ("*", "4.5.6", True),
    ("*", "1.2.3-alpha.1", False),
    ("*-0", "1.2.3-alpha.1", True),
    ("2.*", "1", False),
    ("2.*", "3.4.5", False),
    ("2.*", "2.1.1", True),
    ("2.1.*", "2.1.1", True),
    ("2.1.*", "2.2.1", False),
    ("2", "1", False),
    ("2", "3.4.5", False),
    ("2", "2.1.1", True),
    ("2.1", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("~1.2.3", "1.2.4", True),
    ("~1.2.3", "1.3.4", False),
    ("~1.2", "1.2.4", True),
    ("~1.2", "1.3.4", False),
    ("~1", "1.2.4", True),
    ("~1", "2.3.4", False),
    ("~0.2.3", "0.2.5", True),
    ("~0.2.3", "0.3.5", False),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.8.9", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.1.0", "2.1.0", False),
    ("^1.2.0", "2.2.1", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.0", "1.2.1-alpha.0", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    ("^1.2", "1.8.9", True),
    ("^1.2", "2.8.9", False),
    ("^1", "1.8.9", True),
    ("^1", "2.8.9", False),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.5.6", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.5.6", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.3", True),
    ("^0.0", "0.1.4", False),
    ("^0.0", "1.0.4", False),
    ("^0", "0.2.3", True),
    ("^0", "1.1.4", False),
    ("^0.2.3-beta.2", "0.2.3-beta.4", True),
    ("^0.2.3-beta.2", "0.2.4-beta.2", True),
    ("^0.2.3-beta.2", "0.3.4-beta.2", False),
    ("^0.2.3-beta.2", "0.2.3-beta.2", True),
    ("*", "1.2.3", True),
    ("~0.0.0", "1.2.3", True),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.0", "1.2.3", False),
    ("^0.0.0", "1.2.3", False),
    ("= 2.0", "1.2.3", False),
    ("= 2.0", "2.0.0", True),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4", True),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.x", "2.0.0", False),
    ("<1.1.x", "1.2.1", False),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.x", "1.1.1", True),
    (">=1.1", "4.1.0-beta", False),
    ("<=1.1", "0.1.0-alpha", False),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.x", "1.1.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1.x", "1.2.500", False),
    ("<=4.5", "3.4.0", True),
    ("<=4.5", "3.7.0", True),
    ("<=4.5", "4.6.3", False),
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1, <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">1.1 <2", "1.1.1", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    (">=1.1    <2    !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    (">= 1.1, <     2, !=1.2.3", "1.2.3", False),
    ("> 1.1 < 2", "1.1.1", False),
    (">1.1 < 2", "1.2.1", True),
    (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", True),
    ("1.1 - 2", "1.1.1", True),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.1-3", "4.3.2", False),  # no spaces: 1.1 with pre-release "3", not a hyphen range
    ("^1.1", "1.1.1", True),
    ("^1.1", "4.3.2", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.x", "1.1.1-beta1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.0.1", "0.0.1", True),
    ("^0.0.1", "0.3.1", False),
    ("~*", "2.1.1", True),
    ("~1", "2.1.1", False),
    ("~1", "1.3.5", True),
    ("~1", "1.4", True),
    ("~1.x", "2.1.1", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "1.4", True),
    ("~1.1", "1.1.1", True),
    ("~1.1", "1.1.1-alpha", False),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.2", False),
    ("~1.1", "1.2.3", False),
    ("~1.3", "2.4.5", False),
    ("~1", "1.3.5-beta", False),
    ("~1.3.6-alpha", "1.3.5-beta", False),
    ("~1.3.5-alpha", "1.3.5-beta", True),
    ("~1.3.5-beta", "1.3.5-alpha", False),
    ("^1.1.1-alpha", "1.1.1-beta", True),
    ("^1.1.1-beta", "1.1.1-alpha", False),
    ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", True),
    ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
]

# The operators and spellings the product promises, and the pre-release rule per alternative.
IMAGEDRIFT_CHECKS = [
    (">=1.2.0 <2.0.0", "1.9.9", True),
    (">=1.2.0 <2.0.0", "2.0.0", False),
    (">=1.2.0, <2.0.0", "1.2.0", True),
    (">=1.2.0,<2.0.0", "1.1.9", False),
    ("=>1.2", "1.2.0", True),
    ("=<1.2", "1.2.9", True),
    ("=<1.2", "1.3.0", False),
    ("~>1.2", "1.2.9", True),
    ("~>1.2", "1.3.0", False),
    ("~> 1.2.3", "1.2.2", False),
    ("v1.2.x", "1.2.7", True),
    (">=v1.2.0", "v1.3.0", True),
    ("1.2.X", "1.2.7", True),
    ("1.X", "1.9.0", True),
    ("X", "3.0.0", True),
    ("x.x.x", "0.0.1", True),
    ("1.2", "1.2.9", True),
    ("1.2", "1.3.0", False),
    ("1.2.3", "1.2.3+build.7", True),  # build metadata does not take part
    ("1.2.3+build.1", "1.2.3+build.2", True),
    ("1.2 - 1.4.5", "1.4.5", True),
    ("1.2 - 1.4.5", "1.4.6", False),
    ("1.2 - 1.4.5", "1.1.9", False),
    ("2.3.4 - 4.5", "4.5.9", True),  # the upper bound 4.5 is 4.5.x
    ("^1.2.3 || ^3", "3.9.0", True),
    ("^1.2.3 || ^3", "2.0.0", False),
    ("^1 || ^2", "2.0.0-rc.1", False),
    # a pre-release named anywhere in an alternative opens that alternative (Masterminds v3.3)
    (">=1.2.0-0 <2.0.0", "1.5.0-beta.1", True),
    (">=1.2.0-0 <2.0.0", "2.0.0-rc.1", True),  # 2.0.0-rc.1 < 2.0.0 (npm would say no)
    (">=1.2.0-0 <2.0.0 || >=3", "3.1.0-rc.1", False),
    ("<2.0.0 >=1.2.0-0", "1.5.0-beta.1", True),
    # ^* and <=* keep Masterminds' behaviour (upstream issue 317): only 0.0.0 / 0.0.x
    ("^*", "0.0.0", True),
    ("^*", "1.2.3", False),
    ("<=*", "0.0.9", True),
    ("<=*", "0.1.0", False),
    (">*", "0.0.1", True),
    ("!=*", "1.0.0", True),
    ("!=*", "0.0.0", False),
    ("!=1.2.3-beta", "1.2.3-beta", False),
    ("!=1.2.x-beta", "1.2.3-alpha", True),
    ("!=1.2.x-beta", "1.2.3", True),
]


@pytest.mark.parametrize(
    ("constraint", "version", "expected"), MASTERMINDS_CHECKS + IMAGEDRIFT_CHECKS
)
def test_range_allows(constraint: str, version: str, expected: bool) -> None:
    parsed = parse_version(version)
    assert parsed is not None
    assert VersionRange.parse(constraint).allows(parsed) is expected


@pytest.mark.parametrize(
    ("constraint", "names"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1.0.0p", "'1.0.0p'"),
        ("1x", "'1x'"),
        ("x1", "'x1'"),
        ("-1", "'-1'"),
        ("a", "'a'"),
        (">= bar", "'>= bar'"),
        ("BAR >= 1.2.3", "'BAR'"),
        ("12.3.4.1234", "'12.3.4.1234'"),
        ("12.23.4.1234", "'12.23.4.1234'"),
        ("12.3.34~ 1.2.3", "'12.3.34~'"),
        (">=1.2.0,", "comma"),
        (">=1.2.0,,<2", "',<2'"),
        (",>=1.2.0", "',>=1.2.0'"),
        (">=1.2.0 ||", "alternative is empty"),
        ("|| >=1.2.0", "alternative is empty"),
        (">=1|2", "'>=1|2'"),
        ("1.2.3>=2", "'1.2.3>=2'"),
        (">=", "'>='"),
        ("~ >1.2", "'~ >1.2'"),
        (">=1.2.3-01", "'>=1.2.3-01'"),
        ("1.2.3\v", "'1.2.3\\x0b'"),
        ("x" * 2000, "characters long"),
    ],
)
def test_range_errors_name_the_bad_part(constraint: str, names: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        VersionRange.parse(constraint)
    assert names in str(caught.value)


@pytest.mark.parametrize(
    "constraint",
    [
        "1.0.x",
        "^1.0",
        "=1.0.0",
        "~1.0",
        ">=1.0",
        ">0,<2.0",
        ">= 1.1",
        ">40.50.60, < 50.70",
        "2.0",
        "v2.3.5-20161202202307-sha.e8fc5e5",
        ">= 1.2.3 < 2.0",
        ">= 1.2.3 < 2.0 || => 3.0 < 4",
        ">= 1.2.3, < 2.0 || => 3.0, < 4",
        "3 - 4 || => 3.0, < 4",
        "12.3.34 ~1.2.3",
        " >=1.2.0 , <2 ",
        "\t>=1\n<2",
    ],
)
def test_valid_ranges(constraint: str) -> None:
    assert str(VersionRange.parse(constraint)) == constraint


def test_hyphen_range_after_a_constraint_without_space_is_masterminds_rewrite() -> None:
    # Masterminds' rewrite swallows the space before a hyphen range: ">=0 1 - 2" becomes
    # ">=0>= 1, <= 2", which does not parse there either.
    with pytest.raises(InvalidReference):
        VersionRange.parse(">=0 1 - 2")
    # Two hyphen ranges side by side are ANDed, like any two constraints.
    assert len(VersionRange.parse("2 - 3 4.0.0 - 5.1").alternatives[0]) == 4


# --- semver policy: Flux semver_test.go and more ------------------------------------------


@dataclass(frozen=True)
class SemverCase:
    label: str
    tags: list[str]
    range: str
    expected: str | None


SEMVER_LATEST = [
    SemverCase(
        "Flux: regular",
        ["1.0.0", "1.0.0.1", "1.0.0p", "1.0.1", "1.2.0", "0.1.0"],
        "1.0.x",
        "1.0.1",
    ),
    SemverCase("Flux: regular with prefix", ["v1.2.3", "v1.0.0", "v0.1.0"], "1.0.x", "v1.0.0"),
    SemverCase("Flux: invalid prefix", ["b1.2.3", "b1.0.0", "b0.1.0"], "1.0.x", None),
    SemverCase("Flux: empty list", [], "1.0.x", None),
    SemverCase("Flux: non-matching list", ["1.2.0"], "1.0.x", None),
    SemverCase("star skips pre-releases", ["1.0.0", "2.0.0-rc.1", "latest"], "*", "1.0.0"),
    SemverCase(
        "pre-release range takes pre-releases",
        ["1.0.0", "2.0.0-rc.1", "2.0.0-rc.2"],
        ">=1.0.0-0",
        "2.0.0-rc.2",
    ),
    SemverCase(
        "pre-release ordering",
        ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.11", "1.0.0-beta.2"],
        ">=1.0.0-0 <1.0.0",
        "1.0.0-beta.11",
    ),
    SemverCase("release beats its pre-release", ["1.0.0-rc.9", "1.0.0"], ">=1.0.0-0", "1.0.0"),
    SemverCase("tilde", ["1.2.3", "1.2.9", "1.3.0"], "~1.2", "1.2.9"),
    SemverCase("tilde major", ["1.2.3", "1.9.0", "2.0.0"], "~1", "1.9.0"),
    SemverCase("caret", ["1.2.3", "1.9.0", "2.0.0"], "^1.2.3", "1.9.0"),
    SemverCase("caret zero minor", ["0.2.3", "0.2.9", "0.3.0"], "^0.2.3", "0.2.9"),
    SemverCase("caret zero zero", ["0.0.3", "0.0.4"], "^0.0.3", "0.0.3"),
    SemverCase("partial tags are versions", ["1", "1.1", "1.0.5"], "^1", "1.1"),
    SemverCase("numeric not lexical", ["1.9.0", "1.10.0", "1.2.0"], "^1", "1.10.0"),
    SemverCase("equal versions: greater tag string", ["1.4.0", "v1.4.0", "1.4"], "~1.4", "v1.4.0"),
    SemverCase("build metadata does not order", ["1.4.0+b2", "1.4.0+b10"], "1.4.0", "1.4.0+b2"),
    SemverCase("or", ["1.5.0", "3.1.0", "2.0.0"], "^1 || ^3", "3.1.0"),
    SemverCase("not equal", ["1.2.3", "1.2.4"], ">=1.2 !=1.2.4", "1.2.3"),
    SemverCase("hyphen", ["1.4.5", "1.4.6", "1.2.0"], "1.2 - 1.4.5", "1.4.5"),
]


@pytest.mark.parametrize("case", SEMVER_LATEST, ids=lambda c: c.label)
def test_semver_latest(case: SemverCase) -> None:
    assert SemverPolicy(case.range).latest(case.tags) == case.expected


def test_semver_ordered_is_newest_first_and_unique() -> None:
    policy = SemverPolicy(">=1.0")
    tags = ["1.0.0", "latest", "1.10.0", "1.2.0", "1.2.0", "v1.2.0", "2.0.0-rc.1"]
    assert policy.ordered(tags) == ["1.10.0", "v1.2.0", "1.2.0", "1.0.0"]


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("1.2.4", "1.2.3", False),
        ("1.2.3", "1.2.4", True),
        ("1.2.3", "1.2.3", False),
        ("v1.2.3", "1.2.3", False),  # equal precedence is not a downgrade
        ("1.2.3+b1", "1.2.3+b2", False),
        ("1.3.0", "1.3.0-rc.1", False),
        ("1.3.0-rc.1", "1.3.0", True),
        ("1.9.0", "2.0.0-rc.1", True),  # the current tag need not satisfy the range
        ("1.2.3", "latest", False),  # current not a version: nothing to go back from
        ("latest", "1.2.3", True),  # a candidate the policy cannot place is never rolled
    ],
)
def test_semver_is_downgrade(candidate: str, current: str, expected: bool) -> None:
    assert SemverPolicy(">=1.0").is_downgrade(candidate, current) is expected


# --- regex policy: Flux alphabetical_test.go, numerical_test.go, filter_test.go --------------


@dataclass(frozen=True)
class RegexCase:
    label: str
    tags: list[str]
    order: str
    expected: str | None
    direction: str = "asc"
    pattern: str = ".*"
    extract: str = ""


REGEX_LATEST = [
    RegexCase(
        "Ubuntu CalVer", ["16.04", "16.04.1", "16.10", "20.04", "20.10"], "alphabetical", "20.10"
    ),
    RegexCase(
        "Ubuntu CalVer descending",
        ["16.04", "16.04.1", "16.10", "20.04", "20.10"],
        "alphabetical",
        "16.04",
        "desc",
    ),
    RegexCase(
        "Ubuntu code names",
        ["xenial", "yakkety", "zesty", "artful", "bionic"],
        "alphabetical",
        "zesty",
    ),
    RegexCase(
        "Ubuntu code names descending",
        ["xenial", "yakkety", "zesty", "artful", "bionic"],
        "alphabetical",
        "artful",
        "desc",
    ),
    RegexCase(
        "Timestamps alphabetical",
        ["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"],
        "alphabetical",
        "1606364286",
    ),
    RegexCase(
        "Timestamps with prefix",
        ["rel-1606234201", "rel-1606364286", "rel-1606334092", "rel-1606334284", "rel-1606334201"],
        "alphabetical",
        "rel-1606364286",
    ),
    RegexCase("Empty list alphabetical", [], "alphabetical", None),
    RegexCase(
        "Integers ascending",
        ["-62", "-88", "73", "72", "15", "16", "15", "29", "-33", "-91"],
        "numerical",
        "73",
    ),
    RegexCase(
        "Integers descending",
        ["5", "-8", "-78", "25", "70", "-4", "80", "92", "-20", "-24"],
        "numerical",
        "-78",
        "desc",
    ),
    RegexCase(
        "Floats ascending",
        [
            "47.40896403322944",
            "-27.8520927455902",
            "-27.930666514224427",
            "-31.352485948094568",
            "-50.41072694704882",
            "-21.962849842263736",
            "24.71884721436865",
            "-39.99177354004344",
            "53.47333823144817",
            "3.2008658570411086",
        ],
        "numerical",
        "53.47333823144817",
    ),
    RegexCase(
        "Floats descending",
        ["-65.27202780220686", "57.82948329142309", "-90.29082099756083", "16.06867070412028"],
        "numerical",
        "-90.29082099756083",
        "desc",
    ),
    RegexCase(
        "Unix timestamps ascending",
        ["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"],
        "numerical",
        "1606364286",
    ),
    RegexCase(
        "Unix timestamps descending",
        ["1606234201", "1606364286", "1606334092", "1606334284", "1606334201"],
        "numerical",
        "1606234201",
        "desc",
    ),
    RegexCase("Single value", ["1"], "numerical", "1"),
    RegexCase("Single value descending", ["1"], "numerical", "1", "desc"),
    RegexCase("Empty list numerical", [], "numerical", None),
    RegexCase("numerical is not lexical", ["9", "10", "100"], "numerical", "100"),
    RegexCase("alphabetical is lexical", ["9", "10", "100"], "alphabetical", "9"),
    RegexCase("exponent and decimals", ["1e3", "999.5", ".5", "5."], "numerical", "1e3"),
    RegexCase(
        "Flux filter: prefix pattern",
        ["ver1", "ver2", "ver3", "rel1"],
        "alphabetical",
        "ver3",
        pattern="^ver",
    ),
    RegexCase(
        "Flux filter: capture group",
        ["ver1", "ver2", "ver10", "rel11"],
        "numerical",
        "ver10",
        pattern=r"ver(\d+)",
        extract="$1",
    ),
    RegexCase(
        "Flux docs: main branch timestamps",
        ["main-3f2a1bc-1700000100", "main-0aa11bb-1700000200", "dev-9f9f9f9-1800000000"],
        "numerical",
        "main-0aa11bb-1700000200",
        pattern=r"^main-[a-f0-9]+-(?P<ts>[0-9]+)",
        extract="$ts",
    ),
    RegexCase(
        "Go named group syntax",
        ["rc-1", "rc-2", "rc-12"],
        "numerical",
        "rc-12",
        pattern=r"^rc-(?<n>\d+)$",
        extract="${n}",
    ),
    RegexCase(
        "POSIX class",
        ["build-7", "build-12", "build-x"],
        "numerical",
        "build-12",
        pattern=r"^build-([[:digit:]]+)\z",
        extract="$1",
    ),
    RegexCase(
        "equal extracts: greater tag string",
        ["a-1", "b-1", "c-0"],
        "numerical",
        "b-1",
        pattern=r"-(\d+)$",
        extract="$1",
    ),
    RegexCase(
        "equal extracts, descending: still the greater tag string",
        ["a-1", "b-1", "c-2"],
        "numerical",
        "b-1",
        "desc",
        pattern=r"-(\d+)$",
        extract="$1",
    ),
    RegexCase(
        "float-equal numbers are told apart exactly",
        ["t-20240601123045123456789", "t-20240601123045123456788"],
        "numerical",
        "t-20240601123045123456789",
        pattern=r"t-(\d+)",
        extract="$1",
    ),
]


@pytest.mark.parametrize("case", REGEX_LATEST, ids=lambda c: c.label)
def test_regex_latest(case: RegexCase) -> None:
    policy = RegexPolicy(case.pattern, case.extract, case.order, case.direction)
    assert policy.latest(case.tags) == case.expected
    assert policy.latest(list(reversed(case.tags))) == case.expected


def test_regex_ordered_skips_unmatched_tags() -> None:
    policy = RegexPolicy(r"^v(?P<n>.*)$", "$n", "numerical")
    assert policy.ordered(["v2", "x3", "v10", "v1.5"]) == ["v10", "v2", "v1.5"]
    assert policy.extracted("x3") is None
    assert policy.extracted("v10") == "10"
    assert policy.skip_reason("x3") == "does not match pattern '^v(?P<n>.*)$'"


@pytest.mark.parametrize(
    "tags",
    [
        ["0", "1a", "b"],  # Flux: "failed to parse invalid numeric value '1a'"
        ["inf", "3"],  # Go's ParseFloat reads these; here they are not numbers (fail closed)
        ["NaN", "3"],
        ["0x1p4", "3"],
    ],
)
def test_numerical_fails_closed_on_a_value_that_is_not_a_number(tags: list[str]) -> None:
    policy = RegexPolicy(".*", "", "numerical")
    with pytest.raises(TagPolicyFailed, match="which is not a number"):
        policy.ordered(tags)
    bad = next(t for t in tags if t != "3" and t != "0")
    assert policy.skip_reason(bad) == f"extracts {bad!r}, which is not a number"
    assert policy.skip_reason("3") is None


def test_numerical_only_judges_the_tags_its_pattern_keeps() -> None:
    # Flux filters first: a tag the pattern drops cannot fail the numerical order.
    policy = RegexPolicy(r"^build-(?P<n>\d+)$", "$n", "numerical")
    assert policy.ordered(["build-7", "latest", "build-12", "build-x"]) == ["build-12", "build-7"]


@pytest.mark.parametrize(
    ("order", "direction", "candidate", "current", "expected"),
    [
        ("numerical", "asc", "v10", "v9", False),
        ("numerical", "asc", "v9", "v10", True),
        ("numerical", "asc", "v10", "v10.0", False),  # equal values
        ("numerical", "desc", "v9", "v10", False),
        ("numerical", "desc", "v10", "v9", True),
        ("alphabetical", "asc", "v9", "v10", False),
        ("alphabetical", "asc", "v10", "v9", True),
        ("alphabetical", "desc", "v10", "v9", False),
        ("numerical", "asc", "v1", "latest", False),  # current not matched: not orderable
        ("numerical", "asc", "v1", "vX", False),  # current not numeric: not orderable
        ("numerical", "asc", "vX", "v1", True),  # candidate not orderable: never rolled
    ],
)
def test_regex_is_downgrade(
    order: str, direction: str, candidate: str, current: str, expected: bool
) -> None:
    policy = RegexPolicy(r"^v(.*)$", "$1", order, direction)
    assert policy.is_downgrade(candidate, current) is expected


@pytest.mark.parametrize(
    ("pattern", "template", "tag", "expected"),
    [
        (r"(?P<a>\w+)-(?P<b>\w+)", "$b-$a", "x-y", "y-x"),
        (r"(?P<a>\w+)-(?P<b>\w+)", "${b}_${a}", "x-y", "y_x"),
        (r"(\w+)-(\w+)", "$2$1", "x-y", "yx"),
        (r"(\w+)-(\w+)", "$0", "x-y", "x-y"),
        (r"(\w+)-(\w+)", "$$1", "x-y", "$1"),
        (r"(\w+)-(\w+)", "$1x", "x-y", ""),  # "$1x" names group "1x", which does not exist
        (r"(\w+)-(\w+)", "${1}x", "x-y", "xx"),
        (r"(\w+)-(\w+)", "$-", "x-y", "$-"),  # malformed: a literal $
        (r"(\w+)-(\w+)", "${1", "x-y", "${1"),
        (r"(\w+)-(\w+)", "$", "x-y", "$"),
        (r"(\w+)-(\w+)", "$9", "x-y", ""),
        (r"(\w+)-(\w+)", "$01", "x-y", ""),  # leading zero: a name, not a number
        (r"(a)?(b)", "[$1][$2]", "b", "[][b]"),  # a group that did not take part is empty
        (r"(?P<n>\d+)", "pre-$n-post", "abc123def", "pre-123-post"),
        # A name used twice: Go expands the first group of that name that took part.
        (r"(?P<n>a)|(?P<n>b)", "[$n]", "b", "[b]"),
        (r"(?P<n>a)?(?P<n>b)", "[$n]", "ab", "[a]"),
    ],
)
def test_expand_template_is_go_regexp_expand(
    pattern: str, template: str, tag: str, expected: str
) -> None:
    match = compile_go(pattern).search(tag)
    assert match is not None
    assert expand_template(template, match) == expected


@pytest.mark.parametrize(
    ("pattern", "extract", "order", "direction", "names"),
    [
        ("(unclosed", "", "numerical", "asc", "does not compile"),
        ("^v(?P<n>.*)$", "$m", "numerical", "asc", "'m'"),
        ("^v(.*)$", "$2", "numerical", "asc", "'2'"),
        ("^v(.*)$", "$1", "semver", "asc", "'semver'"),
        ("^v(.*)$", "$1", "numerical", "ascending", "'ascending'"),
    ],
)
def test_regex_policy_errors(
    pattern: str, extract: str, order: str, direction: str, names: str
) -> None:
    with pytest.raises(InvalidReference) as caught:
        RegexPolicy(pattern, extract, order, direction)
    assert names in str(caught.value)


# --- same tag -------------------------------------------------------------------------------


def test_same_tag() -> None:
    policy = SameTagPolicy("stable")
    assert policy.ordered(["1.0", "stable", "latest"]) == ["stable"]
    assert policy.latest(["1.0", "stable"]) == "stable"
    assert policy.latest(["1.0", "latest"]) is None
    assert policy.ordered([]) == []
    assert policy.is_downgrade("stable", "stable") is False
    assert policy.is_downgrade("stable", "1.4.2") is False
    assert policy.is_downgrade("latest", "stable") is True


# --- from a spec ----------------------------------------------------------------------------


def test_policy_from_spec_builds_each_kind() -> None:
    semver_policy = policy_from_spec({"semver": {"range": ">=1.0"}})
    regex_policy = policy_from_spec(
        {"regex": {"pattern": r"^b-(?P<n>\d+)$", "extract": "$n", "order": "numerical"}}
    )
    same = policy_from_spec({"sameTag": {"tag": "stable"}})
    assert isinstance(semver_policy, SemverPolicy)
    assert isinstance(regex_policy, RegexPolicy)
    assert regex_policy.direction == "asc"
    assert isinstance(same, SameTagPolicy)
    for policy in (semver_policy, regex_policy, same):
        assert isinstance(policy, TagPolicy)
        assert policy.describe()
    assert semver_policy.latest(["1.0.0", "1.1.0"]) == "1.1.0"
    assert regex_policy.latest(["b-9", "b-10"]) == "b-10"
    desc = policy_from_spec(
        {"regex": {"pattern": ".*", "order": "alphabetical", "direction": "desc"}}
    )
    assert desc.latest(["b", "a"]) == "a"


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({}, "exactly one"),
        ({"semver": {"range": "1"}, "sameTag": {"tag": "x"}}, "exactly one"),
        ({"semVer": {"range": "1"}}, "semVer"),
        ({"semver": "1.x"}, "must be a mapping"),
        ({"semver": {}}, "missing range"),
        ({"semver": {"range": 1}}, "must be a string"),
        ({"semver": {"range": ">= bar"}}, "'>= bar'"),
        ({"semver": {"range": ">=1", "rnage": ">=2"}}, "rnage"),
        ({"regex": {"order": "numerical"}}, "missing pattern"),
        ({"regex": {"pattern": ".*"}}, "missing order"),
        ({"regex": {"pattern": "(", "order": "numerical"}}, "does not compile"),
        ({"regex": {"pattern": ".*", "order": "semver"}}, "'semver'"),
        ({"regex": {"pattern": ".*", "order": "numerical", "direction": "up"}}, "'up'"),
        ({"regex": {"pattern": ".*", "order": "numerical", "extract": 1}}, "must be a string"),
        ({"sameTag": {}}, "missing tag"),
        ({"sameTag": {"tag": "not a tag"}}, "not a valid image tag"),
        ({"sameTag": {"tag": ""}}, "not a valid image tag"),
    ],
)
def test_policy_from_spec_errors(spec: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        policy_from_spec(spec)
    assert names in str(caught.value)


# --- Flux: semver over filterTags, and strict versions --------------------------------------
# fluxcd/image-reflector-controller internal/controller/imagepolicy_controller.go applyPolicy:
# filterTags runs first and every policy, semver included, reads the extracted value; the
# winner maps back to its tag. internal/policy/semver.go parses with fluxcd/pkg version
# .ParseVersion: Masterminds StrictNewVersion after one leading "v".


@pytest.mark.parametrize(
    ("tags", "pattern", "extract", "expected"),
    [
        (["1.2.3-alpine", "1.3.0-alpine", "1.4.0-debian"], "-alpine$", "", None),  # tag itself
        (
            ["1.2.3-alpine", "1.3.0-alpine", "1.4.0-debian"],
            "^(?P<v>.*)-alpine$",
            "$v",
            "1.3.0-alpine",
        ),
        (["app-v1.9.0", "app-v1.10.0", "web-v2.0.0"], "^app-(?P<v>.*)$", "$v", "app-v1.10.0"),
        (
            ["build-1.0.0-abc", "build-1.1.0-def"],
            r"^build-(\d+\.\d+\.\d+)",
            "$1",
            "build-1.1.0-def",
        ),
    ],
)
def test_semver_reads_the_value_filter_tags_extracts(
    tags: list[str], pattern: str, extract: str, expected: str | None
) -> None:
    policy = SemverPolicy(">=1.0.0", pattern=pattern, extract=extract)
    assert policy.latest(tags) == expected


def test_semver_filter_skip_reasons_and_downgrades() -> None:
    policy = SemverPolicy(">=1.0.0 <2", pattern="^(?P<v>.*)-alpine$", extract="$v")
    assert policy.skip_reason("1.4.0-debian") == "does not match pattern '^(?P<v>.*)-alpine$'"
    assert policy.skip_reason("latest-alpine") == "not a version ('latest')"
    assert policy.skip_reason("2.0.0-alpine") == "outside >=1.0.0 <2"
    assert policy.is_downgrade("1.2.0-alpine", "1.3.0-alpine") is True
    assert policy.describe() == "semver >=1.0.0 <2 pattern '^(?P<v>.*)-alpine$' extract '$v'"


def test_semver_extract_needs_a_pattern() -> None:
    with pytest.raises(InvalidReference, match="semver extract '\\$v' needs a pattern"):
        SemverPolicy("*", extract="$v")


@pytest.mark.parametrize(
    ("tag", "strict", "lenient"),
    [
        ("1.2.3", True, True),
        ("v1.2.3", True, True),  # Flux strips one lowercase v
        ("V1.2.3", False, False),
        ("vv1.2.3", False, False),
        ("1.2", False, True),
        ("1", False, True),
        ("01.2.3", False, True),  # leading zero
        ("1.2.3-rc.1", True, True),
        ("1.2.3-rc.01", False, False),
        ("1.2.3+build.5", True, True),
        # Beyond Masterminds' MaxVersionLen, and past the 255 characters semver (3.2) reads:
        # never a version (registry tags are at most 128 characters anyway).
        ("1.2.3-" + "a" * 260, False, False),
    ],
)
def test_strict_versions_are_full_x_y_z(tag: str, strict: bool, lenient: bool) -> None:
    assert (SemverPolicy("*", strict=True).version(tag) is not None) is strict
    assert (parse_version(tag) is not None) is lenient


def test_strict_mode_skips_short_versions() -> None:
    policy = policy_from_spec({"semver": {"range": ">=1.0.0", "strict": True}})
    assert policy.latest(["1.5", "1.4.0", "2"]) == "1.4.0"
    assert policy.skip_reason("1.5") == "not a full X.Y.Z version"
    assert SemverPolicy(">=1.0.0").latest(["1.5", "1.4.0", "2"]) == "2"
