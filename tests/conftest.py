"""Session-wide test wiring.

Each harness area keeps its pytest fixtures in ``tests/harness/fixtures_<area>.py``; they
are all loaded here so one control plane and one registry serve the whole session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.harness import leaks

# Files whose tests run pods on the real node (``real_node``). One machine has one such
# node at a time: parallel workers each have a control plane of their own, but two
# kubelets named ``localhost`` would share the host's links and the leak check's view of
# them. These files go to one worker together, whatever the distribution.
REAL_NODE_FILES = "test_real_node"

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


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with every real-node file one unit of work (see
    ``REAL_NODE_FILES``)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

    class OneRealNode(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if Path(path).name.startswith(REAL_NODE_FILES):
                return REAL_NODE_FILES
            return str(super()._split_scope(nodeid))

    return OneRealNode(config, log)


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
