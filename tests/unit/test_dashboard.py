"""The Grafana dashboard queries only metrics the operator exports, with their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from imagedrift.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "imagedrift-dashboard.json"


def exported() -> dict[str, set[str]]:
    """metric sample name -> label names, from a Metrics registry with one of each sample."""
    metrics = Metrics()
    metrics.on_request("r", "HEAD", "/", 429)
    metrics.rollouts.labels("p", "complete").inc()
    metrics.verdicts.labels("p", "Passed").inc()
    metrics.checks.labels("p", "ok").inc()
    metrics.workloads.labels("p", "Drifted").set(1)
    metrics.policies.labels("Ready").set(1)
    metrics.detection.observe(1)
    metrics.to_rollout.observe(1)
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_every_query_uses_exported_metrics_and_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(imagedrift_[a-z_]+)", expr):
            assert name in known, f"{name} in {expr!r} is not exported"
            used.add(name.removesuffix("_bucket"))
            for label in re.findall(r"([a-z_]+)=~?\"", expr):
                assert label in known[name], f"{name} has no label {label!r}"
    families = {n.removesuffix("_total").removesuffix("_bucket") for n in used}
    assert {
        "imagedrift_policies",
        "imagedrift_workloads",
        "imagedrift_rollouts",
        "imagedrift_registry_requests",
        "imagedrift_registry_throttled",
        "imagedrift_base_detection_seconds",
        "imagedrift_base_to_rollout_seconds",
        "imagedrift_gate_verdicts",
    } <= families
