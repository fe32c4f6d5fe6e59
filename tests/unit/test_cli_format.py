"""The CLI's documents and tables, rendered from fixed policy and workload bodies."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagedrift.cli import lineage, main, plan, render, status
from imagedrift.cli.cluster import CliError, parse_workload
from imagedrift.core.conditions import Condition
from imagedrift.core.gitops_source import GitSource
from imagedrift.core.setters import ImageChange
from imagedrift.core.spec import parse_policy
from imagedrift.core.workloads import (
    GitRecord,
    RolloutRecord,
    WorkloadRef,
    WorkloadState,
    image_patch,
)
from imagedrift.engine.check import CheckResult
from imagedrift.engine.git_preview import PreviewCommit, unified_diff
from imagedrift.engine.git_writes import GitWrite, GitWritten, Written
from imagedrift.git.repository import Author

NOW = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
BASE_OLD, BASE_NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
APP_OLD, APP_NEW = "sha256:" + "c" * 64, "sha256:" + "d" * 64
WEB = "deployment/shop/web"
APP = "registry.example/shop/web"

POLICY: dict[str, Any] = {
    "apiVersion": "imagedrift.io/v1alpha1",
    "kind": "ImagePolicy",
    "metadata": {"name": "python", "generation": 3},
    "spec": {
        "base": {"image": "registry.example/base/python", "tag": "3.12-slim"},
        "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
        "rollout": {"suspend": False, "containers": ["app"]},
    },
    "status": {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "WaitingForRebuild",
                "message": "1 of 2 workload(s) on an old base; no validated rebuild to roll yet",
                "lastTransitionTime": "2024-05-01T09:00:00Z",
                "observedGeneration": 3,
            }
        ],
        "base": {
            "image": "registry.example/base/python",
            "tag": "3.12-slim",
            "digest": BASE_NEW,
            "shortDigest": "sha256:bbbbbbbbbbbb",
            "checkedAt": "2024-05-01T09:59:30Z",
            "changedAt": "2024-05-01T08:00:00Z",
            "previousDigests": [BASE_OLD],
        },
        "workloads": {
            "optedIn": 2,
            "upToDate": 1,
            "drifted": 1,
            "rollingOut": 0,
            "items": [
                {
                    "workload": WEB,
                    "container": "app",
                    "image": f"{APP}:1.0.0",
                    "digest": APP_OLD,
                    "baseDigest": BASE_OLD,
                    "state": "Drifted",
                    "reason": "built on base digest sha256:aaaaaaaaaaaa, not the current "
                    "sha256:bbbbbbbbbbbb; candidate 1.0.1 rejected: no signature attached",
                }
            ],
        },
        "candidate": {
            "image": f"{APP}:1.0.1",
            "digest": APP_NEW,
            "tag": "1.0.1",
            "verdict": "Rejected",
            "reasons": ["no signature attached"],
        },
        "lineage": [],
        "lastError": "",
    },
}

STALLED: dict[str, Any] = {
    "metadata": {"name": "broken", "generation": 2},
    "spec": {"base": {"image": "registry.example/base/node", "semverRange": ">=20 <21"}},
    "status": {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "bad"},
            {
                "type": "Stalled",
                "status": "True",
                "reason": "InvalidSpec",
                "message": "spec.app.tags: choose exactly one of semver, regex or sameTag",
            },
        ],
        "lastError": "spec.app.tags: choose exactly one of semver, regex or sameTag",
    },
}


def rolled_policy() -> dict[str, Any]:
    body = copy.deepcopy(POLICY)
    body["status"]["workloads"] = {
        "optedIn": 1,
        "upToDate": 1,
        "drifted": 0,
        "rollingOut": 0,
        "items": [
            {
                "workload": WEB,
                "container": "app",
                "image": f"{APP}@{APP_NEW}",
                "digest": APP_NEW,
                "baseDigest": BASE_NEW,
                "state": "UpToDate",
                "reason": "annotation names the current base",
            }
        ],
    }
    body["status"]["lineage"] = [
        {
            "baseDigest": BASE_NEW,
            "app": APP,
            "appDigest": APP_NEW,
            "tag": "1.0.1",
            "verdict": "Passed",
            "reasons": [],
            "validatedAt": "2024-05-01T09:40:00Z",
            "rollouts": [
                {
                    "workload": WEB,
                    "container": "app",
                    "previousImage": f"{APP}:1.0.0",
                    "result": "Complete",
                    "reason": "2/2 replicas updated and available",
                    "startedAt": "2024-05-01T09:41:00Z",
                    "finishedAt": "2024-05-01T09:43:00Z",
                },
                {
                    "workload": "deployment/shop/other",
                    "container": "app",
                    "previousImage": f"{APP}:1.0.0",
                    "result": "Complete",
                    "reason": "",
                    "startedAt": "2024-05-01T09:41:00Z",
                },
            ],
        }
    ]
    return body


def deployment(image: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "resourceVersion": "42",
            "labels": {"imagedrift.io/policy": "python"},
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": image},
                        {"name": "proxy", "image": "registry.example/mesh/proxy:2.1"},
                    ]
                }
            }
        },
    }


def completed_state() -> str:
    record = RolloutRecord(
        id=f"{BASE_NEW}|{APP_NEW}",
        base_digest=BASE_NEW,
        target={"app": f"{APP}@{APP_NEW}"},
        previous={"app": f"{APP}:1.0.0"},
        tags={"app": "1.0.1"},
        started_at="2024-05-01T09:41:00Z",
        phase="Complete",
        reason="2/2 replicas updated and available",
        finished_at="2024-05-01T09:43:00Z",
        policy="python",
    )
    return WorkloadState({"app": "1.0.1"}, record, (APP_OLD,)).encode()


# -- render helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T09:59:30Z", "30s ago"),
        ("2024-05-01T09:57:00Z", "3m ago"),
        ("2024-05-01T07:00:00Z", "3h ago"),
        ("2024-04-28T10:00:00Z", "3d ago"),
        ("2024-05-01T10:00:05Z", "just now"),
        ("", "-"),
        ("yesterday", "-"),
    ],
)
def test_age(value: str, expected: str) -> None:
    assert render.age(value, NOW) == expected


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("short", 10, "short"),
        ("0123456789abcdef", 10, "012...cdef"),
        ("0123456789", 3, "012"),
    ],
)
def test_clip(text: str, width: int, expected: str) -> None:
    assert render.clip(text, width) == expected


def test_table_clips_the_named_column_to_the_width() -> None:
    rows = [["a", "x" * 30, "keep-this-column-whole"]]
    out = render.table(["A", "LONG", "KEEP"], rows, width=40, shrink=1).splitlines()
    assert out == ["A  LONG           KEEP", "a  xxxxxxxxxx...  keep-this-column-whole"]
    assert all(len(line) <= 40 for line in out)


def test_short_image_and_workload_names() -> None:
    assert render.short_image(f"{APP}@{APP_NEW}") == f"{APP}@sha256:dddddddddddd"
    assert render.short_image(f"{APP}:1.0.0") == f"{APP}:1.0.0"
    assert render.workload(WEB) == "deployment/web -n shop"


# -- status -------------------------------------------------------------------------------


def test_status_document_is_stable() -> None:
    doc = status.build([POLICY, STALLED])
    assert doc["apiVersion"] == "cli.imagedrift.io/v1" and doc["kind"] == "PolicyStatusList"
    assert doc["items"][0] == {
        "name": "python",
        "suspended": False,
        "observed": True,
        "base": {
            "image": "registry.example/base/python",
            "tag": "3.12-slim",
            "semverRange": "",
            "digest": BASE_NEW,
            "shortDigest": "sha256:bbbbbbbbbbbb",
            "checkedAt": "2024-05-01T09:59:30Z",
            "changedAt": "2024-05-01T08:00:00Z",
        },
        "workloads": {"optedIn": 2, "upToDate": 1, "drifted": 1, "rollingOut": 0},
        "state": "Ready",
        "reason": "WaitingForRebuild",
        "message": "1 of 2 workload(s) on an old base; no validated rebuild to roll yet",
        "conditions": {
            "Ready": {
                "status": "True",
                "reason": "WaitingForRebuild",
                "message": "1 of 2 workload(s) on an old base; no validated rebuild to roll yet",
                "lastTransitionTime": "2024-05-01T09:00:00Z",
            }
        },
        "candidate": {
            "image": f"{APP}:1.0.1",
            "tag": "1.0.1",
            "digest": APP_NEW,
            "verdict": "Rejected",
            "reasons": ["no signature attached"],
        },
        "lastError": "",
    }
    broken = doc["items"][1]
    assert (broken["state"], broken["reason"], broken["observed"]) == (
        "Stalled",
        "InvalidSpec",
        False,
    )
    assert broken["message"].startswith("spec.app.tags")
    assert broken["base"]["semverRange"] == ">=20 <21" and broken["candidate"] is None
    assert broken["workloads"] == {"optedIn": 0, "upToDate": 0, "drifted": 0, "rollingOut": 0}


def test_status_table() -> None:
    out = status.table(status.build([POLICY, STALLED]), NOW, 100)
    assert out == (
        "POLICY  DIGEST        OPTED  OK  DRIFT  ROLL  STATE    REASON             CHECKED\n"
        "python  bbbbbbbbbbbb  2      1   1      0     Ready    WaitingForRebuild  30s ago\n"
        "broken  -             0      0   0      0     Stalled  InvalidSpec        -\n"
        "\n"
        "python  Ready (WaitingForRebuild)\n"
        "  base:       registry.example/base/python:3.12-slim\n"
        "  digest:     sha256:bbbbbbbbbbbb\n"
        "  checked:    2024-05-01T09:59:30Z (30s ago)\n"
        "  changed:    2024-05-01T08:00:00Z (2h ago)\n"
        "  workloads:  2 opted in, 1 up to date, 1 drifted, 0 rolling\n"
        "  ready:      True  WaitingForRebuild: 1 of 2 workload(s) on an old base; no validated"
        " rebuild to\n"
        "              roll yet\n"
        "  candidate:  registry.example/shop/web:1.0.1 @ sha256:dddddddddddd  Rejected (no"
        " signature\n"
        "              attached)\n"
        "  last error: -\n"
        "\n"
        "broken  Stalled (InvalidSpec)\n"
        "  base:       registry.example/base/node:semver >=20 <21\n"
        "  digest:     -\n"
        "  checked:    -\n"
        "  changed:    -\n"
        "  workloads:  0 opted in, 0 up to date, 0 drifted, 0 rolling\n"
        "  ready:      False  InvalidSpec: bad\n"
        "  stalled:    True  InvalidSpec: spec.app.tags: choose exactly one of semver, regex or"
        " sameTag\n"
        "  candidate:  -\n"
        "  last error: spec.app.tags: choose exactly one of semver, regex or sameTag"
    )


@pytest.mark.parametrize("width", [80, 100])
def test_status_table_fits_the_terminal(width: int) -> None:
    suspended = copy.deepcopy(POLICY)
    suspended["spec"]["rollout"]["suspend"] = True
    out = status.table(status.build([suspended, STALLED]), NOW, width)
    assert max(len(line) for line in out.splitlines()) <= width
    assert "python  Ready (WaitingForRebuild)  [suspended]\n" in out
    summary = out.splitlines()[1]
    assert summary.startswith("python  bbbbbbbbbbbb  2      1   1      0     Ready    Wait")
    assert summary.endswith("(suspended)  30s ago" if width == 100 else "...  30s ago")


def test_status_with_no_policies() -> None:
    assert status.table(status.build([]), NOW) == "No ImagePolicies found."


def test_json_and_yaml_carry_the_same_document() -> None:
    doc = status.build([POLICY])
    as_json = render.render(doc, "json", lambda d: "unused")
    as_yaml = render.render(doc, "yaml", lambda d: "unused")
    assert json.loads(as_json) == doc == yaml.safe_load(as_yaml)
    assert as_json.endswith("}\n")
    assert render.render(doc, "table", lambda d: "x") == "x\n"


# -- lineage ------------------------------------------------------------------------------


def test_lineage_after_a_rollout() -> None:
    body = rolled_policy()
    obj = deployment(
        f"{APP}@{APP_NEW}", {"imagedrift.io/state": completed_state(), "imagedrift.io/paused": "1"}
    )
    ref = WorkloadRef("Deployment", "shop", "web")
    doc = lineage.build(ref, obj, [(parse_policy("python", body["spec"]), body)])
    assert doc["kind"] == "WorkloadLineage" and doc["policies"] == ["python"] and doc["paused"]
    app, proxy = doc["containers"]
    assert app == {
        "name": "app",
        "image": f"{APP}@{APP_NEW}",
        "policy": "python",
        "tag": "1.0.1",
        "digest": APP_NEW,
        "baseDigest": BASE_NEW,
        "currentBaseDigest": BASE_NEW,
        "onCurrentBase": True,
        "state": "UpToDate",
        "reason": "annotation names the current base",
        "candidate": None,
        "history": [
            {
                "baseDigest": BASE_NEW,
                "app": APP,
                "appDigest": APP_NEW,
                "tag": "1.0.1",
                "verdict": "Passed",
                "reasons": [],
                "validatedAt": "2024-05-01T09:40:00Z",
                "previousImage": f"{APP}:1.0.0",
                "result": "Complete",
                "reason": "2/2 replicas updated and available",
                "startedAt": "2024-05-01T09:41:00Z",
                "finishedAt": "2024-05-01T09:43:00Z",
                "commit": "",
                "rollbackCommit": "",
                "pullRequest": "",
            }
        ],
    }
    assert (proxy["policy"], proxy["state"], proxy["history"]) == ("", "NotGoverned", [])
    assert doc["state"]["rollout"]["phase"] == "Complete"
    assert doc["state"]["rejected"] == [APP_OLD]

    assert lineage.table(doc, NOW, 100) == (
        "deployment/web -n shop  policy python  [paused]\n"
        "\n"
        "container app  (tag 1.0.1)\n"
        "  image:       registry.example/shop/web@sha256:dddddddddddd\n"
        "  digest:      sha256:dddddddddddd\n"
        "  base digest: sha256:bbbbbbbbbbbb (current)\n"
        "  state:       UpToDate\n"
        "  why:         annotation names the current base\n"
        "  history (newest first): base -> app -> verdict -> rollout\n"
        "    sha256:bbbbbbbbbbbb -> 1.0.1@sha256:dddddddddddd  Passed  Complete  17m ago\n"
        "      from registry.example/shop/web:1.0.0: 2/2 replicas updated and available\n"
        "\n"
        "container proxy\n"
        "  image:       registry.example/mesh/proxy:2.1\n"
        "  digest:      -\n"
        "  base digest: -\n"
        "  state:       NotGoverned\n"
        "  why:         no ImagePolicy governs this container\n"
        "  history: none recorded\n"
        "\n"
        "rolled back here before, never retried: sha256:cccccccccccc"
    )


def test_lineage_names_the_commits_of_a_rollout_by_commit() -> None:
    commit, rolled = "0123456789abcdef" * 2 + "01234567", "fedcba9876543210" * 2 + "76543210"
    body = rolled_policy()
    row = body["status"]["lineage"][0]["rollouts"][0]
    row.update(result="RolledBack", commit=commit, rollbackCommit=rolled)
    row["reason"] = "pods not ready in 90s"
    obj = deployment(f"{APP}@{APP_NEW}", {"imagedrift.io/state": completed_state()})
    ref = WorkloadRef("Deployment", "shop", "web")
    doc = lineage.build(ref, obj, [(parse_policy("python", body["spec"]), body)])
    [history] = doc["containers"][0]["history"]
    assert (history["commit"], history["rollbackCommit"]) == (commit, rolled)
    assert (
        "    sha256:bbbbbbbbbbbb -> 1.0.1@sha256:dddddddddddd  Passed  RolledBack  17m ago\n"
        "      from registry.example/shop/web:1.0.0: pods not ready in 90s\n"
        "      commit 0123456789ab, rolled back by commit fedcba987654\n"
    ) in lineage.table(doc, NOW, 100)

    del row["rollbackCommit"]
    doc = lineage.build(ref, obj, [(parse_policy("python", body["spec"]), body)])
    assert doc["containers"][0]["history"][0]["rollbackCommit"] == ""
    out = lineage.table(doc, NOW, 100)
    assert "      commit 0123456789ab\n" in out and "rolled back by" not in out


def test_lineage_names_the_pull_request_of_a_rollout_proposed() -> None:
    body = rolled_policy()
    row = body["status"]["lineage"][0]["rollouts"][0]
    url = "https://github.com/acme/deploy/pull/7"
    row.update(commit="0123456789ab" * 3 + "0123", pullRequest=url)
    obj = deployment(f"{APP}@{APP_NEW}", {"imagedrift.io/state": completed_state()})
    ref = WorkloadRef("Deployment", "shop", "web")
    doc = lineage.build(ref, obj, [(parse_policy("python", body["spec"]), body)])
    assert doc["containers"][0]["history"][0]["pullRequest"] == url
    assert f"      commit 0123456789ab, pull request {url}\n" in lineage.table(doc, NOW, 120)


def test_lineage_of_a_drifted_container_says_what_it_would_roll_to() -> None:
    obj = deployment(f"{APP}:1.0.0")
    ref = WorkloadRef("Deployment", "shop", "web")
    doc = lineage.build(ref, obj, [(parse_policy("python", POLICY["spec"]), POLICY)])
    app = doc["containers"][0]
    assert (app["baseDigest"], app["onCurrentBase"], app["state"]) == (BASE_OLD, False, "Drifted")
    assert app["candidate"] == {
        "image": f"{APP}:1.0.1",
        "tag": "1.0.1",
        "digest": APP_NEW,
        "verdict": "Rejected",
        "reasons": ["no signature attached"],
    }
    out = lineage.table(doc, NOW, 80)
    assert "  base digest: sha256:aaaaaaaaaaaa (old base)\n" in out
    assert "  candidate:   1.0.1@sha256:dddddddddddd  Rejected (no signature attached)\n" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_lineage_without_a_policy() -> None:
    doc = lineage.build(WorkloadRef("Deployment", "shop", "web"), deployment(f"{APP}:1.0.0"), [])
    assert doc["policies"] == []
    assert {c["state"] for c in doc["containers"]} == {"NotGoverned"}
    assert lineage.table(doc, NOW).startswith("deployment/web -n shop  policy none\n")


# -- plan ---------------------------------------------------------------------------------


class _Reader:
    """A KubePort whose writes fail the test: the plan must only record them."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj) if ref.name == "web" else None

    def patch_workload(self, ref: WorkloadRef, patch: Any) -> dict[str, Any]:
        raise AssertionError(f"the plan sent a patch to {ref}")


def _planned() -> tuple[dict[str, Any], plan.RecordingKube]:
    obj = deployment(f"{APP}:1.0.0")
    kube = plan.RecordingKube(_Reader(obj))
    ref = WorkloadRef("Deployment", "shop", "web")
    assert kube.get_workload(ref) == obj
    record = RolloutRecord(
        id="r",
        base_digest=BASE_NEW,
        target={"app": f"{APP}@{APP_NEW}"},
        previous={"app": f"{APP}:1.0.0"},
        tags={"app": "1.0.1"},
        started_at="2024-05-01T10:00:00Z",
        phase="Progressing",
        policy="python",
    )
    patch = image_patch("Deployment", record.target, WorkloadState({"app": "1.0.1"}, record), "42")
    answered = kube.patch_workload(ref, patch)
    assert answered == obj, "the recorder answers with the body as read"
    result_status = copy.deepcopy(POLICY["status"])
    result_status["candidate"].update(verdict="Passed", reasons=[])
    result_status["workloads"]["items"] = [
        {
            "workload": WEB,
            "container": "app",
            "image": f"{APP}:1.0.0",
            "baseDigest": BASE_OLD,
            "state": "RollingOut",
            "reason": f"patched to {APP}@{APP_NEW}",
        },
        {
            "workload": "deployment/shop/api",
            "container": "app",
            "image": "registry.example/shop/api:2.0.0",
            "baseDigest": BASE_OLD,
            "state": "Paused",
            "reason": "workload paused; would roll to registry.example/shop/api@sha256:dddd",
        },
        {
            "workload": "statefulset/data/db",
            "container": "db",
            "image": f"registry.example/db@{APP_NEW}",
            "baseDigest": BASE_NEW,
            "state": "UpToDate",
            "reason": "current",
        },
    ]
    result = CheckResult(
        result_status,
        [
            Condition("Ready", False, "RolloutInProgress", "1 workload(s) rolling out"),
            Condition("Reconciling", True, "RolloutInProgress", "1 workload(s) rolling out"),
        ],
        [],
        2.0,
        {"optedIn": 3, "upToDate": 1, "drifted": 2, "rollingOut": 1},
    )
    body = copy.deepcopy(POLICY)
    body["spec"]["rollout"]["suspend"] = True
    body["status"]["base"]["digest"] = BASE_OLD
    doc = plan.build(parse_policy("python", body["spec"]), body, result, kube)
    return doc, kube


