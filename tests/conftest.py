"""Session-wide test wiring.

Each harness area keeps its pytest fixtures in ``tests/harness/fixtures_<area>.py``; they
are all loaded here so one control plane and one registry serve the whole session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.harness import leaks

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


def pytest_configure(config: pytest.Config) -> None:
    """Where parallel workers leave what the leak check must read (the controller makes
    it before the workers start; they inherit the environment)."""
    if not hasattr(config, "workerinput") and leaks.EXPORT_DIR_ENV not in os.environ:
        os.environ[leaks.EXPORT_DIR_ENV] = tempfile.mkdtemp(prefix="imagedrift-leaks-")
        config.stash[_LEAKS_DIR] = os.environ[leaks.EXPORT_DIR_ENV]


def pytest_sessionfinish(session: pytest.Session) -> None:
    leaks.export()


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_LEAKS_DIR, "")
    if directory:  # test secrets in it: gone with the run
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(leaks.EXPORT_DIR_ENV, None)


_LEAKS_DIR = pytest.StashKey[str]()
