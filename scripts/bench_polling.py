"""Benchmark: what a poll costs as policies and workloads grow.

    make bench            (or: .venv/bin/python scripts/bench_polling.py --policies 200 --bases 5)

Publishes M base images and one app per base to a real registry on 127.0.0.1, declares N
policies spread over the M bases with W up-to-date workloads each (pinned by digest, as
imagedrift leaves them), and runs poll rounds through the real engine and OCI client. The
Kubernetes side is an in-memory port: this measures the operator's own cost per poll.
Prints registry requests per round, CPU time per policy check, and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.registry import Registry  # noqa: E402

from imagedrift.core.spec import parse_policy  # noqa: E402
from imagedrift.core.workloads import WorkloadRef  # noqa: E402
from imagedrift.engine.caches import BaseWatcher, ImageCache  # noqa: E402
from imagedrift.engine.check import PolicyChecker  # noqa: E402
from imagedrift.engine.registries import RegistryPool  # noqa: E402
from imagedrift.registry.push import Image, Layer, base_marks, push  # noqa: E402


class MemoryKube:
    """Workloads kept in a dict; patches applied in memory (none happen in steady state)."""

    def __init__(self) -> None:
        self.objects: dict[WorkloadRef, dict[str, Any]] = {}
        self.patches = 0

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        return self.objects.get(ref)

    def patch_workload(self, ref: WorkloadRef, patch: Any) -> dict[str, Any]:
        self.patches += 1
        return self.objects[ref]

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--bases", type=int, default=5)
    parser.add_argument("--workloads", type=int, default=5, help="opted-in workloads per policy")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with Registry(Path(tempfile.mkdtemp(prefix="imagedrift-bench-"))) as registry:
        client = registry.client()
        apps = []
        for b in range(args.bases):
            base = Image(layers=(Layer.from_files({"os": f"base {b}"}),))
            digest = push(client, f"bench/base{b}", base, "1")
            app = base.derive(Layer.from_files({"app": f"app {b}"}), annotations=base_marks(digest))
            apps.append(
                f"{registry.host}/bench/app{b}@{push(client, f'bench/app{b}', app, '1.0.0')}"
            )
        client.close()

        requests: Counter[str] = Counter()
        clock = [0.0]
        kube = MemoryKube()
        pool = RegistryPool(
            kube,
            namespace="bench",
            on_request=lambda host, method, path, status: requests.update([method]),
        )
        checker = PolicyChecker(pool, kube, ImageCache(), BaseWatcher(clock=lambda: clock[0]))
        policies = []
        for p in range(args.policies):
            b = p % args.bases
            spec = {
                "base": {
                    "image": f"{registry.host}/bench/base{b}",
                    "tag": "1",
                    "interval": "60s",
                    "insecure": True,
                }
            }
            policy = parse_policy(f"p{p}", spec)
            workloads = []
            for w in range(args.workloads):
                body = {
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": {
                        "name": f"w{p}-{w}",
                        "namespace": "bench",
                        "labels": {"imagedrift.io/policy": f"p{p}"},
                        "resourceVersion": "1",
                        "generation": 1,
                    },
                    "spec": {
                        "replicas": 1,
                        "template": {"spec": {"containers": [{"name": "app", "image": apps[b]}]}},
                    },
                }
                kube.objects[WorkloadRef("Deployment", "bench", body["metadata"]["name"])] = body
                workloads.append(body)
            policies.append((policy, {"metadata": {"generation": 1}, "status": {}}, workloads))

        print(
            f"{args.policies} policies over {args.bases} bases, {args.workloads} workloads each "
            f"({args.policies * args.workloads} workloads), registry {registry.host}"
        )
        print(f"{'round':>5} {'registry requests':>18} {'CPU ms/check':>13} {'wall s':>7}")
        for round_ in range(args.rounds):
            requests.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            for policy, body, workloads in policies:
                result = checker.check(policy, body, workloads, datetime.now(UTC), clock[0])
                body["status"] = result.status
                if result.counts.get("upToDate") != args.workloads:
                    raise SystemExit(f"unexpected state for {policy.name}: {result.counts}")
            cpu_ms = (time.process_time() - cpu) * 1000 / len(policies)
            detail = ", ".join(f"{m} {n}" for m, n in sorted(requests.items()))
            print(
                f"{round_:>5} {sum(requests.values()):>8} ({detail}) {cpu_ms:>10.2f} "
                f"{time.perf_counter() - wall:>7.2f}"
            )
            clock[0] += 60.0  # the next interval
        pool.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"patches: {kube.patches}; peak RSS of this process: {peak:.0f} MiB")
        print(
            f"steady state: {args.bases} distinct bases -> "
            f"expect {args.bases} registry requests per round"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
