"""Go's own ``regexp``, asked from Python: the oracle the operator's RE2 layer is held to.

``tests/oracle/goregexp`` is a small Go program (standard library only) that reads one
``{"pattern", "tags", "template"}`` JSON line per question and answers whether the pattern
compiles and, per tag, ``FindStringSubmatchIndex`` and ``Expand``. It is built once with
the Go toolchain the control plane is built with, cached outside the work tree by Go
version and source digest (the same cache root as ``tests/controlplane/build.sh``), and
asked every question in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.controlplane import REPO_ROOT, HarnessError

SOURCE = REPO_ROOT / "tests" / "oracle" / "goregexp"
BUILD_TIMEOUT = 300.0
ASK_TIMEOUT = 120.0


@dataclass(frozen=True)
class Question:
    pattern: str
    tags: tuple[str, ...]
    template: str = ""


@dataclass(frozen=True)
class Answer:
    """``error`` is Go's refusal ("" when the pattern compiles); ``names`` SubexpNames();
    per tag, the submatch indexes (None: no match) and the expanded template."""

    error: str
    names: tuple[str, ...]
    matches: tuple[tuple[int, ...] | None, ...]
    expanded: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.error


def _cache_root() -> Path:
    configured = os.environ.get("IMAGEDRIFT_CACHE")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagedrift"


def build() -> Path:
    """The oracle's binary, built if this Go version has not built this source yet."""
    go = shutil.which("go")
    if go is None:
        raise HarnessError("the Go regexp oracle needs Go (the control plane's toolchain)")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True, env=env, timeout=60
    ).stdout.strip()
    digest = hashlib.sha256()
    for path in sorted(SOURCE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    binary = _cache_root() / "oracle" / f"goregexp-{version}-{digest.hexdigest()[:16]}"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + f".{os.getpid()}.tmp")
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), "."],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(f"building the Go regexp oracle failed:\n{result.stderr[-3000:]}")
    partial.replace(binary)  # atomic: a concurrent build of the same source is harmless
    return binary


def ask(binary: Path, questions: Sequence[Question]) -> list[Answer]:
    """Every question to one oracle process; the answers in the same order."""
    lines = "".join(
        json.dumps({"pattern": q.pattern, "tags": list(q.tags), "template": q.template}) + "\n"
        for q in questions
    )
    result = subprocess.run(
        [str(binary)], input=lines, capture_output=True, text=True, timeout=ASK_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise HarnessError(f"the Go regexp oracle failed: {result.stderr[-2000:]}")
    answers = [_answer(json.loads(line)) for line in result.stdout.splitlines()]
    if len(answers) != len(questions):
        raise HarnessError(f"asked {len(questions)} questions, got {len(answers)} answers")
    return answers


def _answer(raw: dict[str, Any]) -> Answer:
    if not raw.get("ok"):
        return Answer(str(raw.get("error") or "refused"), (), (), ())
    matches = tuple(None if m is None else tuple(m) for m in raw.get("matches") or [])
    return Answer("", tuple(raw.get("names") or ()), matches, tuple(raw.get("expanded") or ()))
