"""The locks in ``requirements/`` are what runs: every locked package is installed at its
locked version, the locks satisfy what ``pyproject.toml`` asks for, and the image's lock
(runtime) takes the same versions as the one the tests ran with (dev)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(name: str) -> dict[str, tuple[str, str]]:
    """{canonical name: (version, marker)} from a lock, every pin hashed."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = (match.group(2), match.group(3) or "")
    hashed = len(re.findall(r"^\S+==\S+.*\\\n(?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+", text, re.M))
    assert hashed == len(pins), f"{name}: every pin carries its hashes"
    return pins


DEV = locked("dev.txt")
RUNTIME = locked("runtime.txt")


def applies(marker: str) -> bool:
    return not marker or Marker(marker).evaluate()


# Pins with a marker that does not hold here (colorama on Windows) are not installed.
HERE = sorted(name for name, (_, marker) in DEV.items() if applies(marker))


@pytest.mark.parametrize("name", HERE)
def test_installed_is_locked(name: str) -> None:
    assert metadata.version(name) == DEV[name][0]


def test_the_image_takes_the_tested_versions() -> None:
    assert set(RUNTIME) <= set(DEV)
    assert {n: DEV[n][0] for n in RUNTIME} == {n: v for n, (v, _) in RUNTIME.items()}


def test_the_locks_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    wanted = {
        "runtime.txt": [*project["project"]["dependencies"], *build],
        "dev.txt": [
            *project["project"]["dependencies"],
            *project["project"]["optional-dependencies"]["dev"],
            *build,
        ],
    }
    for lock, requirements in wanted.items():
        pins = {"runtime.txt": RUNTIME, "dev.txt": DEV}[lock]
        for text in requirements:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock} lacks {req.name}: run make lock"
            assert req.specifier.contains(pins[name][0], prereleases=True), (
                f"{lock} has {req.name}=={pins[name][0]}, pyproject asks {req.specifier}: "
                "run make lock"
            )
