"""Properties (hypothesis): no calver or regex policy ever orders an unreadable tag above a
readable one (issue #23: one odd tag must never pin every workload of a policy).

"Unreadable" is what the policy itself says it cannot use (``skip_reason`` is not None):
a tag outside the layout, a component beyond what the upstream reads (twenty digits), a
tag the pattern does not match. Such a tag is never ordered at all, never ``latest``, and
always a downgrade; the readable tags keep their order whatever odd tags come with them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imagedrift.core.calver import CalverPolicy
from imagedrift.core.tagpolicy import RegexPolicy

PROPERTY = settings(max_examples=300, deadline=None)

LAYOUTS = ["YYYY.0M.0D", "vDD-MM-YYYY", "vYY.MINOR.MICRO", "vYYYY-0M-0D-MODIFIER", "YYYY.0W"]
digits = st.text(alphabet="0123456789", min_size=1, max_size=22)
calver_tags = st.one_of(
    st.builds(lambda y, m, d: f"{y}.{m}.{d}", digits, digits, digits),
    st.builds(lambda d, m, y: f"v{d}-{m}-{y}", digits, digits, digits),
    st.builds(lambda y, a, b: f"v{y}.{a}.{b}", digits, digits, digits),
    st.builds(lambda y, m, d, x: f"v{y}-{m}-{d}-{x}", digits, digits, digits, digits),
    st.text(alphabet="0123456789.-_vrcaV", max_size=30),
)


def _check(policy: CalverPolicy | RegexPolicy, tags: list[str]) -> None:
    readable = [t for t in dict.fromkeys(tags) if policy.skip_reason(t) is None]
    ordered = policy.ordered(tags)
    assert sorted(ordered) == sorted(readable)  # every readable tag, and nothing else
    if ordered:
        assert policy.latest(tags) == ordered[0]
        assert policy.skip_reason(ordered[0]) is None
    unreadable = [t for t in tags if policy.skip_reason(t) is not None]
    for odd in unreadable:
        for good in readable:
            assert policy.is_downgrade(odd, good)  # never rolled onto
    # Odd tags change nothing about the order of the readable ones.
    assert policy.ordered([*unreadable, *readable]) == policy.ordered(readable)


@PROPERTY
@given(st.sampled_from(LAYOUTS), st.lists(calver_tags, max_size=12))
def test_calver_never_orders_an_unreadable_tag(layout: str, tags: list[str]) -> None:
    _check(CalverPolicy(layout), tags)


@PROPERTY
@given(st.lists(digits, min_size=1, max_size=8))
def test_a_twenty_digit_component_never_outranks_a_real_tag(components: list[str]) -> None:
    policy = CalverPolicy("vYYYY.0M.MICRO")
    tags = [f"v2026.01.{c}" for c in components] + ["v2026.01.3"]
    ordered = policy.ordered(tags)
    assert all(int(t.rsplit(".", 1)[1]) <= 2**63 - 1 for t in ordered)
    assert "v2026.01.3" in ordered


PATTERNS = [r"^v(?P<n>[0-9]+)$", r"^build-([0-9]+)-[a-f0-9]+$", r"[[:^digit:]]", r"^\pN+$"]
regex_tags = st.text(alphabet="0123456789abcdefv-._", max_size=25)


@PROPERTY
@given(
    st.sampled_from(PATTERNS),
    st.sampled_from(["asc", "desc"]),
    st.lists(regex_tags, max_size=12),
)
def test_an_alphabetical_regex_policy_never_orders_an_unmatched_tag(
    pattern: str, direction: str, tags: list[str]
) -> None:
    _check(RegexPolicy(pattern, order="alphabetical", direction=direction), tags)
