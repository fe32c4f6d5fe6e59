"""Properties of the tag policies that must hold for any tags and any well-formed range."""

from __future__ import annotations

import contextlib
import itertools
from functools import cmp_to_key

import semver
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imagedrift.core.goregex import compile_go
from imagedrift.core.tagpolicy import (
    RegexPolicy,
    SemverPolicy,
    VersionRange,
    expand_template,
    parse_version,
)
from imagedrift.errors import InvalidReference, TagPolicyFailed

# Per test, not a global profile: other test modules keep their own settings.
PROPERTY = settings(deadline=None, max_examples=200)

_IDENT_CHARS = "0123456789abcxyzABC-"
numbers = st.integers(min_value=0, max_value=30)
identifiers = st.one_of(
    st.integers(min_value=0, max_value=40).map(str),
    st.text(_IDENT_CHARS, min_size=1, max_size=6).filter(
        lambda s: not (s.isdigit() and len(s) > 1 and s[0] == "0")
    ),
)
dotted = st.lists(identifiers, min_size=1, max_size=3).map(".".join)


@st.composite
def versions(draw: st.DrawFn) -> semver.Version:
    return semver.Version(
        draw(numbers),
        draw(numbers),
        draw(numbers),
        draw(st.none() | dotted),
        draw(st.none() | dotted),
    )


@st.composite
def version_tags(draw: st.DrawFn) -> str:
    """Tags that are versions, spelled the ways registries carry them."""
    v = draw(versions())
    prefix = draw(st.sampled_from(["", "v"]))
    if v.prerelease is None and v.build is None and draw(st.booleans()):
        short = draw(st.sampled_from([f"{v.major}", f"{v.major}.{v.minor}"]))
        return prefix + short
    return prefix + str(v)


noise_tags = st.sampled_from(["latest", "stable", "main", "1.2.3.4", "sha-3f2a1bc", "v", "1.0.0p"])
tag_lists = st.lists(version_tags() | noise_tags, max_size=25)

_part = st.sampled_from(["0", "1", "2", "3", "10", "x", "X", "*"])


@st.composite
def constraints(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["", "=", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^"]))
    parts = draw(st.lists(_part, min_size=1, max_size=3))
    pre = draw(st.sampled_from(["", "", "", "-0", "-rc.1", "-alpha"]))
    space = draw(st.sampled_from(["", " "]))
    return f"{op}{space}{draw(st.sampled_from(['', 'v']))}{'.'.join(parts)}{pre}"


@st.composite
def ranges(draw: st.DrawFn) -> str:
    alternatives = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        text = draw(constraints())
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            text += draw(st.sampled_from([" ", ", ", ",", "  "])) + draw(constraints())
        alternatives.append(text)
    return " || ".join(alternatives)


def _cmp(a: semver.Version, b: semver.Version) -> int:
    return int(a.compare(b))


@PROPERTY
@given(versions())
def test_version_round_trips(version: semver.Version) -> None:
    parsed = parse_version(str(version))
    assert parsed is not None
    assert parsed.to_tuple() == version.to_tuple()
    with_v = parse_version(f"v{version}")
    assert with_v is not None
    assert with_v.to_tuple() == version.to_tuple()


@PROPERTY
@given(st.text(max_size=40))
def test_parse_version_never_raises(text: str) -> None:
    parse_version(text)


@PROPERTY
@given(st.text(max_size=60))
def test_range_parse_raises_only_invalid_reference(text: str) -> None:
    with contextlib.suppress(InvalidReference):
        VersionRange.parse(text)


@PROPERTY
@given(ranges(), tag_lists)
def test_latest_satisfies_and_is_newest(text: str, tags: list[str]) -> None:
    try:
        policy = SemverPolicy(text)
    except InvalidReference:  # e.g. a wildcard major with a number after it is still fine
        return
    latest = policy.latest(tags)
    satisfying = [v for t in tags if (v := parse_version(t)) is not None and policy.range.allows(v)]
    if latest is None:
        assert satisfying == []
        return
    best = parse_version(latest)
    assert best is not None
    assert policy.range.allows(best)
    assert all(_cmp(best, v) >= 0 for v in satisfying)
    for tag in policy.ordered(tags):
        assert not policy.is_downgrade(latest, tag)


@PROPERTY
@given(tag_lists)
def test_star_never_yields_a_prerelease(tags: list[str]) -> None:
    for text in ("*", "x", ">=0", "~*", "1.x || 2.x"):
        for tag in SemverPolicy(text).ordered(tags):
            version = parse_version(tag)
            assert version is not None
            assert not version.prerelease


@PROPERTY
@given(tag_lists)
def test_ordered_is_a_total_order(tags: list[str]) -> None:
    policy = SemverPolicy(">=0.0.0-0")
    ordered = policy.ordered(tags)
    assert len(ordered) == len(set(ordered))
    assert policy.ordered(list(reversed(tags))) == ordered
    assert policy.ordered(ordered) == ordered
    parsed = [parse_version(t) for t in ordered]
    for newer, older in itertools.pairwise(parsed):
        assert newer is not None and older is not None
        assert _cmp(newer, older) >= 0

    # agrees with sorting by precedence, then by tag string
    def by_precedence_then_tag(a: str, b: str) -> int:
        va, vb = parse_version(a), parse_version(b)
        assert va is not None and vb is not None
        return _cmp(va, vb) or (a > b) - (a < b)

    expected = sorted(ordered, key=cmp_to_key(by_precedence_then_tag), reverse=True)
    assert ordered == expected


@PROPERTY
@given(tag_lists, tag_lists)
def test_is_downgrade_is_antisymmetric(left: list[str], right: list[str]) -> None:
    policy = SemverPolicy("*")
    for a in left[:5]:
        for b in right[:5]:
            if parse_version(a) is not None and parse_version(b) is not None:
                assert not (policy.is_downgrade(a, b) and policy.is_downgrade(b, a))


regex_patterns = st.sampled_from(
    [r".*", r"^v(?P<n>\d+)", r"(\d+)\.(\d+)", r"-(?P<ts>[0-9]+)$", r"(a)?(b)?", r"^$"]
)
templates = st.text(alphabet="$ {}_0123abn-ts", max_size=12)


@PROPERTY
@given(regex_patterns, st.text(max_size=30), templates)
def test_expand_never_raises(pattern: str, tag: str, template: str) -> None:
    match = compile_go(pattern).search(tag)
    if match is not None:
        assert isinstance(expand_template(template, match), str)


@PROPERTY
@given(
    st.lists(st.text(max_size=20), max_size=20),
    st.sampled_from(["alphabetical", "numerical"]),
    st.sampled_from(["asc", "desc"]),
)
def test_regex_policy_orders_arbitrary_tags_or_fails_closed(
    tags: list[str], order: str, direction: str
) -> None:
    policy = RegexPolicy(r"(?P<v>[0-9.eE+-]+)", "$v", order, direction)
    try:
        ordered = policy.ordered(tags)
    except TagPolicyFailed:
        # Only a numerical order fails, and only over a kept tag that is no number.
        assert order == "numerical"
        assert any(policy.skip_reason(t) for t in tags if policy.extracted(t) is not None)
        return
    assert policy.latest(tags) == (ordered[0] if ordered else None)
    assert set(ordered) <= set(tags)
    for tag in ordered:
        assert not policy.is_downgrade(ordered[0], tag)


@PROPERTY
@given(st.lists(st.integers(min_value=-(10**12), max_value=10**12), min_size=1, max_size=20))
def test_numerical_matches_flux_float_order(values: list[int]) -> None:
    tags = [str(v) for v in values]
    asc = RegexPolicy(".*", "", "numerical", "asc").latest(tags)
    desc = RegexPolicy(".*", "", "numerical", "desc").latest(tags)
    assert asc is not None and desc is not None
    assert float(asc) == max(float(t) for t in tags)
    assert float(desc) == min(float(t) for t in tags)


# -- ACR patch tags over a semver policy (core.patchtags) -------------------------------------

patch_numbers = st.integers(min_value=0, max_value=1200)


@st.composite
def patch_tags(draw: st.DrawFn) -> str:
    """A semver original, maybe with an incremental suffix (above 999: no patch) or -patched."""
    core = ".".join(str(draw(numbers)) for _ in range(3))
    kind = draw(st.sampled_from(["original", "incremental", "floating"]))
    if kind == "incremental":
        return f"{core}-{draw(patch_numbers.filter(lambda n: n > 0))}"
    return f"{core}-patched" if kind == "floating" else core


@PROPERTY
@given(st.lists(patch_tags(), min_size=1, max_size=25, unique=True), st.data())
def test_no_patch_tag_is_ordered_above_the_running_tag_when_it_is_older(
    tags: list[str], data: st.DataObject
) -> None:
    """Everything the candidate search would inspect before giving up (the tags ordered
    ahead of the first downgrade) is newer than the running tag, or is the running tag
    itself (re-pushed, a rebuild), for either patch mode."""
    from imagedrift.core import patchtags

    policy = SemverPolicy(">=0.0.0")
    mode = data.draw(st.sampled_from(patchtags.MODES))
    ordered = patchtags.with_patches(policy.ordered(patchtags.originals(tags)), tags, mode)
    assume(ordered)  # e.g. only a floating tag while following incremental patches
    running = data.draw(st.sampled_from(ordered))

    def downgrade(candidate: str) -> bool:
        return patchtags.is_downgrade(candidate, running, policy.is_downgrade)

    ahead = list(itertools.takewhile(lambda t: not downgrade(t), ordered))
    assert running in ahead, "the running tag is no downgrade of itself"
    ahead.remove(running)
    position = ordered.index(running)
    assert set(ahead) <= set(ordered[:position]), "only tags ordered before it are newer"
    # An oracle independent of the code under test: semver order of the originals, then
    # the patch number.
    r_original, r_number = patchtags.split(running)
    for tag in ahead:
        c_original, c_number = patchtags.split(tag)
        order = semver.Version.parse(c_original).compare(r_original)
        assert order > 0 or (order == 0 and c_number > r_number), (tag, running)
