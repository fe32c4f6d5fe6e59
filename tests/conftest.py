"""Session-wide test wiring.

Each harness area keeps its pytest fixtures in ``tests/harness/fixtures_<area>.py``; they
are all loaded here so one control plane and one registry serve the whole session.
"""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(
    f"tests.harness.{path.stem}"
    for path in (Path(__file__).parent / "harness").glob("fixtures_*.py")
)
