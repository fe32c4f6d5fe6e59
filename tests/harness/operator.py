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
        self.metrics_port = 0

    def start(self) -> OperatorProcess:
        self.starts += 1
        self.health_port = free_port()
        # Always on: tests count checks there (see checks()); a test may name its own port.
        self.metrics_port = int(self.env.get("IMAGEDRIFT_METRICS_PORT") or free_port())
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
            "IMAGEDRIFT_METRICS_ADDR": "127.0.0.1",
            **self.env,
            "IMAGEDRIFT_METRICS_PORT": str(self.metrics_port),
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

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample /metrics serves now: {(name, labels): value}."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        assert self.metrics_port, "this operator runs without metrics"
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def checks(self, policy: str) -> int:
        """How many checks of ``policy`` this run of the operator finished (any result):
        what a test waits on to prove that nothing happened over real checks."""
        return int(
            sum(
                value
                for (name, labels), value in self.metrics().items()
                if name == "imagedrift_checks_total" and ("policy", policy) in labels
            )
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as when a node dies."""
        if self.proc:
            self.proc.kill()
            self.proc.stop()

    def stop(self) -> str | None:
        """SIGTERM, as the kubelet stops a pod; what went wrong if it did not exit 0 within
        10 s (a pod would be killed, skipping the Lease hand-over), else None."""
        if self.proc:
            return self.proc.stop(grace=10)
        return None

    def log(self) -> str:
        """Everything every start of this operator logged."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )
