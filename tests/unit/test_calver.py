"""Calendar versions as Argo CD Image Updater's ``calver`` strategy defines them.

Every row below comes from the upstream's own tests, argoproj-labs/argocd-image-updater
``registry-scanner/pkg/tag/calver_test.go`` (PR #1768, commit ec41383e), and names the
test it comes from: ``Test_NewCalVerLayout`` (valid and invalid layouts, with the
upstream's error text), ``Test_CalVerLayout_parse`` (the fields a tag decodes to, or
none), ``Test_SortByCalVer`` (the order, which upstream lists oldest first and imagedrift
returns newest first). Rows marked ``imagedrift`` are this project's own: the layout as a
tag, the component too large to read named in the skip reason, the downgrade rule.
"""

from __future__ import annotations

import pytest

from imagedrift.core.calver import DEFAULT_LAYOUT, CalverPolicy, Layout, compare_natural
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.errors import InvalidReference

NEW_LAYOUT = "Test_NewCalVerLayout"
PARSE = "Test_CalVerLayout_parse"
SORT = "Test_SortByCalVer"

VALID_LAYOUTS = [
    "YYYY-0M-0D",
    "vYYYY-0M-0D",
    "vYYYY-0M-0D-MICRO",
    "vDD-MM-YYYY",
    "vDD-MM-YY",
    "vYY.0M.0D",
    "YYYY0M0D",
    "release-YYYY_0M_0D",
    "vYYYY-0M",
    "vYYYY",
    "vYY.MINOR.MICRO",
    "vYYYY.MAJOR.MINOR.MICRO",
    "vYYYY-0W",
    "MAJOR.YY.0M",
    "MAJOR.MINOR.YYYY",
    "vYYYY-0M-0D-MODIFIER",
    "vYY.MINOR.MICRO-MODIFIER",
    "vYYYY.0M.MICRO_MODIFIER",
]


@pytest.mark.parametrize("layout", VALID_LAYOUTS)
def test_valid_layouts(layout: str) -> None:
    """Test_NewCalVerLayout: "Valid layout <layout>"."""
    assert Layout.parse(layout).text == layout


def test_the_default_layout() -> None:
    """Test_NewCalVerLayout: "Empty layout falls back to the default" and "The default
    layout insists on the canonical spelling"."""
    assert Layout.parse("").text == DEFAULT_LAYOUT == "YYYY.0M.0D"
    policy = CalverPolicy("")
    assert policy.skip_reason("2026.01.30") is None
    assert policy.skip_reason("2026-01-30") is not None
    assert policy.skip_reason("2026.1.30") is not None


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("v0M-0D", "must contain a year field"),
        ("MAJOR.MINOR.MICRO", "must contain a year field"),
        ("vYYYY-YY", "defines the same field twice"),
        ("vYYYY-0M-MM", "defines the same field twice"),
        ("vYYYY-0D", "contains a day but no month"),
        ("vYYYY-0W-0M", "must not combine a week field"),
        ("v1YYYY-0M-0D", "contains '1' outside of a token"),
        ("nonsense", "must contain a year field"),
        ("vYYYY-0M-D", "contains 'D' outside of a token"),
        ("vYYYY-M-0D", "contains 'M' outside of a token"),
        ("vYYYY-0M-DDD", "contains 'D' outside of a token"),
        ("vYYYYMM0D", "places the variable width MM directly before another field"),
        ("vYYMM", "places the variable width YY directly before another field"),
        ("vYYYY-0M-0D-MINORMICRO", "places the variable width MINOR directly before another"),
        ("vYYYY.MINOR.0M", "splits the date around 0M"),
        ("vYYYY-MICRO0M", "splits the date around 0M"),
        ("vMODIFIER-YYYY", "MODIFIER matches the remainder of the tag and must come last"),
        ("vYYYY-MODIFIER-0M", "splits the date around 0M"),
        ("vYYYY-0M-MODIFIER-0D", "splits the date around 0D"),
        ("vYYYY.MODIFIER.MICRO", "MODIFIER matches the remainder of the tag and must come last"),
        ("vYYYY.MICRO.MINOR", "places MICRO before MINOR, but MINOR is the more significant"),
        ("vYYYY.MINOR.MAJOR", "places MINOR before MAJOR, but MAJOR is the more significant"),
        ("MINOR.YYYY.MAJOR", "places MINOR before MAJOR, but MAJOR is the more significant"),
        # imagedrift: the upstream writes a layout where a tag goes, so it is a tag.
        ("YYYY/0M", "is not written as a tag"),
        (".YYYY", "is not written as a tag"),
        ("YYYY." + "x" * 130, "is not written as a tag"),
    ],
)
def test_invalid_layouts(layout: str, message: str) -> None:
    """Test_NewCalVerLayout: invalidLayouts, each with the upstream's error text."""
    with pytest.raises(InvalidReference) as refused:
        Layout.parse(layout)
    assert message in str(refused.value)


