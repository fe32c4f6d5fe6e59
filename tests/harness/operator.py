"""Runs the operator the way users do: ``kopf run -m imagedrift.wiring`` in its own process.

Tests kill it (SIGKILL, as a crashed pod) and start it again to prove restarts are safe.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness import leaks
from tests.harness.procs import ManagedProcess, free_port, wait_for


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        debug: bool = False,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.debug = debug  # kopf --debug: every logger at DEBUG
        self.proc: ManagedProcess | None = None
        self.starts = 0
        self.health_port = 0

    def start(self) -> OperatorProcess:
        self.starts += 1
        self.health_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "-m",
            "imagedrift.wiring",
            "--all-namespaces",
            "--standalone",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            *(["--debug"] if self.debug else []),
        ]
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "IMAGEDRIFT_LEASE": "",  # no election unless a test asks for one
            "IMAGEDRIFT_NAMESPACE": "imagedrift-system",
            "IMAGEDRIFT_METRICS_PORT": "0",
            **self.env,
        }
        leaks.remember(env.get("IMAGEDRIFT_WEBHOOK_SECRET"), "webhook secret")
        self.proc = ManagedProcess(f"operator-{self.starts}", argv, self.log_dir, env=env)
        leaks.watch(self.proc.log_path)
        wait_for(self._healthy, what="the operator's liveness endpoint", timeout=60)
        return self

    def _healthy(self) -> bool:
        import httpx

        assert self.proc is not None
        self.proc.check_alive()
        return (
            httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2).status_code == 200
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as when a node dies."""
        if self.proc:
            self.proc.kill()
            self.proc.stop()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=10)

    def log(self) -> str:
        """Everything every start of this operator logged."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )
