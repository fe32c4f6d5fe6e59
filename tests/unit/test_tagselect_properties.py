"""Properties over every tag policy kind: no candidate is ever older than the running tag.

For each kind, tags are drawn from what that kind reads (and from noise it must skip), a
running tag is drawn from them, and every candidate ``tagselect.select`` returns is checked
against an oracle that does not use the code under test to order: ``semver``'s own
comparison, integer tuples for calendar versions, the build times themselves.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import semver
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imagedrift.core.spec import parse_policy
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.tagselect import select

PROPERTY = settings(deadline=None, max_examples=200)

small = st.integers(min_value=0, max_value=12)
noise = st.sampled_from(["latest", "main", "edge", "1", "x.sig", "v", "2024", "1.2.3.4"])


@st.composite
def versions(draw: st.DrawFn) -> str:
    core = ".".join(str(draw(small)) for _ in range(draw(st.integers(2, 3))))
    pre = draw(st.sampled_from(["", "", "-rc.1", "-rc.2", "-beta"]))
    return draw(st.sampled_from(["", "v"])) + core + pre


@st.composite
def dates(draw: st.DrawFn) -> str:
    day = datetime(2020, 1, 1) + timedelta(days=draw(st.integers(0, 2000)))
    return f"{day.year}.{day.month:02d}.{day.day:02d}"


def spec(tags: dict[str, Any]) -> Any:
    return parse_policy(
        "p",
        {
            "base": {"image": "r.example/base", "tag": "1"},
            "app": {"tags": tags, "maxCandidates": 100},
        },
    )


def oracle_version(tag: str) -> semver.Version:
    """``1``, ``1.2`` and ``v1.2.3`` as full versions (Masterminds' lenient reading)."""
    core, _, pre = tag.removeprefix("v").partition("-")
    parts = core.split(".")
    text = ".".join([*parts, *["0"] * (3 - len(parts))]) + (f"-{pre}" if pre else "")
    return semver.Version.parse(text)


def check_candidates(tags: list[str], running: str, kind: dict[str, Any], newer: Any) -> None:
    s = spec(kind)
    selection = select(tags, running, policy_from_spec(kind), s)
    for candidate in selection.candidates:
        if candidate != running:
            assert newer(candidate, running), (kind, candidate, running, tags)


@PROPERTY
@given(st.lists(st.one_of(versions(), noise), min_size=1, max_size=20, unique=True), st.data())
def test_semver_never_offers_an_older_version(tags: list[str], data: st.DataObject) -> None:
    running = data.draw(st.sampled_from(tags))
    assume(running != "1.2.3.4" and re.fullmatch(r"v?[0-9.]+(-[a-z.0-9]+)?", running))
    check_candidates(
        tags,
        running,
        {"semver": {"range": ">=0.0.0-0"}},
        lambda c, r: c != "1.2.3.4" and oracle_version(c).compare(oracle_version(r)) >= 0,
    )


@PROPERTY
@given(
    st.lists(st.one_of(versions(), noise), min_size=1, max_size=20, unique=True),
    st.sampled_from(["all", "major", "minor", "patch"]),
    st.booleans(),
    st.data(),
)
def test_keel_never_offers_an_older_version_or_one_beyond_its_level(
    tags: list[str], level: str, match_pre: bool, data: st.DataObject
) -> None:
    running = data.draw(st.sampled_from([t for t in tags if t not in ("1", "1.2.3.4")] or tags))
    is_version = running != "1.2.3.4" and re.fullmatch(r"v?[0-9.]+(-[a-z.0-9]+)?", running)
    assume(is_version and running.count(".") >= 1)
    old = oracle_version(running)

    def allowed(candidate: str, _running: str) -> bool:
        new = oracle_version(candidate)
        if new.compare(old) <= 0:
            return False
        if level == "minor" and new.major != old.major:
            return False
        if level == "patch" and (new.major, new.minor) != (old.major, old.minor):
            return False
        return level == "all" or not match_pre or new.prerelease == old.prerelease

    kind = {"keel": {"level": level, "matchPreRelease": match_pre}}
    check_candidates(tags, running, kind, allowed)


@PROPERTY
@given(st.lists(st.one_of(dates(), noise), min_size=1, max_size=20, unique=True), st.data())
def test_calver_never_offers_an_older_date(tags: list[str], data: st.DataObject) -> None:
    dated = [t for t in tags if re.fullmatch(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}", t)]
    assume(dated)
    running = data.draw(st.sampled_from(dated))

    def key(tag: str) -> tuple[int, ...]:
        return tuple(int(p) for p in tag.split("."))

    check_candidates(tags, running, {"calver": {}}, lambda c, r: key(c) >= key(r))


@PROPERTY
@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        st.one_of(st.none(), st.integers(0, 10_000)),
        min_size=1,
        max_size=15,
    ),
    st.data(),
)
def test_newest_build_never_offers_an_older_build(
    minutes: dict[str, int | None], data: st.DataObject
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    times = {t: None if m is None else start + timedelta(minutes=m) for t, m in minutes.items()}
    running = data.draw(st.sampled_from(sorted(times)))
    policy = policy_from_spec({"newestBuild": {}}).with_times(times)  # type: ignore[attr-defined]
    s = spec({"newestBuild": {}})
    selection = select(sorted(times), running, policy, s)
    known = times[running]
    for candidate in selection.candidates:
        built = times[candidate]
        assert built is not None, "a tag without a build time is never a candidate"
        if known is not None and candidate != running:
            assert built >= known
