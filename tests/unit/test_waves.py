"""Table tests of the wave planner and maintenance windows (imagedrift.core.waves)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedrift.core.rollout_spec import LabelSelector, MaintenanceWindow, RolloutSpec, Wave
from imagedrift.core.waves import in_window, plan, wave_sizes

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
CANARY = (Wave(count=1), Wave(percent=50), Wave(percent=100))


def spec(**kw: object) -> RolloutSpec:
    return RolloutSpec(LabelSelector(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "waves", "total", "expected"),
    [
        ("no waves: everyone", (), 5, [5]),
        ("canary, half, all", CANARY, 5, [1, 3, 5]),
        ("canary, half, all of 1", CANARY, 1, [1]),
        ("percent rounds up", (Wave(percent=10),), 5, [1, 5]),
        ("count larger than total", (Wave(count=10),), 3, [3]),
        (
            "short last wave gets an implicit 100%",
            (Wave(count=1), Wave(percent=40)),
            10,
            [1, 4, 10],
        ),
        (
            "non-increasing waves collapse",
            (Wave(count=2), Wave(count=1), Wave(percent=100)),
            4,
            [2, 4],
        ),
        ("nothing to roll", CANARY, 0, []),
    ],
)
def test_wave_sizes(label: str, waves: tuple[Wave, ...], total: int, expected: list[int]) -> None:
    assert wave_sizes(waves, total) == expected


FIVE = ["d/ns/a", "d/ns/b", "d/ns/c", "d/ns/d", "d/ns/e"]


@pytest.mark.parametrize(
    ("label", "waiting", "rolling", "done", "rollout", "start", "held_reason", "wave"),
    [
        ("no waves: all at once", FIVE, [], [], spec(), FIVE, None, 1),
        ("canary first, by name", FIVE, [], [], spec(waves=CANARY), FIVE[:1], "later wave", 1),
        (
            "canary still rolling: wait",
            FIVE[1:],
            FIVE[:1],
            [],
            spec(waves=CANARY),
            [],
            "previous wave to be healthy",
            2,
        ),
        (
            "canary done, pause not passed",
            FIVE[1:],
            [],
            [(FIVE[0], NOW - timedelta(seconds=5))],
            spec(waves=CANARY, pause_between_waves=30.0),
            [],
            "pause of 30s",
            2,
        ),
        (
            "canary done, pause passed: next wave to 3",
            FIVE[1:],
            [],
            [(FIVE[0], NOW - timedelta(seconds=31))],
            spec(waves=CANARY, pause_between_waves=30.0),
            FIVE[1:3],
            "later wave",
            2,
        ),
        (
            "mid-wave (capped before): continue without a pause",
            FIVE[2:],
            FIVE[1:2],
            [(FIVE[0], NOW)],
            spec(waves=CANARY, pause_between_waves=30.0),
            FIVE[2:3],
            "later wave",
            2,
        ),
        (
            "maxConcurrent caps starts",
            FIVE,
            [],
            [],
            spec(max_concurrent=2),
            FIVE[:2],
            "maxConcurrent 2",
            1,
        ),
        (
            "maxConcurrent counts what is in flight",
            FIVE[2:],
            FIVE[:2],
            [],
            spec(max_concurrent=2),
            [],
            "maxConcurrent 2",
            1,
        ),
        (
            "outside the window: nothing",
            FIVE,
            [],
            [],
            spec(maintenance_windows=(MaintenanceWindow("0 2 * * *", 3600.0),)),
            [],
            "outside maintenance windows; next opens at 2024-06-02T02:00:00+00:00",
            1,
        ),
        (
            "inside the window",
            FIVE,
            [],
            [],
            spec(maintenance_windows=(MaintenanceWindow("30 11 * * *", 3600.0),)),
            FIVE,
            None,
            1,
        ),
        ("nothing waiting", [], FIVE[:1], [], spec(waves=CANARY), [], None, 1),
    ],
)
def test_plan(
    label: str,
    waiting: list[str],
    rolling: list[str],
    done: list[tuple[str, datetime]],
    rollout: RolloutSpec,
    start: list[str],
    held_reason: str | None,
    wave: int,
) -> None:
    result = plan(waiting, rolling, done, rollout, NOW)
    assert list(result.start) == start
    assert set(result.held) == set(waiting) - set(start)
    if held_reason:
        assert all(held_reason in why for why in result.held.values()), result.held
    if waiting:
        assert result.wave == wave


def test_pause_and_window_say_when_to_look_again() -> None:
    finished = NOW - timedelta(seconds=5)
    held = plan(["b"], [], [("a", finished)], spec(waves=CANARY, pause_between_waves=30.0), NOW)
    assert held.retry_at == finished + timedelta(seconds=30)
    closed = spec(maintenance_windows=(MaintenanceWindow("0 2 * * *", 60.0),))
    assert plan(["a"], [], [], closed, NOW).retry_at == datetime(2024, 6, 2, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "windows", "now", "open_"),
    [
        ("none: always", (), NOW, True),
        ("at the start", (MaintenanceWindow("0 12 * * *", 60.0),), NOW, True),
        ("just before the end", (MaintenanceWindow("59 11 * * *", 61.0),), NOW, True),
        ("just after the end", (MaintenanceWindow("59 11 * * *", 60.0),), NOW, False),
        ("before the start", (MaintenanceWindow("1 12 * * *", 3600.0),), NOW, False),
        ("spans midnight", (MaintenanceWindow("0 23 * * *", 14 * 3600.0),), NOW, True),
        (
            "time zone: 14:00 in Berlin is 12:00 UTC in summer",
            (MaintenanceWindow("0 14 * * *", 60.0, "Europe/Berlin"),),
            NOW,
            True,
        ),
        (
            "time zone: 12:00 in Berlin is not 12:00 UTC",
            (MaintenanceWindow("0 12 * * *", 60.0, "Europe/Berlin"),),
            NOW,
            False,
        ),
        (
            "weekdays only, on a Saturday",
            (MaintenanceWindow("0 0 * * 1-5", 86400.0),),
            NOW,
            False,
        ),
        (
            "any of several",
            (MaintenanceWindow("0 3 * * *", 60.0), MaintenanceWindow("0 11 * * *", 7200.0)),
            NOW,
            True,
        ),
    ],
)
def test_in_window(
    label: str, windows: tuple[MaintenanceWindow, ...], now: datetime, open_: bool
) -> None:
    assert in_window(windows, now)[0] is open_
