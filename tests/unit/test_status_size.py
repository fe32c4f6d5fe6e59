"""Status stays small at any scale: the byte budget holds at 10,000 workloads, and a status
is written as the merge patch of what changed."""

from __future__ import annotations

from imagedrift.core.mergepatch import diff
from imagedrift.core.status_size import fit, size
from imagedrift.engine.check import MAX_ATTENTION, STATUS_BUDGET

DIGEST = "sha256:" + "e" * 64


def fleet_status(workloads: int) -> dict[str, object]:
    """A status as a check of ``workloads`` drifted workloads composes it, before fitting:
    a full lineage (20 entries) each with its rollouts (at most 100 each)."""
    rollout = {
        "workload": "deployment/some-namespace/some-workload-name-0000",
        "container": "app",
        "previousImage": f"registry.example.com/team/app@{DIGEST}",
        "result": "Complete",
        "reason": "3 of 3 replicas updated and available",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:01:00Z",
    }
    lineage = [
        {
            "baseDigest": DIGEST,
            "app": "registry.example.com/team/app",
            "appDigest": DIGEST,
            "tag": "1.0.1",
            "verdict": "Passed",
            "reasons": ["lineage: annotation says base " + DIGEST] * 3,
            "validatedAt": "2026-01-01T00:00:00Z",
            "rollouts": [dict(rollout) for _ in range(100)],
        }
        for _ in range(20)
    ]
    items = [
        {
            "workload": f"deployment/some-namespace/workload-{i:05d}",
            "container": "app",
            "image": f"registry.example.com/team/app@{DIGEST}",
            "digest": DIGEST,
            "baseDigest": DIGEST,
            "state": "Drifted",
            "reason": "x" * 300,
        }
        for i in range(workloads)
    ][:MAX_ATTENTION]
    return {
        "observedGeneration": 1,
        "base": {"image": "registry.example.com/base/python", "digest": DIGEST},
        "workloads": {"optedIn": workloads, "drifted": workloads, "items": items},
        "lineage": lineage,
        "conditions": [{"type": "Ready", "status": "True", "reason": "UpToDate"}],
    }


def test_status_of_10000_workloads_fits_the_budget() -> None:
    raw = fleet_status(10_000)
    assert size(raw) > STATUS_BUDGET, "the fixture must need trimming to prove anything"
    fitted = fit(raw, STATUS_BUDGET)
    assert size(fitted) <= STATUS_BUDGET
    assert fitted["workloads"]["optedIn"] == 10_000
    assert fitted["base"] == raw["base"] and fitted["conditions"] == raw["conditions"]
    assert len(fitted["lineage"]) == 20, "entries survive; their oldest rollouts go first"
    omitted = fitted["lineage"][0]
    assert omitted["rolloutsOmitted"] + len(omitted["rollouts"]) == 100


def test_a_status_under_budget_is_left_alone() -> None:
    small = fleet_status(3)
    small["lineage"] = []
    assert fit(small, STATUS_BUDGET) == small


def test_even_a_tiny_budget_keeps_counts_base_and_conditions() -> None:
    fitted = fit(fleet_status(100), 4096)
    assert fitted["workloads"]["optedIn"] == 100
    assert fitted["base"]["digest"] == DIGEST
    assert fitted["conditions"]


def test_merge_patch_sends_only_what_changed_and_nulls_what_went() -> None:
    old = {"a": 1, "waves": {"healthySince": "t", "done": 1}, "items": [1, 2], "gone": "x"}
    new = {"a": 1, "waves": {"done": 2}, "items": [1]}
    assert diff(old, new) == {
        "gone": None,
        "waves": {"healthySince": None, "done": 2},
        "items": [1],
    }
    assert diff(new, new) == {}