def test_plan_document() -> None:
    doc, kube = _planned()
    assert len(kube.patches) == 1
    assert doc["kind"] == "Plan" and doc["suspended"] is True
    assert doc["base"] == {
        "image": "registry.example/base/python",
        "tag": "3.12-slim",
        "digest": BASE_NEW,
        "recordedDigest": BASE_OLD,
        "changed": True,
    }
    [rollout] = doc["rollouts"]
    assert {k: v for k, v in rollout.items() if k != "patch"} == {
        "workload": WEB,
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "action": "roll",
        "baseDigest": BASE_NEW,
        "containers": [
            {"container": "app", "from": f"{APP}:1.0.0", "to": f"{APP}@{APP_NEW}", "tag": "1.0.1"}
        ],
        "reason": "",
        "git": None,
    }
    assert rollout["patch"]["metadata"]["resourceVersion"] == "42"
    assert rollout["patch"]["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": f"{APP}@{APP_NEW}"}
    ]
    assert [(h["workload"], h["state"]) for h in doc["heldBack"]] == [
        ("deployment/shop/api", "Paused")
    ]
    assert [u["workload"] for u in doc["upToDate"]] == ["statefulset/data/db"]
    assert doc["rollingOut"] == [], "the planned rollout is listed once, under rollouts"
    assert doc["smokeTests"] == []
    assert doc["conditions"][1] == {
        "type": "Reconciling",
        "status": "True",
        "reason": "RolloutInProgress",
        "message": "1 workload(s) rolling out",
    }


