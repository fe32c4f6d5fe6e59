"""Metrics accounting from what a check returned."""

from __future__ import annotations

from datetime import UTC, datetime

from imagedrift.core.conditions import ready, reconciling, stalled
from imagedrift.metrics import Metrics

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_conditions_workloads_verdicts_and_rollouts() -> None:
    m = Metrics()
    before = {"base": {"digest": "sha256:old"}, "lineage": []}
    after = {
        "base": {
            "digest": "sha256:new",
            "changedAt": "2026-01-01T11:59:00Z",
            "created": "2026-01-01T11:00:00Z",
        },
        "workloads": {"states": {"UpToDate": 1, "Drifted": 2}},
        "lineage": [{"baseDigest": "sha256:new", "appDigest": "sha256:app", "verdict": "Passed"}],
    }
    m.observe(
        "p",
        before,
        after,
        ready("UpToDate", ""),
        [("RolloutStarted", "Normal"), ("RolloutComplete", "Normal")],
        NOW,
    )
    m.observe("q", {}, {}, stalled("InvalidSpec", "bad"), [], NOW)
    m.observe("r", {}, {}, reconciling("RolloutInProgress", ""), [], NOW)
    assert value(m, "imagedrift_policies", condition="Ready") == 1
    assert value(m, "imagedrift_policies", condition="Stalled") == 1
    assert value(m, "imagedrift_policies", condition="Reconciling") == 1
    assert value(m, "imagedrift_workloads", policy="p", state="Drifted") == 2
    assert value(m, "imagedrift_gate_verdicts_total", policy="p", verdict="Passed") == 1
    assert value(m, "imagedrift_rollouts_total", policy="p", outcome="complete") == 1
    assert value(m, "imagedrift_base_to_rollout_seconds_sum") == 60
    assert value(m, "imagedrift_base_detection_seconds_sum") == 3600
    # The same lineage entry seen again is not a new verdict.
    m.observe("p", after, after, ready("UpToDate", ""), [], NOW)
    assert value(m, "imagedrift_gate_verdicts_total", policy="p", verdict="Passed") == 1
    m.forget("q")
    assert value(m, "imagedrift_policies", condition="Stalled") == 0


def test_registry_requests_and_throttles() -> None:
    m = Metrics()
    m.on_request("r.io", "HEAD", "/v2/a/manifests/1", 200)
    m.on_request("r.io", "HEAD", "/v2/a/manifests/1", 429)
    m.on_request("r.io", "GET", "/v2/", 0)
    assert (
        value(m, "imagedrift_registry_requests_total", registry="r.io", method="HEAD", code="200")
        == 1
    )
    assert value(m, "imagedrift_registry_throttled_total", registry="r.io") == 1
    assert (
        value(m, "imagedrift_registry_requests_total", registry="r.io", method="GET", code="error")
        == 1
    )