# (upstream test name, layout, tag, fields or None): fields are year, month, week, day,
# major, minor, micro, modifier, as the upstream asserts them.
def fields(
    year: int = 0,
    month: int = 0,
    week: int = 0,
    day: int = 0,
    major: int = 0,
    minor: int = 0,
    micro: int = 0,
    modifier: str = "",
) -> tuple[int | str, ...]:
    return (year, month, week, day, major, minor, micro, modifier)


PARSE_ROWS: list[tuple[str, str, str, tuple[int | str, ...] | None]] = [
    ("Zero padded date", "vYYYY-0M-0D", "v2026-01-30", fields(2026, 1, day=30)),
    ("Zero padded tokens require the padding", "vYYYY-0M-0D", "v2026-1-30", None),
    ("Short tokens accept unpadded fields", "vYYYY-MM-DD", "v2026-1-3", fields(2026, 1, day=3)),
    (
        "Short tokens also accept padded fields",
        "vYYYY-MM-DD",
        "v2026-01-30",
        fields(2026, 1, day=30),
    ),
    ("Two digit month", "vYYYY-0M-0D", "v2026-10-03", fields(2026, 10, day=3)),
    (
        "Explicit micro segment",
        "vYYYY-0M-0D-MICRO",
        "v2026-01-30-12",
        fields(2026, 1, day=30, micro=12),
    ),
    (
        "A trailing micro segment may be left out",
        "vYYYY-0M-0D-MICRO",
        "v2026-01-30",
        fields(2026, 1, day=30),
    ),
    (
        "A trailing separator without a segment is rejected",
        "vYYYY-0M-0D-MICRO",
        "v2026-01-30-",
        None,
    ),
    ("An undeclared trailing segment is rejected", "vYYYY-0M-0D", "v2026-01-30-7", None),
    ("Minor and micro segments", "vYY.MINOR.MICRO", "v26.4.11", fields(2026, minor=4, micro=11)),
    ("Minor and micro segments may both be left out", "vYY.MINOR.MICRO", "v26", fields(2026)),
    ("Only the micro segment is left out", "vYY.MINOR.MICRO", "v26.4", fields(2026, minor=4)),
    ("Major segment", "vYYYY.MAJOR.MINOR", "v2026.3.4", fields(2026, major=3, minor=4)),
    ("A major segment is never optional", "vYYYY.MAJOR", "v2026", None),
    ("Major segment leading the date", "MAJOR.YY.0M", "1.26.01", fields(2026, 1, major=1)),
    ("Day first", "vDD-MM-YYYY", "v30-01-2026", fields(2026, 1, day=30)),
    ("Day first with short year", "vDD-MM-YY", "v30-01-26", fields(2026, 1, day=30)),
    ("Short year counts from 2000", "vYY-MM-DD", "v6-01-30", fields(2006, 1, day=30)),
    ("Short year reaches past 2099", "vYY-MM-DD", "v106-01-30", fields(2106, 1, day=30)),
    ("Padded short year", "v0Y-0M-0D", "v06-01-30", fields(2006, 1, day=30)),
    ("Padded short year requires the padding", "v0Y-0M-0D", "v6-01-30", None),
    ("Week based layout", "vYYYY-0W", "v2026-05", fields(2026, week=5)),
    ("Week out of range", "vYYYY-0W", "v2026-54", None),
    ("Week zero is a valid week", "vYYYY.0W", "v2026.00", fields(2026, week=0)),
    ("Dot separated", "vYY.0M.0D", "v26.01.30", fields(2026, 1, day=30)),
    ("No separators", "YYYY0M0D", "20260130", fields(2026, 1, day=30)),
    ("No separators requires padding", "YYYY0M0D", "2026130", None),
    ("Prefixless layout accepts a v prefix", "YYYY-0M-0D", "v2026-01-30", fields(2026, 1, day=30)),
    ("Prefixless layout accepts no prefix", "YYYY-0M-0D", "2026-01-30", fields(2026, 1, day=30)),
    ("A spelled out v prefix is required", "vYYYY-0M-0D", "2026-01-30", None),
    ("Literal prefix is required", "release-YYYY-0M-0D", "v2026-01-30", None),
    ("Literal prefix matches", "release-YYYY-0M-0D", "release-2026-01-30", fields(2026, 1, day=30)),
    ("Month only layout", "vYYYY-0M", "v2026-10", fields(2026, 10)),
    ("Non matching tag", "vYYYY-0M-0D", "latest", None),
    ("Semver tag does not match", "vYYYY-0M-0D", "v1.2.3", None),
    ("Wrong year width", "vYYYY-0M-0D", "v206-01-30", None),
    ("Month out of range", "vYYYY-0M-0D", "v2026-13-30", None),
    ("Swapped month and day is rejected", "vYYYY-0M-0D", "v2026-31-01", None),
    ("Day out of range", "vYYYY-0M-0D", "v2026-01-32", None),
    ("Month zero is out of range", "vYYYY-0M-0D", "v2026-00-30", None),
    ("A day the month does not have is rejected", "vYYYY-0M-0D", "v2026-02-31", None),
    ("February 29 of a leap year is a date", "vYYYY-0M-0D", "v2028-02-29", fields(2028, 2, day=29)),
    ("February 29 of a common year is not", "vYYYY-0M-0D", "v2026-02-29", None),
    (
        "Modifier is matched",
        "vYYYY-0M-0D-MODIFIER",
        "v2026-01-30-rc1",
        fields(2026, 1, day=30, modifier="rc1"),
    ),
    ("Modifier may be left out", "vYYYY-0M-0D-MODIFIER", "v2026-01-30", fields(2026, 1, day=30)),
    (
        "Modifier is rejected when the layout does not ask for it",
        "vYYYY-0M-0D",
        "v2026-01-30-rc1",
        None,
    ),
    (
        "Modifier with its own separator",
        "vYYYY.0M.MICRO-MODIFIER",
        "v2026.01.3-beta",
        fields(2026, 1, micro=3, modifier="beta"),
    ),
    (
        "Modifier and micro may both be left out",
        "vYYYY.0M.MICRO-MODIFIER",
        "v2026.01",
        fields(2026, 1),
    ),
    ("An empty modifier is rejected", "vYYYY-0M-0D-MODIFIER", "v2026-01-30-", None),
    (
        "A modifier may span separators",
        "vYYYY-0M-0D-MODIFIER",
        "v2026-01-30-alpha.2",
        fields(2026, 1, day=30, modifier="alpha.2"),
    ),
    (
        "A modifier may not contain arbitrary characters",
        "vYYYY-0M-0D-MODIFIER",
        "v2026-01-30-rc/1",
        None,
    ),
    (
        "A segment too large to be a number is rejected",
        "vYYYY.0M.MICRO",
        "v2026.01.99999999999999999999",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "layout", "tag", "expected"), PARSE_ROWS, ids=[r[0] for r in PARSE_ROWS]
)
def test_parse(name: str, layout: str, tag: str, expected: tuple[int | str, ...] | None) -> None:
    """Test_CalVerLayout_parse, row by row."""
    read = Layout.parse(layout).read(tag)
    if expected is None:
        assert isinstance(read, str), (name, read)
        assert CalverPolicy(layout).skip_reason(tag) is not None
    else:
        assert read == expected, name
        assert CalverPolicy(layout).skip_reason(tag) is None


