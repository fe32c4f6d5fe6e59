"""Session-wide test wiring.

Each harness area keeps its pytest fixtures in ``tests/harness/fixtures_<area>.py``; they
are all loaded here so one control plane and one registry serve the whole session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.harness.{path.stem}"
    for path in (Path(__file__).parent / "harness").glob("fixtures_*.py")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` run after all others (in their collected order): they check
    what the whole session left behind."""
    last = [item for item in items if item.get_closest_marker("last")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("last")] + last
