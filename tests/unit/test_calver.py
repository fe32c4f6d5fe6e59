"""Calendar versions, from calver.org's token table (https://calver.org/#scheme) and the
``calver`` strategy proposed for Argo CD Image Updater (argoproj-labs/argocd-image-updater
issue #1768, ``registry-scanner/pkg/tag/calver_test.go`` there): default layout
``YYYY.0M.0D``, tags that do not fit are skipped, a release is newer than its modifiers,
modifiers in natural order, equal versions by tag string."""

from __future__ import annotations

import pytest

from imagedrift.core.calver import DEFAULT_LAYOUT, CalverPolicy, Layout
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.errors import InvalidReference


@pytest.mark.parametrize(
    ("label", "layout", "tags", "expected"),
    [
        (
            "default layout: months are numbers, not strings",
            "",
            ["2024.09.01", "2024.10.01", "2023.12.31"],
            ["2024.10.01", "2024.09.01", "2023.12.31"],
        ),
        (
            "tags that do not fit are skipped",
            DEFAULT_LAYOUT,
            ["latest", "2024.9.1", "2024.09.01", "1.2.3", "2024.09.01.1"],
            ["2024.09.01"],
        ),
        ("no real date: Feb 30 is skipped", "", ["2024.02.30", "2024.02.29"], ["2024.02.29"]),
        ("no leap day in 2023", "", ["2023.02.29", "2023.02.28"], ["2023.02.28"]),
        ("month 13 is skipped", "", ["2024.13.01", "2024.12.01"], ["2024.12.01"]),
        (
            "a leading v is read when the layout starts with a token",
            "",
            ["v2024.11.05", "2024.10.01"],
            ["v2024.11.05", "2024.10.01"],
        ),
        (
            "a literal prefix in the layout",
            "vYYYY-0M-0D",
            ["v2024-01-30", "v2024-09-01", "2024-12-01"],
            ["v2024-09-01", "v2024-01-30"],
        ),
        (
            "Argo CD #1768: short months order by value",
            "vYYYY-MM-DD",
            ["v2026-1-30", "v2026-09-01", "v2026-10-2"],
            ["v2026-10-2", "v2026-09-01", "v2026-1-30"],
        ),
        (
            "short year is years since 2000",
            "YY.MM.MICRO",
            ["24.1.3", "24.10.0", "24.2.11", "106.1.0", "9.12.7"],
            ["106.1.0", "24.10.0", "24.2.11", "24.1.3", "9.12.7"],
        ),
        (
            "zero-padded short year",
            "0Y.0M",
            ["06.01", "16.12", "106.03", "6.01"],
            ["106.03", "16.12", "06.01"],
        ),
        (
            "fixed-width tokens need no separator",
            "YYYY0M0D",
            ["20240530", "20241301", "2024053", "20231231"],
            ["20240530", "20231231"],
        ),
        (
            "weeks",
            "YYYY.0W",
            ["2024.52", "2024.09", "2024.54", "2025.01"],
            ["2025.01", "2024.52", "2024.09"],
        ),
        (
            "a release is newer than its modifiers; rc2 before rc10",
            "YYYY.0M.0D-MODIFIER",
            ["2024.05.01-rc2", "2024.05.01", "2024.05.01-rc10", "2024.04.30"],
            ["2024.05.01", "2024.05.01-rc10", "2024.05.01-rc2", "2024.04.30"],
        ),
        (
            "MAJOR before the date ranks first",
            "MAJOR.YYYY.0M",
            ["1.2025.01", "2.2024.01", "1.2024.12"],
            ["2.2024.01", "1.2025.01", "1.2024.12"],
        ),
        (
            "equal versions rank by tag string",
            "YYYY.MM.DD",
            ["2024.5.1", "2024.05.01"],
            ["2024.5.1", "2024.05.01"],
        ),
        ("duplicates once", "", ["2024.01.01", "2024.01.01"], ["2024.01.01"]),
        ("empty", "", [], []),
    ],
)
def test_ordered(label: str, layout: str, tags: list[str], expected: list[str]) -> None:
    policy = CalverPolicy(layout)
    assert policy.ordered(tags) == expected, label
    assert policy.ordered(list(reversed(tags))) == expected, label
    assert policy.latest(tags) == (expected[0] if expected else None)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("MM.YYYY", "year, then month or week, then day"),
        ("YYYY.WW.DD", "week (WW, 0W) cannot be combined"),
        ("YYYY.0W.0M", "week (WW, 0W) cannot be combined"),
        ("YYYY.DD", "a day (DD, 0D) needs a month"),
        ("0M.0D", "needs a year"),
        ("YYYYMMDD", "MM has no fixed width"),
        ("YYMM", "YY has no fixed width"),
        ("MICRO.MAJOR.YYYY", "MAJOR, MINOR and MICRO must appear in that order"),
        ("YYYY.MODIFIER.MICRO", "MODIFIER must be the last token"),
        ("YYYY.0M.YYYY", "year appears more than once"),
        ("YYYY.0M.0D.1", "'.1' is neither a token nor a separator"),
        ("YYYY/0M", "'/' is neither a token nor a separator"),
        ("YYYY." + "x" * 200, "at most 128"),
    ],
)
def test_layouts_that_cannot_be_read_back_are_refused(layout: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message.replace("(", r"\(").replace(")", r"\)")):
        Layout.parse(layout)


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("2024.10.01", "2024.09.01", False),
        ("2024.09.01", "2024.10.01", True),
        ("2024.9.1", "2024.09.01", True),  # does not fit the layout: never rolled
        ("2024.10.01", "latest", False),  # running tag outside the layout: nothing to violate
        ("2024.10.01", "2024.10.01", False),
    ],
)
def test_is_downgrade(candidate: str, current: str, expected: bool) -> None:
    assert CalverPolicy().is_downgrade(candidate, current) is expected


def test_skip_reasons_say_what_is_wrong() -> None:
    policy = CalverPolicy()
    assert policy.skip_reason("2024.10.01") is None
    assert policy.skip_reason("latest") == "does not fit layout YYYY.0M.0D"
    assert policy.skip_reason("2024.02.30") == "names no real date under layout YYYY.0M.0D"


def test_from_a_spec() -> None:
    assert policy_from_spec({"calver": {}}).describe() == "calver YYYY.0M.0D"
    assert policy_from_spec({"calver": {"layout": "YY.MM"}}).describe() == "calver YY.MM"
    with pytest.raises(InvalidReference, match="needs a year"):
        policy_from_spec({"calver": {"layout": "MM.DD"}})
