"""Prometheus metrics: what an SRE graphs and alerts on.

Everything is derived from what a check returned (status, events) and from the registry
clients' request hook, so the engine stays free of metric calls.

    imagedrift_policies{condition}                       policies by kstatus condition
    imagedrift_workloads{policy,state}                   opted-in containers by drift state
    imagedrift_registry_requests_total{registry,method,code}
    imagedrift_registry_throttled_total{registry}        429 answers
    imagedrift_registry_budget_exhausted_total{registry} requests held back by our own budget
    imagedrift_base_detection_seconds                    base image created -> digest change seen
    imagedrift_base_to_rollout_seconds                   base change seen -> rollout complete
    imagedrift_rollouts_total{policy,outcome}            started / complete / rolled_back
    imagedrift_gate_verdicts_total{policy,verdict}       Passed / Rejected, once per candidate
    imagedrift_checks_total{policy,result}               ok / error / stalled
    imagedrift_git_commits_total{repository}             write-back commits pushed
    imagedrift_git_push_retries_total{repository}        pushes refused: another writer first
    imagedrift_git_write_failures_total{repository}      writes that failed (retried next check)
    imagedrift_git_pull_requests_total{repository,action} pull requests opened / updated
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from imagedrift.core.conditions import Condition, parse_timestamp
from imagedrift.core.decide import State


def redact_url(url: str) -> str:
    """A repository URL as a label: without any user information (never a credential)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/") if sep else ("", "", url)
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 604800)
WORKLOAD_STATES = tuple(state.value for state in State)  # every state decide() gives


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.policies = Gauge(
            "imagedrift_policies", "Policies by condition.", ["condition"], registry=r
        )
        self.workloads = Gauge(
            "imagedrift_workloads",
            "Opted-in containers by drift state.",
            ["policy", "state"],
            registry=r,
        )
        self.requests = Counter(
            "imagedrift_registry_requests_total",
            "Registry HTTP requests.",
            ["registry", "method", "code"],
            registry=r,
        )
        self.throttled = Counter(
            "imagedrift_registry_throttled_total", "Registry 429 answers.", ["registry"], registry=r
        )
        self.budget_exhausted = Counter(
            "imagedrift_registry_budget_exhausted_total",
            "Registry requests held back because the per-registry request budget was spent.",
            ["registry"],
            registry=r,
        )
        self.detection = Histogram(
            "imagedrift_base_detection_seconds",
            "From the base image's creation to imagedrift seeing its digest.",
            buckets=BUCKETS,
            registry=r,
        )
        self.to_rollout = Histogram(
            "imagedrift_base_to_rollout_seconds",
            "From seeing a new base digest to a workload's completed rollout onto it.",
            buckets=BUCKETS,
            registry=r,
        )
        self.rollouts = Counter(
            "imagedrift_rollouts_total", "Rollouts by outcome.", ["policy", "outcome"], registry=r
        )
        self.verdicts = Counter(
            "imagedrift_gate_verdicts_total",
            "Validation verdicts on candidates.",
            ["policy", "verdict"],
            registry=r,
        )
        self.checks = Counter(
            "imagedrift_checks_total", "Policy checks by result.", ["policy", "result"], registry=r
        )
        self.git_commits = Counter(
            "imagedrift_git_commits_total",
            "GitOps write-back commits pushed.",
            ["repository"],
            registry=r,
        )
        self.git_retries = Counter(
            "imagedrift_git_push_retries_total",
            "Write-back pushes refused because another writer pushed first (then retried).",
            ["repository"],
            registry=r,
        )
        self.git_failures = Counter(
            "imagedrift_git_write_failures_total",
            "Write-back writes that failed (server down, credentials refused, conflicts).",
            ["repository"],
            registry=r,
        )
        self.git_pull_requests = Counter(
            "imagedrift_git_pull_requests_total",
            "Write-back pull requests opened or updated.",
            ["repository", "action"],
            registry=r,
        )
        self.leading = Gauge(
            "imagedrift_leader",
            "1 while this replica holds the Lease and works; 0 on a standby.",
            registry=r,
        )
        self._conditions: dict[str, str] = {}
        self._lock = threading.Lock()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def on_request(self, host: str, method: str, path: str, status: int) -> None:
        """The registry clients' request hook (``status`` 0: no response)."""
        self.requests.labels(host, method, str(status or "error")).inc()
        if status == 429:
            self.throttled.labels(host).inc()

    def on_git_write(self, url: str, outcome: str) -> None:
        """GitWriter's hook: a commit pushed, a write failed, or a push refused because
        another writer got in first (told as it happens)."""
        counter = {
            "committed": self.git_commits,
            "failed": self.git_failures,
            "refused": self.git_retries,
        }[outcome]
        counter.labels(redact_url(url)).inc()

    def on_pull_request(self, url: str, action: str) -> None:
        self.git_pull_requests.labels(redact_url(url), action).inc()

    def on_budget_exhausted(self, host: str) -> None:
        self.budget_exhausted.labels(host).inc()

    def forget(self, policy: str) -> None:
        with self._lock:
            self._conditions.pop(policy, None)
            self._publish_conditions()
        for state in WORKLOAD_STATES:
            with contextlib.suppress(KeyError):  # never observed: nothing to remove
                self.workloads.remove(policy, state)

    def _publish_conditions(self) -> None:
        counts: dict[str, int] = {}
        for condition in self._conditions.values():
            counts[condition] = counts.get(condition, 0) + 1
        for condition in ("Ready", "NotReady", "Reconciling", "Stalled"):
            self.policies.labels(condition).set(counts.get(condition, 0))

    def observe(
        self,
        policy: str,
        previous: Mapping[str, Any],
        status: Mapping[str, Any],
        conditions: Iterable[Condition],
        events: Iterable[tuple[str, str]],
        now: datetime,
    ) -> None:
        """Account for one check: ``previous``/``status`` are the status before and after,
        ``events`` the (reason, type) pairs posted on the policy."""
        by_type = {c.type: c for c in conditions}
        if by_type.get("Stalled") and by_type["Stalled"].status:
            condition, result = "Stalled", "stalled"
        elif by_type.get("Reconciling") and by_type["Reconciling"].status:
            condition, result = "Reconciling", "ok"
        elif by_type.get("Ready") and by_type["Ready"].status:
            condition, result = "Ready", "ok"
        else:
            condition, result = "NotReady", "error"
        self.checks.labels(policy, result).inc()
        with self._lock:
            self._conditions[policy] = condition
            self._publish_conditions()

        by_state = (status.get("workloads") or {}).get("states") or {}
        for state in WORKLOAD_STATES:
            self.workloads.labels(policy, state).set(int(by_state.get(state) or 0))

        base, before = status.get("base") or {}, previous.get("base") or {}
        if base.get("digest") and before.get("digest") and base["digest"] != before["digest"]:
            created = parse_timestamp(str(base.get("created", "")))
            if created:
                self.detection.observe(max((now - created).total_seconds(), 0.0))

        seen = {(e.get("baseDigest"), e.get("appDigest")) for e in previous.get("lineage") or []}
        for entry in status.get("lineage") or []:
            if (entry.get("baseDigest"), entry.get("appDigest")) not in seen:
                self.verdicts.labels(policy, str(entry.get("verdict", "Unknown"))).inc()

        for reason, _ in events:
            outcome = {
                "RolloutStarted": "started",
                "RolloutComplete": "complete",
                "RolledBack": "rolled_back",
            }
            if reason in outcome:
                self.rollouts.labels(policy, outcome[reason]).inc()
            if reason == "RolloutComplete":
                changed = parse_timestamp(str(base.get("changedAt", "")))
                if changed:
                    self.to_rollout.observe(max((now - changed).total_seconds(), 0.0))
