"""Characterization of ``PolicyChecker.check``: what today's engine does, pinned exactly.

Each scenario drives the real checker in-process against the harness's loopback OCI
registry and a recording Kubernetes port (``tests/integration/checker_world.py``): a
sequence of checks at fixed times (``now`` and the monotonic clock advanced explicitly),
each fed the status the previous one left, as ``Controller._process_policy`` does. Every
check's result (status, conditions, Events with their targets, next check, counts, the
candidate searches), every patch sent to a workload (with its outcome: applied, 409) and
every smoke-test Job created are compared with the golden file
``tests/integration/golden/checker/<scenario>.json``.

The goldens were written by the engine as it is, including behaviour that looks wrong:
this test says whether a change of the engine changed what it does, not whether that is
right. When a change is intended, rewrite them and review the diff::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_checker_characterization.py

Modelled, not run: the Deployment controller (the scenario moves a workload's status),
the push receiver (a publish drops the cached base lookup and searches as the
controller's push fan-out, ``engine.fanout``, does), a conflicting writer (a 409 on a
patch with a resourceVersion precondition). Not covered: the rebuild step
(``RebuildStep.apply``), StatefulSet, DaemonSet and CronJob rollouts, maintenance windows,
registry faults and throttling.

Normalised, because it legitimately differs between runs: the registry's ``host:port``
(``<registry>``) and digests (each is named after what the scenario published, e.g.
``sha256:<app-1.0.1@v2>``; the images are built deterministically, so the names stand
for the same bytes on every run). Times are the scenario's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from imagedrift.core.workloads import CONTAINERS_ANNOTATION, PAUSE_ANNOTATION, STATE_ANNOTATION
from imagedrift.engine.gates import smoke_job_name
from imagedrift.registry.push import cosign_sign
from tests.harness.registry import Registry
from tests.integration.checker_world import CheckerWorld, base_image, compare_with_golden

SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}


@dataclass(frozen=True)
class Scenario:
    description: str
    run: Callable[[CheckerWorld], None]


def drifted_with_rebuild(w: CheckerWorld, *names: str, replicas: int = 1) -> str:
    """Base v1 with app:1.0.0 on it, ``names`` running app:1.0.0, then base v2 and the
    rebuilt app:1.0.1 on it. Returns the rebuilt digest. Declare the policy first."""
    v1, v2 = base_image("v1"), base_image("v2")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    for name in names:
        w.deployment(name, f"{w.ref('app')}:1.0.0", replicas=replicas)
    w.publish("base", "1", v2, "base-v2")
    return w.publish("app", "1.0.1", w.app_on(v2, "1.0.1"), "app-1.0.1@v2")


def state_of(w: CheckerWorld, name: str) -> str:
    return w.annotations_of(name).get(STATE_ANNOTATION, "")


# -- scenarios -------------------------------------------------------------------------------


def plain_drift_to_complete(w: CheckerWorld) -> None:
    v1 = base_image("v1")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.policy({"base": w.base_spec(), "app": SEMVER})
    w.deployment("web", f"{w.ref('app')}:1.0.0")
    w.deployment("bystander", f"{w.ref('app')}:1.0.0", policy=None)
    w.check("on the current base")
    v2 = base_image("v2")
    w.publish("base", "1", v2, "base-v2")
    w.check("the base moved: drifted, no rebuild yet", advance=30)
    rebuilt = w.publish("app", "1.0.1", w.app_on(v2, "1.0.1"), "app-1.0.1@v2")
    w.check("a rebuild on the new base: rolled", advance=30)
    assert w.images_of("web") == {"app": w.pinned("app", rebuilt)}
    w.check("the controller has not observed the patch yet", advance=2)
    w.observed("web", 1)
    w.check("1 of 2 replicas updated", advance=5)
    w.complete("web")
    w.check("verified: Complete", advance=5)
    w.check("steady", advance=60)
    w.check("steady again", advance=60)
    assert w.images_of("bystander") == {"app": f"{w.ref('app')}:1.0.0"}
    assert w.results[-1].conditions[0].reason == "UpToDate"


def gate_signature_rejected(w: CheckerWorld) -> None:
    w.policy(
        {"base": w.base_spec(), "app": SEMVER, "validation": {"signature": {"type": "cosign"}}}
    )
    rebuilt = drifted_with_rebuild(w, "web")
    w.check("the rebuild carries no signature: rejected")
    w.check("searched again: the rejection is remembered (no second Event)", advance=60)
    w.check("the cached search", advance=10)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signature = cosign_sign(w.client, w.repo("app"), rebuilt, key)
    w.names.name(signature, "cosign-signature-of-app-1.0.1")
    w.note("signed app:1.0.1 (cosign .sig tag)")
    w.push_event(f"{w.ref('app')}:{rebuilt.replace(':', '-')}.sig")
    w.check("signed now: passes and rolls", advance=10)
    assert w.images_of("web") == {"app": w.pinned("app", rebuilt)}
    w.complete("web")
    w.check("rolled out", advance=10)


def vulnerability_report(digest: str, name: str, updated: str, *findings: str) -> dict[str, Any]:
    """A Trivy Operator VulnerabilityReport for ``digest`` (findings as id:SEVERITY)."""
    return {
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": updated},
        "report": {
            "updateTimestamp": updated,
            "artifact": {"repository": "app", "digest": digest},
            "vulnerabilities": [
                {"vulnerabilityID": f.split(":")[0], "severity": f.split(":")[1], "resource": "lib"}
                for f in findings
            ],
        },
    }


def gate_vulnerability_rejected(w: CheckerWorld) -> None:
    gate = {"vulnerabilities": {"maxSeverity": "HIGH", "source": "cluster"}}
    w.policy({"base": w.base_spec(), "app": SEMVER, "validation": gate})
    rebuilt = drifted_with_rebuild(w, "web")
    w.kube.reports[rebuilt] = [
        vulnerability_report(
            rebuilt, "replicaset-web-1", "2026-03-02T09:00:00Z", "CVE-2026-0001:CRITICAL"
        )
    ]
    w.note("a VulnerabilityReport finds a CRITICAL CVE in app:1.0.1")
    w.check("a CRITICAL finding: rejected")
    w.check("searched again: rejected, no second Event", advance=60)
    w.kube.reports[rebuilt].append(
        vulnerability_report(
            rebuilt, "replicaset-web-2", "2026-03-02T10:01:30Z", "CVE-2026-0002:MEDIUM"
        )
    )
    w.note("a rescan: only a MEDIUM finding now")
    w.check("the newest report decides: passes and rolls", advance=60)
    assert w.images_of("web") == {"app": w.pinned("app", rebuilt)}


def base_semver_range(w: CheckerWorld) -> None:
    b100 = base_image("1.0.0")
    w.publish("base", "1.0.0", b100, "base-1.0.0")
    w.publish("app", "1.0.0", w.app_on(b100, "1.0.0", base_tag="1.0.0"), "app-1.0.0@b1.0.0")
    spec = w.base_spec(semverRange=">=1.0.0 <2.0.0")
    del spec["tag"]
    w.policy({"base": spec, "app": SEMVER})
    w.deployment("web", f"{w.ref('app')}:1.0.0")
    w.check("the newest base in range is 1.0.0")
    b110 = base_image("1.1.0")
    w.publish("base", "1.1.0", b110, "base-1.1.0")
    w.publish("base", "2.0.0", base_image("2.0.0"), "base-2.0.0")
    w.check("1.1.0 is the newest in range (2.0.0 is not in it)", advance=30)
    w.publish("app", "1.0.1", w.app_on(b110, "1.0.1", base_tag="1.1.0"), "app-1.0.1@b1.1.0")
    w.check("a rebuild on 1.1.0: rolled", advance=30)
    w.complete("web")
    w.check("complete", advance=10)


def base_not_found(w: CheckerWorld) -> None:
    v1 = base_image("v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.policy({"base": w.base_spec(), "app": SEMVER})
    w.deployment("web", f"{w.ref('app')}:1.0.0")
    w.check("the base tag does not exist")
    w.check("still not there: no second Event", advance=30)
    w.publish("base", "1", v1, "base-v1")
    w.check("published: up to date", advance=30)
    spec = w.base_spec(semverRange=">=9.0.0")
    del spec["tag"]
    w.policy({"base": spec, "app": SEMVER})
    w.check("no tag in the range", advance=5)
    w.check("and again", advance=30)


def history_limit(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER, "historyLimit": 2})
    v1 = base_image("v1")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.deployment("web", f"{w.ref('app')}:1.0.0", replicas=1)
    w.check("on the current base")
    for patch, tag in (("v2", "1.0.1"), ("v3", "1.0.2"), ("v4", "1.0.3")):
        base = base_image(patch)
        w.publish("base", "1", base, f"base-{patch}")
        w.publish("app", tag, w.app_on(base, tag), f"app-{tag}@{patch}")
        w.check(f"base {patch} and app {tag}: rolled", advance=60)
        w.complete("web")
        w.check(f"{tag} complete", advance=10)
    w.check("steady", advance=60)
    assert len(w.status["lineage"]) == 2


def failed_canary_rolled_back(w: CheckerWorld) -> None:
    waves = {"waves": [{"count": 1}, {"percent": 100}], "verifyTimeout": "10m"}
    w.policy({"base": w.base_spec(), "app": SEMVER, "rollout": waves})
    drifted_with_rebuild(w, "a0", "b1", "b2")
    ran = w.images_of("a0")
    w.check("the canary a0 rolls; b1 and b2 wait for the next wave")
    w.observed("a0", 0)
    w.check("the canary's pods do not get ready", advance=5)
    w.deadline("a0")
    w.check("ProgressDeadlineExceeded: rolled back, candidate rejected", advance=30)
    w.check("the rollback is not observed yet", advance=2)
    w.complete("a0")
    w.check("the rollback completed", advance=10)
    w.check("steady: nothing retried, the waves stay stopped", advance=60)
    assert w.images_of("b1") == w.images_of("b2") == ran


def rollback_failed(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER, "rollout": {"verifyTimeout": "2m"}})
    drifted_with_rebuild(w, "web", replicas=2)
    w.check("rolled")
    w.observed("web", 0)
    w.check("no replica updated", advance=60)
    w.check("not available within the verify timeout: rolled back", advance=90)
    w.observed("web", 0)
    w.check("the rollback makes no progress either", advance=60)
    w.deadline("web")
    w.check("the rollback failed: RollbackFailed, left to a human", advance=30)
    w.check("no third try", advance=60)
    w.check("still none", advance=600)


def paused_and_containers(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER})
    v1, v2 = base_image("v1"), base_image("v2")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "app-1.0.0"), "app-1.0.0@v1")
    w.publish("side", "1.0.0", w.app_on(v1, "side-1.0.0"), "side-1.0.0@v1")
    side = f"{w.ref('side')}:1.0.0"
    w.deployment(
        "multi",
        {"app": f"{w.ref('app')}:1.0.0", "side": side},
        annotations={CONTAINERS_ANNOTATION: "app"},
    )
    w.deployment("held", f"{w.ref('app')}:1.0.0", annotations={PAUSE_ANNOTATION: "true"})
    w.publish("base", "1", v2, "base-v2")
    rebuilt = w.publish("app", "1.0.1", w.app_on(v2, "app-1.0.1"), "app-1.0.1@v2")
    w.publish("side", "1.0.1", w.app_on(v2, "side-1.0.1"), "side-1.0.1@v2")
    w.check("multi rolls its governed container only; held is paused")
    w.complete("multi")
    w.check("multi complete; held still paused", advance=10)
    w.annotate("held", {PAUSE_ANNOTATION: None})
    w.check("held unpaused: rolls", advance=10)
    w.complete("held")
    w.check("all complete", advance=10)
    assert w.images_of("multi") == {"app": w.pinned("app", rebuilt), "side": side}


def overridden_then_later_base(w: CheckerWorld) -> None:
    v1 = base_image("v1")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.policy({"base": w.base_spec(), "app": SEMVER})
    w.deployment("web", f"{w.ref('app')}:1.0.0", replicas=1)
    w.check("on the current base")
    v2 = base_image("v2")
    w.publish("base", "1", v2, "base-v2")
    w.publish("app", "1.0.1", w.app_on(v2, "1.0.1"), "app-1.0.1@v2")
    w.check("rolled to 1.0.1", advance=30)
    w.complete("web")
    w.check("complete", advance=10)
    w.undo("web")
    w.check("a human undid it: Overridden", advance=30)
    w.check("not fought", advance=60)
    w.check("still not fought", advance=60)
    v3 = base_image("v3")
    w.publish("base", "1", v3, "base-v3")
    rebuilt = w.publish("app", "1.0.2", w.app_on(v3, "1.0.2"), "app-1.0.2@v3")
    w.check("a candidate on a later base rolls again", advance=30)
    assert w.images_of("web") == {"app": w.pinned("app", rebuilt)}
    w.complete("web")
    w.check("complete", advance=10)


def digest_pinned_up_to_date(w: CheckerWorld) -> None:
    v1 = base_image("v1")
    w.publish("base", "1", v1, "base-v1")
    digest = w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.policy({"base": w.base_spec(), "app": SEMVER})
    w.deployment("web", w.pinned("app", digest))
    w.check("pinned by digest, on the current base")
    w.check("an interval later", advance=60)
    w.publish("base", "1", v1, "base-v1")
    w.check("the base re-pushed unchanged", advance=5)
    w.check("another interval", advance=60)
    w.check("and another", advance=60)
    assert w.patches() == [], "imagedrift wrote to an up-to-date digest-pinned workload"


def conflict_409(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER})
    drifted_with_rebuild(w, "web")
    w.touch_before_next_patch("web")
    w.check("the rollout patch meets a 409")
    w.check("decided again: the patch lands", advance=10)
    w.complete("web")
    w.touch_before_next_patch("web")
    w.check("the patch recording the outcome meets a 409: still RollingOut", advance=10)
    assert w.results[-1].counts["rollingOut"] == 1
    w.check("recorded now", advance=10)


def waves_canary_then_rest(w: CheckerWorld) -> None:
    waves = {
        "waves": [{"count": 1}, {"percent": 100}],
        "pauseBetweenWaves": "2m",
        "maxConcurrent": 1,
    }
    w.policy({"base": w.base_spec(), "app": SEMVER, "rollout": waves})
    drifted_with_rebuild(w, "w0", "w1", "w2")
    w.check("the canary w0 rolls")
    w.complete("w0")
    w.check("the canary is healthy: the pause holds the rest", advance=10)
    w.check("still pausing", advance=60)
    w.check("the pause is over: w1 starts, maxConcurrent holds w2", advance=60)
    w.complete("w1")
    w.check("w1 healthy: w2 starts", advance=10)
    w.complete("w2")
    w.check("every wave done", advance=10)
    w.check("steady", advance=60)


SMOKE = {
    "timeout": "5m",
    "template": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "smoke", "image": "placeholder", "args": ["--selftest"]}],
            }
        }
    },
}


def smoke_test_validating(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER, "validation": {"smokeTest": SMOKE}})
    rebuilt = drifted_with_rebuild(w, "s0", "s1", "s2")
    w.check("one smoke-test Job for the candidate of three workloads")
    w.check("still running", advance=2)
    w.kube.job_results[smoke_job_name(w.policy_name, rebuilt)] = ("Complete", "")
    w.note("the smoke-test Job succeeded")
    w.check("succeeded: all three roll", advance=2)
    for name in ("s0", "s1", "s2"):
        w.complete(name)
    w.check("all complete", advance=10)


def gitops_and_conflict(w: CheckerWorld) -> None:
    w.policy({"base": w.base_spec(), "app": SEMVER})
    drifted_with_rebuild(w)
    w.deployment("flux", f"{w.ref('app')}:1.0.0", labels={"kustomize.toolkit.fluxcd.io/name": "x"})
    w.deployment("shared", f"{w.ref('app')}:1.0.0")
    w.conflicts = {"deployment/shop/shared": ("chk-other",)}
    w.note("deployment/shop/shared is selected by policy chk-other too")
    w.check("managed by Flux: reported; shared: Conflict")
    w.check("an interval later", advance=60)
    assert all("spec" not in p["patch"] for p in w.patches()), "an image was patched"


def suspended_then_resumed(w: CheckerWorld) -> None:
    spec = {"base": w.base_spec(), "app": SEMVER, "rollout": {"suspend": True}}
    w.policy(spec)
    rebuilt = drifted_with_rebuild(w, "web")
    w.check("suspended: would roll")
    w.check("still suspended", advance=60)
    w.policy({**spec, "rollout": {"suspend": False}})
    w.check("resumed: rolls", advance=5)
    assert w.images_of("web") == {"app": w.pinned("app", rebuilt)}


def same_tag_repush(w: CheckerWorld) -> None:
    v1 = base_image("v1")
    w.publish("base", "1", v1, "base-v1")
    w.publish("app", "1.0.0", w.app_on(v1, "1.0.0"), "app-1.0.0@v1")
    w.policy({"base": w.base_spec()})  # sameTag by default
    w.deployment("early", f"{w.ref('app')}:1.0.0")
    w.check("on the current base (early's running digest is recorded on it)")
    w.deployment("late", f"{w.ref('app')}:1.0.0")
    v2 = base_image("v2")
    w.publish("base", "1", v2, "base-v2")
    rebuilt = w.publish("app", "1.0.0", w.app_on(v2, "1.0.0"), "app-1.0.0@v2")
    # late is first seen now: the tag means the rebuild, its pods still run what they pulled.
    w.check("1.0.0 re-pushed on the new base: both roll by digest", advance=30)
    for name in ("early", "late"):
        assert w.images_of(name) == {"app": w.pinned("app", rebuilt)}, name
        w.complete(name)
    w.check("complete", advance=10)
    assert '"1.0.0"' in state_of(w, "late")


SCENARIOS: dict[str, Scenario] = {
    "plain_drift_to_complete": Scenario(
        "drift -> rebuild -> roll -> verify -> Complete, then steady", plain_drift_to_complete
    ),
    "gate_signature_rejected": Scenario(
        "a signature gate rejects the unsigned rebuild (remembered), then passes once signed",
        gate_signature_rejected,
    ),
    "gate_vulnerability_rejected": Scenario(
        "a VulnerabilityReport with a CRITICAL finding rejects the rebuild; a rescan passes it",
        gate_vulnerability_rejected,
    ),
    "base_semver_range": Scenario(
        "base.semverRange follows the newest base tag in range", base_semver_range
    ),
    "base_not_found": Scenario(
        "BaseNotFound (Event once), recovery, then a semverRange nothing satisfies",
        base_not_found,
    ),
    "history_limit": Scenario(
        "historyLimit 2 over three base changes and rollouts trims the lineage", history_limit
    ),
    "failed_canary_rolled_back": Scenario(
        "a canary's rollout fails: RolledBack, candidate rejected, waves stopped, the "
        "rollback followed to Complete",
        failed_canary_rolled_back,
    ),
    "rollback_failed": Scenario(
        "the rollout times out and its rollback fails too: RollbackFailed, no third try",
        rollback_failed,
    ),
    "paused_and_containers": Scenario(
        "imagedrift.io/paused holds a workload; imagedrift.io/containers narrows the governed "
        "containers",
        paused_and_containers,
    ),
    "overridden_then_later_base": Scenario(
        "kubectl rollout undo -> Overridden and not fought; a candidate on a later base rolls",
        overridden_then_later_base,
    ),
    "digest_pinned_up_to_date": Scenario(
        "an always up-to-date digest-pinned workload is never written to",
        digest_pinned_up_to_date,
    ),
    "conflict_409": Scenario(
        "a 409 on the rollout patch (decided again) and on the outcome patch (still RollingOut)",
        conflict_409,
    ),
    "waves_canary_then_rest": Scenario(
        "waves: a canary first, a pause, then the rest under maxConcurrent 1",
        waves_canary_then_rest,
    ),
    "smoke_test_validating": Scenario(
        "three workloads wait on one smoke-test Job, then all roll", smoke_test_validating
    ),
    "gitops_and_conflict": Scenario(
        "a Flux-managed workload is reported, a workload two policies select is Conflict",
        gitops_and_conflict,
    ),
    "suspended_then_resumed": Scenario(
        "rollout.suspend holds the rollout until the spec resumes it", suspended_then_resumed
    ),
    "same_tag_repush": Scenario(
        "sameTag: the running tag re-pushed on the new base rolls by digest, also on a "
        "workload first seen after the tag moved (the digest its pods pulled)",
        same_tag_repush,
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_checker_behaves_as_recorded(registry: Registry, name: str) -> None:
    scenario = SCENARIOS[name]
    client = registry.client()
    world = CheckerWorld(registry.host, client, name)
    try:
        scenario.run(world)
        compare_with_golden(name, world.document(scenario.description))
    finally:
        world.close()
        client.close()