# (upstream test name, layout, tags, expected oldest first as upstream lists it)
SORT_ROWS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "Dates are ordered chronologically, not lexically",
        "vYYYY-MM-DD",
        ["v2026-10-03", "v2026-1-30", "v2026-09-01"],
        ["v2026-1-30", "v2026-09-01", "v2026-10-03"],
    ),
    (
        "Micro segments are ordered numerically",
        "vYYYY-0M-0D-MICRO",
        ["v2026-01-30-10", "v2026-01-30-2", "v2026-01-30"],
        ["v2026-01-30", "v2026-01-30-2", "v2026-01-30-10"],
    ),
    (
        "Equivalent micro segments are ordered by name",
        "vYYYY-0M-0D-MICRO",
        ["v2026-01-30-1", "v2026-01-30-01"],
        ["v2026-01-30-01", "v2026-01-30-1"],
    ),
    (
        "Day first layout",
        "vDD-MM-YYYY",
        ["v03-10-2026", "v30-01-2026", "v01-09-2026"],
        ["v30-01-2026", "v01-09-2026", "v03-10-2026"],
    ),
    (
        "Short year layout crosses the year boundary",
        "vDD-MM-YY",
        ["v01-01-27", "v31-12-26", "v03-10-26"],
        ["v03-10-26", "v31-12-26", "v01-01-27"],
    ),
    (
        "Short years count from 2000 and beyond 2099",
        "vDD-MM-YY",
        ["v31-12-99", "v01-01-0", "v03-10-26", "v01-01-106"],
        ["v01-01-0", "v03-10-26", "v31-12-99", "v01-01-106"],
    ),
    (
        "Minor and micro segments",
        "vYY.MINOR.MICRO",
        ["v26.4.11", "v26.10.1", "v26.4.2"],
        ["v26.4.2", "v26.4.11", "v26.10.1"],
    ),
    (
        "Week based layout",
        "vYYYY-0W",
        ["v2026-10", "v2026-02", "v2027-01"],
        ["v2026-02", "v2026-10", "v2027-01"],
    ),
    (
        "A leading major segment outranks the date",
        "MAJOR.YY.0M",
        ["1.26.03", "2.25.01", "1.26.11"],
        ["1.26.03", "1.26.11", "2.25.01"],
    ),
    (
        "A trailing major segment ranks below the date",
        "YY.0M.MAJOR",
        ["26.03.1", "25.01.2", "26.11.1"],
        ["25.01.2", "26.03.1", "26.11.1"],
    ),
    (
        "Modifiers rank below the release they belong to",
        "vYYYY-0M-0D-MODIFIER",
        ["v2026-01-30", "v2026-01-30-rc1", "v2026-01-30-alpha"],
        ["v2026-01-30-alpha", "v2026-01-30-rc1", "v2026-01-30"],
    ),
    (
        "Modifiers are ordered naturally",
        "vYYYY-0M-0D-MODIFIER",
        ["v2026-01-30-rc10", "v2026-01-30-rc2", "v2026-01-30-rc1"],
        ["v2026-01-30-rc1", "v2026-01-30-rc2", "v2026-01-30-rc10"],
    ),
    (
        "A variant is tracked with a literal suffix, not MODIFIER",
        "vYYYY-0M-0D-alpine",
        ["v2026-02-01", "v2026-01-30-alpine", "v2026-02-01-alpine", "v2026-02-01-slim"],
        ["v2026-01-30-alpine", "v2026-02-01-alpine"],
    ),
    (
        "MODIFIER lets a plain release outrank a variant",
        "vYYYY-0M-0D-MODIFIER",
        ["v2026-01-30-alpine", "v2026-01-30"],
        ["v2026-01-30-alpine", "v2026-01-30"],
    ),
    (
        "Tags not matching the layout are dropped",
        "vYYYY-0M-0D",
        ["latest", "v2026-01-30", "1.2.3", "v2026-13-01", "v2026-02-01"],
        ["v2026-01-30", "v2026-02-01"],
    ),
    ("Nothing matches", "vYYYY-0M-0D", ["latest", "stable"], []),
    # Test_SortByCalVer_NilLayout: the default layout.
    ("NilLayout", "", ["latest", "v2026.01.30", "v2026.02.01"], ["v2026.01.30", "v2026.02.01"]),
    # Documented (update-strategies.md, "How tags are ordered"): a missing number counts as 0.
    (
        "docs: a missing numeric segment counts as 0",
        "vYY.MINOR.MICRO",
        ["v26.4.1", "v26.4", "v26"],
        ["v26", "v26.4", "v26.4.1"],
    ),
    (
        "docs: optional trailing segments",
        "vYYYY-0M-0D-MICRO",
        ["v2026-02-01", "v2026-01-30-10", "v2026-01-30", "v2026-01-30-2"],
        ["v2026-01-30", "v2026-01-30-2", "v2026-01-30-10", "v2026-02-01"],
    ),
    # imagedrift: a component the upstream cannot read (beyond Go's int) is skipped, never first.
    (
        "imagedrift: twenty digits are skipped",
        "vYYYY.0M.MICRO",
        ["v2026.01.99999999999999999999", "v2026.01.3", "v2026.01.9223372036854775807"],
        ["v2026.01.3", "v2026.01.9223372036854775807"],
    ),
]


@pytest.mark.parametrize(
    ("name", "layout", "tags", "oldest_first"), SORT_ROWS, ids=[r[0] for r in SORT_ROWS]
)
def test_order(name: str, layout: str, tags: list[str], oldest_first: list[str]) -> None:
    """Test_SortByCalVer, row by row: the same order, newest first, whatever order the
    registry lists the tags in."""
    policy = CalverPolicy(layout)
    newest_first = list(reversed(oldest_first))
    assert policy.ordered(tags) == newest_first, name
    assert policy.ordered(list(reversed(tags))) == newest_first, name
    assert policy.latest(tags) == (newest_first[0] if newest_first else None)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("rc2", "rc10", -1),  # compareNatural's own doc comment
        ("rc1", "rc01", 0),  # same value: the tags then rank by name
        ("rc", "rc1", -1),
        ("a-", "a1", -1),  # byte order, not run order: '-' < '1'
        ("beta", "alpha", 1),
        ("1" + "0" * 40, "9", 1),  # digits compared as digits: no overflow
    ],
)
def test_compare_natural(a: str, b: str, expected: int) -> None:
    """The upstream's compareNatural (calver.go), used for modifiers."""
    assert compare_natural(a, b) == expected
    assert compare_natural(b, a) == -expected


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("2024.10.01", "2024.09.01", False),
        ("2024.09.01", "2024.10.01", True),
        ("2024.9.1", "2024.09.01", True),  # does not fit the layout: never rolled
        ("2024.10.01", "latest", False),  # running tag outside the layout: nothing to violate
        ("2024.10.01", "2024.10.01", False),
        ("v2024.10.01", "2024.10.01", False),  # the same version, spelled differently
    ],
)
def test_is_downgrade(candidate: str, current: str, expected: bool) -> None:
    """imagedrift's downgrade rule over the upstream's order."""
    assert CalverPolicy().is_downgrade(candidate, current) is expected


def test_skip_reasons_name_what_cannot_be_read() -> None:
    """imagedrift: plan and status say why a tag is skipped, in the upstream's words."""
    policy = CalverPolicy("vYYYY.0M.MICRO")
    assert policy.skip_reason("v2026.01.3") is None
    assert (
        policy.skip_reason("latest")
        == "does not fit layout vYYYY.0M.MICRO: expected 'v' at 'latest'"
    )
    assert (
        policy.skip_reason("v2026.13.1")
        == "does not fit layout vYYYY.0M.MICRO: month 13 is out of range"
    )
    too_large = policy.skip_reason("v2026.01.99999999999999999999")
    assert too_large is not None and "MICRO is 20 digits long, which is too large" in too_large


def test_from_a_spec() -> None:
    assert policy_from_spec({"calver": {}}).describe() == "calver YYYY.0M.0D"
    assert policy_from_spec({"calver": {"layout": "vDD-MM-YY"}}).describe() == "calver vDD-MM-YY"
    with pytest.raises(InvalidReference, match="must contain a year field"):
        policy_from_spec({"calver": {"layout": "MM.DD"}})
