"""The drift loop on the real node: a base is re-published, the rebuilt app image passes its
gates but crashes, and imagedrift sees it in what the pods do, not in an annotation.

Every image here really runs (busybox base, a shell entrypoint); no ``imagedrift.test/*``
annotation steers anything. The three ways a rebuilt image goes down:
- it crashes at start behind a readiness probe (never Ready);
- it crashes at start with no probe: the kubelet reports it Ready after every restart, so
  the Deployment's own conditions call the rollout complete (``NewReplicaSetAvailable``)
  while the service is down;
- it serves for a few seconds, then crashes: inside the settling window.
Each must fail its rollout, be rolled back to the exact digest that ran before, run that
digest again (by the kubelet's imageID), and never be tried again.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagedrift.core.refs import ImageRef
from tests.e2e.on_node import SERVE, app_on, on_real_node, runnable_base, wait_running
from tests.e2e.promised import wait_lineage_row
from tests.e2e.scenario import World
from tests.e2e.support import base_spec, checks_pass, policy_status, rollouts
from tests.harness.node import RealNode
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

CRASH_AT_START = "echo 'config missing' >&2; exit 1"
CRASH_AFTER_4S = "trap 'exit 0' TERM; touch /tmp/ready; sleep 4; echo 'out of memory' >&2; exit 1"
SEMVER = {"tags": {"semver": {"range": ">=1.0.0"}}}
REVISION = "deployment.kubernetes.io/revision"


CASES = {
    "crashes at start behind a readiness probe": (CRASH_AT_START, True),
    "crashes at start with no readiness probe": (CRASH_AT_START, False),
    "crashes after serving 4s, inside the settling window": (CRASH_AFTER_4S, False),
}


@pytest.mark.parametrize(("script", "probe"), CASES.values(), ids=list(CASES))
def test_a_rebuilt_image_that_crashes_is_rolled_back_to_the_exact_digest_that_ran(
    script: str,
    probe: bool,
    real_node: RealNode,
    world: World,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    old, new = runnable_base("v1"), runnable_base("v2")
    world.publish("base", "1", old)
    first = world.publish("app", "1.0.0", app_on(world, old, "1.0.0", SERVE))
    tagged = f"{world.ref('app')}:1.0.0"
    world.deployment(
        "web", tagged, policy=None, replicas=2, extra=on_real_node(tagged, probe=probe)
    )
    wait_running(world, "web", first, 2)

    policy = world.policy(
        "crash",
        {
            "base": base_spec(world),
            "app": SEMVER,
            "rollout": {"settleTime": "20s", "verifyTimeout": "3m"},
        },
    )
    world.kube.apps.patch_namespaced_deployment(
        "web", world.namespace, {"metadata": {"labels": {"imagedrift.io/policy": policy}}}
    )
    operator = operator_factory()
    world.wait_ready(policy, reason="UpToDate", timeout=60)

    # The base is re-published with fixes and the app rebuilt on it: the rebuild passes
    # its gates (it sits on the new base) but does not stay up.
    world.publish("base", "1", new)
    crashing = world.publish("app", "1.0.1", app_on(world, new, "1.0.1", script))

    workload = f"deployment/{world.namespace}/web"
    row = wait_lineage_row(world, policy, workload, "RolledBack", timeout=150)
    entry = next(
        e for e in policy_status(world, policy)["lineage"] if row in (e.get("rollouts") or [])
    )
    assert entry["appDigest"] == crashing, entry
    # "crashed: restarted once, last exit code 1" or, caught before the restart, "stopped".
    assert "container app " in row["reason"], row
    assert "exit code 1 (Error)" in row["reason"], row
    world.wait_event("web", "RolledBack", type="Warning", needle="exit code 1 (Error)")

    # Back on exactly the digest that ran before (not the tag, which may have moved), and
    # the kubelet runs that digest again.
    restored = str(ImageRef.parse(tagged).with_digest(first))
    assert world.image_of("web") == restored
    wait_running(world, "web", first, 2)
    settled = wait_for(
        lambda: next(
            (r for r in rollouts(world, policy) if r.get("rollback") in ("Complete", "Failed")),
            None,
        ),
        what="the rollback's own outcome recorded",
        timeout=90,
    )
    assert settled["rollback"] == "Complete", settled

    # Never tried again: over further checks, no new ReplicaSet revision (the template is
    # not patched; annotation writes do not make one).
    revision = world.get_deployment("web")["metadata"]["annotations"][REVISION]
    checks_pass(operator, policy, 3)
    assert world.get_deployment("web")["metadata"]["annotations"][REVISION] == revision
    assert world.image_of("web") == restored
    assert [r["result"] for r in rollouts(world, policy)] == ["RolledBack"]