def test_plan_table() -> None:
    doc, _ = _planned()
    assert plan.table(doc, NOW, 100) == (
        "plan for imagepolicy python (dry run: nothing was changed)\n"
        "the policy is suspended: planned as if resumed; nothing rolls until `imagedrift resume"
        " python`\n"
        "  base:      registry.example/base/python:3.12-slim\n"
        "  digest:    sha256:bbbbbbbbbbbb (was sha256:aaaaaaaaaaaa)\n"
        "  candidate: registry.example/shop/web:1.0.1 @ sha256:dddddddddddd  Passed\n"
        "  then:      Reconciling  RolloutInProgress: 1 workload(s) rolling out\n"
        "\n"
        "would patch:\n"
        "  deployment/web -n shop  (roll)\n"
        "    app: registry.example/shop/web:1.0.0\n"
        "      -> registry.example/shop/web@sha256:dddddddddddd (1.0.1)\n"
        "\n"
        "held back:\n"
        "  deployment/api -n shop  app: Paused\n"
        "    workload paused; would roll to registry.example/shop/api@sha256:dddd\n"
        "\n"
        "up to date: statefulset/db -n data db"
    )


def test_plan_of_a_follow_up_is_not_a_new_rollout() -> None:
    """A check that finishes a rollout patches only the state: shown, not counted as roll."""
    obj = deployment(f"{APP}@{APP_NEW}")
    kube = plan.RecordingKube(_Reader(obj))
    ref = WorkloadRef("Deployment", "shop", "web")
    kube.get_workload(ref)
    done = RolloutRecord(
        "r", BASE_NEW, {"app": f"{APP}@{APP_NEW}"}, {"app": f"{APP}:1.0.0"}, {}, "t", "Complete"
    )
    kube.patch_workload(ref, image_patch("Deployment", {}, WorkloadState({}, done), "43"))
    result = CheckResult({"workloads": {"items": []}}, [], [], 1.0, {})
    doc = plan.build(parse_policy("python", POLICY["spec"]), POLICY, result, kube)
    [rollout] = doc["rollouts"]
    assert (rollout["action"], rollout["containers"]) == ("complete", [])
    assert "state annotation only" in plan.table(doc, NOW)


