"""Processes the harness starts: free loopback ports, bounded waits, and teardown that
leaves nothing behind (also on failure, Ctrl-C or interpreter exit)."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

LOOPBACK = "127.0.0.1"
T = TypeVar("T")

_running: list[ManagedProcess] = []


class HarnessError(RuntimeError):
    """A harness piece is missing or did not start; the message says which and why."""


def proc_status(pid: int, key: str) -> int:
    """A number from ``/proc/<pid>/status``: ``VmRSS``/``VmHWM`` in KiB, ``Threads`` as is."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise HarnessError(f"/proc/{pid}/status has no {key}")


# Parallel test workers (pytest-xdist: gw0, gw1, ...) each take ports from a block of their
# own below the kernel's ephemeral range (32768 and up): two workers asking the kernel for
# "any free port" at once could both be told the same one between bind and use.
_PORT_BLOCK = 2000
_FIRST_PORT = 12000
_next_port = itertools.count()


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (under a parallel worker,
    one from that worker's own block)."""
    index = _worker_index()
    if index is not None:
        first = _FIRST_PORT + index * _PORT_BLOCK
        for _ in range(_PORT_BLOCK):
            port = first + next(_next_port) % _PORT_BLOCK
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue  # in use (or in TIME_WAIT): the next one
                return port
        raise HarnessError(f"no free port left in worker {index}'s block")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until it returns something truthy; bounded in time and attempts.

    Exceptions from ``probe`` count as "not yet" and the last one is reported.
    """
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / interval) + 1)
    last_error: BaseException | None = None
    for _ in range(attempts):
        try:
            result = probe()
            if result:
                return result
        except HarnessError:
            raise  # a piece died: waiting longer cannot help
        except Exception as exc:  # any other failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def wait_while_alive(
    processes: Iterable[ManagedProcess],
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    tail: int = 20,
) -> T:
    """``wait_for`` that gives up at once, with the log tail, when one of ``processes``
    dies, and reports every process's log tail on a timeout."""
    watched = list(processes)
    dead: list[ManagedProcess] = []

    def guarded() -> T | bool | None:
        for proc in watched:
            if not proc.alive():
                dead.append(proc)
                return True
        return probe()

    try:
        result = wait_for(guarded, what=what, timeout=timeout, interval=0.1)
    except TimeoutError as exc:
        tails = "\n".join(
            f"--- {proc.name} ({proc.log_path}):\n{proc.log_tail(tail)}" for proc in watched
        )
        raise HarnessError(f"{exc}\n{tails}") from exc
    if dead:
        dead[0].check_alive()
    return result  # type: ignore[return-value]  # not a bool: no process died


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped for sure."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise HarnessError(
                f"{self.name} exited with code {self.proc.returncode}; "
                f"last log lines:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL the whole group at once (used to simulate a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> str | None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds. Returns what
        went wrong with a process that was running (it outlived ``grace``, or exited
        with an error), or None when it ended cleanly or had already ended."""
        trouble = None
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=grace)
                if code != 0:
                    trouble = f"{self.name} exited with code {code} on SIGTERM"
            except subprocess.TimeoutExpired:
                self.kill()
                trouble = f"{self.name} was still running {grace:.0f}s after SIGTERM"
        else:
            # The leader is gone but group members may remain.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        if self in _running:
            _running.remove(self)
        return trouble


def stop_all() -> None:
    for proc in reversed(list(_running)):
        with contextlib.suppress(Exception):
            proc.stop(grace=2.0)


def _on_sigterm(signum: int, frame: object) -> None:
    """CI and timeouts stop runs with SIGTERM, which skips atexit: clean up first."""
    stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


atexit.register(stop_all)
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)
