"""Per-source token buckets of the push-event receiver: ``now`` is an argument."""

from __future__ import annotations

import pytest

from imagedrift.events.ratelimit import Bucket, SourceLimits, source_key, take


@pytest.mark.parametrize(
    ("label", "bucket", "now", "expected_bucket", "expected_wait"),
    [
        ("new source starts full", None, 5.0, Bucket(39.0, 5.0), 0.0),
        ("one token left", Bucket(1.0, 0.0), 0.0, Bucket(0.0, 0.0), 0.0),
        ("empty: wait for one token", Bucket(0.0, 0.0), 0.0, Bucket(0.0, 0.0), 0.05),
        ("half a token: wait for the rest", Bucket(0.0, 0.0), 0.025, Bucket(0.5, 0.025), 0.025),
        ("refilled by elapsed time", Bucket(0.0, 0.0), 1.0, Bucket(19.0, 1.0), 0.0),
        ("never above burst", Bucket(0.0, 0.0), 1000.0, Bucket(39.0, 1000.0), 0.0),
        ("clock went backwards: no refill", Bucket(0.5, 10.0), 9.0, Bucket(0.5, 9.0), 0.025),
    ],
)
def test_take(
    label: str,
    bucket: Bucket | None,
    now: float,
    expected_bucket: Bucket,
    expected_wait: float,
) -> None:
    after, wait = take(bucket, now, rate=20.0, burst=40.0)
    assert after.tokens == pytest.approx(expected_bucket.tokens), label
    assert after.at == expected_bucket.at, label
    assert wait == pytest.approx(expected_wait), label


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # same /64, same bucket
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_source_key(address: str, key: str) -> None:
    assert source_key(address) == key


def test_a_burst_then_the_rate_per_source() -> None:
    limits = SourceLimits(rate=2.0, burst=3)
    granted = [limits.check("a", 0.0) for _ in range(5)]
    assert granted[:3] == [0.0, 0.0, 0.0]
    assert granted[3] == pytest.approx(0.5) and granted[4] == pytest.approx(0.5)
    assert limits.check("b", 0.0) == 0.0  # another source has its own bucket
    assert limits.check("a", 0.5) == 0.0  # one token came back
    assert limits.check("a", 0.5) > 0


def test_idle_sources_are_forgotten() -> None:
    limits = SourceLimits(rate=1.0, burst=2)
    for i in range(100):
        limits.check(f"10.0.0.{i}", 0.0)
    assert len(limits) == 100
    limits.check("10.0.1.1", 2.0)  # everyone else has refilled by now
    assert len(limits) == 1


def test_the_table_is_bounded_and_drops_the_least_recently_seen() -> None:
    limits = SourceLimits(rate=0.001, burst=1, max_sources=3)
    for source in ("a", "b", "c"):
        assert limits.check(source, 0.0) == 0.0
    assert limits.check("a", 0.0) > 0  # a is empty and now the most recently seen
    assert limits.check("d", 0.0) == 0.0  # b goes to make room
    assert len(limits) == 3
    assert limits.check("b", 0.0) == 0.0  # forgotten: starts over, full
    assert limits.check("a", 0.0) > 0  # kept: still empty


@pytest.mark.parametrize(
    ("rate", "burst", "max_sources"), [(0.0, 1, 1), (-1.0, 1, 1), (1.0, 0.5, 1), (1.0, 1, 0)]
)
def test_limits_must_make_sense(rate: float, burst: float, max_sources: int) -> None:
    with pytest.raises(ValueError):
        SourceLimits(rate, burst, max_sources=max_sources)
