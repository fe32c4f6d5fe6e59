"""Who selects a workload (engine.policy_index): found by the workload's policy label for
policies that select by their own name, matched one by one only for custom selectors."""

from __future__ import annotations

from typing import Any

from imagedrift.core.workloads import WorkloadRef
from imagedrift.engine.policy_index import PolicyIndex

BASE = {"image": "reg.example/base", "tag": "1"}
REF = WorkloadRef("Deployment", "shop", "web")


def policy(name: str, selector: dict[str, Any] | None = None, **rollout: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"base": BASE}
    if selector is not None or rollout:
        spec["rollout"] = {**({"selector": selector} if selector is not None else {}), **rollout}
    return {"metadata": {"name": name, "generation": 1}, "spec": spec}


def workload(**labels: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": labels},
    }


def index(*bodies: dict[str, Any]) -> PolicyIndex:
    out = PolicyIndex()
    for body in bodies:
        out.put(body)
    return out


def test_own_label_policies_are_found_by_the_label() -> None:
    idx = index(*(policy(f"p{i}") for i in range(50)))
    w = workload(**{"imagedrift.io/policy": "p7"})
    assert idx.reindex(REF, None, w) == {"p7"}
    assert idx.selecting(w) == ["p7"]
    assert idx.reindex(REF, w, workload(**{"imagedrift.io/policy": "p9"})) == {"p7", "p9"}


def test_custom_selectors_are_matched_and_can_overlap() -> None:
    idx = index(
        policy("own"),
        policy("team", {"matchLabels": {"team": "a"}}),
        policy("elsewhere", {"matchLabels": {"team": "a"}}, namespaces=["other"]),
        policy("tier", {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
    )
    w = workload(**{"imagedrift.io/policy": "own", "team": "a"})
    assert idx.reindex(REF, None, w) == {"own", "team", "elsewhere"}
    assert idx.selecting(w) == ["own", "team"]  # namespaces narrow the selection
    assert idx.reindex(REF, None, workload(tier="x")) == {"tier"}


def test_a_policy_that_changes_its_selector_moves_between_the_two() -> None:
    idx = index(policy("p", {"matchLabels": {"team": "a"}}))
    assert idx.selecting(workload(team="a")) == ["p"]
    idx.put({**policy("p"), "metadata": {"name": "p", "generation": 2}})
    assert idx.selecting(workload(team="a")) == []
    assert idx.selecting(workload(**{"imagedrift.io/policy": "p"})) == ["p"]
    idx.forget("p")
    assert idx.selecting(workload(**{"imagedrift.io/policy": "p"})) == []


def test_an_invalid_policy_selects_nothing() -> None:
    idx = index({"metadata": {"name": "bad"}, "spec": {"base": {}}})
    assert idx.reindex(REF, None, workload(**{"imagedrift.io/policy": "bad"})) == set()