GIT_URL = "https://git.example/shop/deploy.git"
VIA = "Flux Kustomization shop/web"
IN_GIT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: app
          image: {image}  # set by imagedrift
"""


def _committed() -> tuple[dict[str, Any], plan.RecordingKube]:
    """A Flux-applied web rolled by commit (its patch only records it), and an api of the
    same repository whose value a Flux marker guards."""
    kube = plan.RecordingKube(_Reader(deployment(f"{APP}:1.0.0")))
    ref = WorkloadRef("Deployment", "shop", "web")
    kube.get_workload(ref)
    new = f"{APP}:1.0.1@{APP_NEW}"
    record = RolloutRecord(
        id="r",
        base_digest=BASE_NEW,
        target={"app": new},
        previous={"app": f"{APP}:1.0.0"},
        tags={"app": "1.0.1"},
        started_at="2024-05-01T10:00:00Z",
        phase="Progressing",
        policy="python",
        git=GitRecord(GIT_URL, "main", "deploy", VIA),
    )
    patch = image_patch("Deployment", {}, WorkloadState({"app": "1.0.1"}, record), "42")
    kube.patch_workload(ref, patch)
    source = GitSource(GIT_URL, "main", "deploy", VIA)
    api = "deployment/shop/api"
    writes = tuple(
        GitWrite(
            key,
            source,
            (ImageChange("python", "Deployment", "shop", key[17:], "app", f"{APP}:1.0.0", new),),
        )
        for key in (WEB, api)
    )
    path = "deploy/web.yaml"
    diff = unified_diff(
        {path: IN_GIT.format(image=f"{APP}:1.0.0")}, {path: IN_GIT.format(image=new)}
    )
    kube.commits.append(
        PreviewCommit(
            GIT_URL,
            "main",
            "89abcdef" * 5,
            f"imagedrift: python: roll 1 workload(s)\n\n- {WEB} app: {APP}:1.0.0 -> {new}\n",
            Author("bot", "bot@example.invalid"),
            writes,
            (
                GitWritten(WEB, Written.COMMITTED, "", files=(path,)),
                GitWritten(api, Written.REFUSED, "app: a Flux marker ($imagepolicy) sets it"),
            ),
            diff,
        )
    )
    result = CheckResult({"workloads": {"items": []}}, [], [], 1.0, {})
    return plan.build(parse_policy("python", POLICY["spec"]), POLICY, result, kube), kube


def test_plan_of_a_rollout_by_commit_shows_the_commit() -> None:
    doc, kube = _committed()
    [rollout] = doc["rollouts"]
    assert rollout["action"] == "roll" and "spec" not in rollout["patch"]
    assert rollout["containers"] == [
        {"container": "app", "from": f"{APP}:1.0.0", "to": f"{APP}:1.0.1@{APP_NEW}", "tag": "1.0.1"}
    ]
    assert rollout["git"] == {"repository": GIT_URL, "branch": "main", "path": "deploy", "via": VIA}
    [commit] = doc["commits"]
    assert {k: v for k, v in commit.items() if k not in ("message", "diff")} == {
        "repository": GIT_URL,
        "branch": "main",
        "parent": "89abcdef" * 5,
        "pullRequestBranch": "",
        "author": "bot <bot@example.invalid>",
        "workloads": [
            {"workload": WEB, "outcome": "Committed", "reason": "", "files": ["deploy/web.yaml"]},
            {
                "workload": "deployment/shop/api",
                "outcome": "Refused",
                "reason": "app: a Flux marker ($imagepolicy) sets it",
                "files": [],
            },
        ],
        "error": "",
    }
    assert commit["message"] == kube.commits[0].message
    assert commit["diff"] == kube.commits[0].diff
    assert json.loads(render.render(doc, "json", lambda d: ""))["commits"] == [commit]
    sections = plan.table(doc, NOW, 100).split("\n\n")
    assert "would patch:\n  deployment/web -n shop  (roll by commit)\n" in sections[1]
    assert "\n\n".join(sections[2:]) == (
        "would commit (nothing is pushed):\n"
        "  https://git.example/shop/deploy.git  branch main  at 89abcdef89ab\n"
        "    deployment/web -n shop: Committed\n"
        "    deployment/api -n shop: Refused: app: a Flux marker ($imagepolicy) sets it\n"
        "    author: bot <bot@example.invalid>\n"
        "    message:\n"
        "      imagedrift: python: roll 1 workload(s)\n"
        "\n"
        f"      - deployment/shop/web app: {APP}:1.0.0 -> {APP}:1.0.1@{APP_NEW}\n"
        "    diff:\n"
        "      --- a/deploy/web.yaml\n"
        "      +++ b/deploy/web.yaml\n"
        "      @@ -7,4 +7,4 @@\n"
        "           spec:\n"
        "             containers:\n"
        "               - name: app\n"
        f"      -          image: {APP}:1.0.0  # set by imagedrift\n"
        f"      +          image: {APP}:1.0.1@{APP_NEW}  # set by imagedrift"
    )


@pytest.mark.parametrize(
    ("error", "diff", "says"),
    [
        ("http://git.example: the server refused the credentials (401)", "", "    cannot be read"),
        ("", "", "    nothing to commit"),
    ],
)
def test_plan_says_why_a_repository_gets_no_commit(error: str, diff: str, says: str) -> None:
    _, kube = _committed()
    kube.commits[0] = dataclasses.replace(kube.commits[0], error=error, diff=diff)
    result = CheckResult({"workloads": {"items": []}}, [], [], 1.0, {})
    doc = plan.build(parse_policy("python", POLICY["spec"]), POLICY, result, kube)
    out = plan.table(doc, NOW, 100)
    assert says in out and "    diff:" not in out and "    message:" not in out


def test_recorded_smoke_test_job_reads_back_running() -> None:
    kube = plan.RecordingKube(_Reader(deployment(f"{APP}:1.0.0")), "imagedrift-system")
    assert kube.namespace == "imagedrift-system"
    job = {
        "metadata": {"name": "smoke-abc"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "t", "image": f"{APP}@{APP_NEW}"}]}}
        },
    }
    kube.create_job("tests", job)
    read = kube.get_job("tests", "smoke-abc")
    assert read is not None and read["status"] == {}, "a recorded Job reads back as running"
    assert read["metadata"] == {"name": "smoke-abc", "namespace": "tests"}
    assert job["metadata"] == {"name": "smoke-abc"}, "the engine's body is not mutated"
    assert kube.get_job("tests", "other") is None
    assert kube.list_vulnerability_reports(APP_NEW) == []
    result = CheckResult({"workloads": {"items": []}}, [], [], 1.0, {})
    doc = plan.build(parse_policy("python", POLICY["spec"]), POLICY, result, kube)
    assert doc["smokeTests"] == [
        {"namespace": "tests", "name": "smoke-abc", "images": [f"{APP}@{APP_NEW}"]}
    ]
    assert (
        "would start smoke-test Jobs:\n"
        "  job/smoke-abc -n tests: registry.example/shop/web@sha256:dddddddddddd"
    ) in plan.table(doc, NOW)


# -- arguments and exit codes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploy/web", WorkloadRef("Deployment", "ns", "web")),
        ("deployment.apps/web", WorkloadRef("Deployment", "ns", "web")),
        ("Deployments/web", WorkloadRef("Deployment", "ns", "web")),
        ("sts/db", WorkloadRef("StatefulSet", "ns", "db")),
        ("daemonset/agent", WorkloadRef("DaemonSet", "ns", "agent")),
        ("cj/nightly", WorkloadRef("CronJob", "ns", "nightly")),
        ("cronjob.batch/nightly", WorkloadRef("CronJob", "ns", "nightly")),
    ],
)
def test_parse_workload(text: str, expected: WorkloadRef) -> None:
    assert parse_workload(text, "ns") == expected


@pytest.mark.parametrize("text", ["web", "pod/web", "deploy/", "deploy/a/b", "cronjob.apps/x"])
def test_parse_workload_refuses(text: str) -> None:
    with pytest.raises(CliError) as refused:
        parse_workload(text, "ns")
    assert refused.value.code == 1


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["lineage"], ["status", "-o", "xml"], ["nothing"], []):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 1, argv
    assert "usage: imagedrift" in capsys.readouterr().err


def test_policy_pause_with_a_namespace_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any request (the kubeconfig points nowhere reachable)."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    assert main(["pause", "python", "-n", "shop", "--kubeconfig", str(config)]) == 1
    assert "cluster-scoped" in capsys.readouterr().err
    missing = main(["status", "--kubeconfig", str(tmp_path / "absent"), "--context", "x"])
    assert missing == 2
    assert "cannot load the Kubernetes configuration" in capsys.readouterr().err


def test_plan_lists_every_tag_and_what_became_of_it() -> None:
    from imagedrift.core.tagselect import TagNote
    from imagedrift.engine.check import Search

    search = Search(
        notes=[
            TagNote("x.sig", "excluded", "matches exclusionList"),
            TagNote("2.0.0", "ineligible", "a major bump; level minor stays on 1.x"),
            TagNote("1.5.0", "taken", "Passed"),
            TagNote("1.4.1", "not inspected", "1.5.0 is newer and was taken"),
            TagNote("1.3.9", "lower", "lower than the running 1.4.0"),
        ],
        policy="keel minor",
    )
    result = CheckResult({}, [], [], 1.0, {}, {(APP, "1.4.0"): search})
    doc = plan.build(
        parse_policy("python", POLICY["spec"]), POLICY, result, plan.RecordingKube(_Reader({}))
    )
    [group] = doc["tags"]
    assert (group["repository"], group["runningTag"], group["policy"]) == (
        APP,
        "1.4.0",
        "keel minor",
    )
    assert [t["tag"] for t in group["tags"]] == ["x.sig", "2.0.0", "1.5.0", "1.4.1", "1.3.9"]
    rows = plan.table(doc, NOW, 100).split("\n\n")[1].splitlines()
    assert rows == [
        f"tags of {APP} (running 1.4.0, keel minor):",
        "  1.5.0  taken: Passed",
        "  1.4.1  not inspected: 1.5.0 is newer and was taken",
        "  1.3.9  lower: lower than the running 1.4.0",
        "  2.0.0  ineligible: a major bump; level minor stays on 1.x",
        "  x.sig  excluded: matches exclusionList",
    ]


def test_plan_says_why_a_policy_that_fails_closed_has_no_candidate() -> None:
    from imagedrift.engine.check import Search

    why = "numerical: tag 'build-x' extracts 'x', which is not a number; the policy orders no tag"
    result = CheckResult(
        {}, [], [], 1.0, {}, {(APP, "build-1"): Search(rejected=[why], refused=why)}
    )
    doc = plan.build(
        parse_policy("python", POLICY["spec"]), POLICY, result, plan.RecordingKube(_Reader({}))
    )
    assert doc["tags"][0]["refused"] == [why]
    assert "no candidate: numerical: tag 'build-x'" in plan.table(doc, NOW, 200)
