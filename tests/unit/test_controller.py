"""The controller's routing: what a watch event, a base schedule tick or a push queues,
when status is written, and that nothing runs while this replica does not lead.

Workers are not started: each test drains the queue by hand, so every step is visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from imagedrift.core import conditions as cond
from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import parse_policy
from imagedrift.core.workloads import WorkloadRef
from imagedrift.engine.caches import BaseObservation, BaseWatcher, TtlCache
from imagedrift.engine.check import CheckResult
from imagedrift.engine.controller import Controller
from imagedrift.errors import RegistryThrottled, RegistryUnavailable

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASE = "r.io/base/python"


CLOCK = [1000.0]


class FakeChecker:
    def __init__(self, bases: BaseWatcher, searches: TtlCache) -> None:
        self.bases = bases
        self.searches = searches
        self.digest = "sha256:" + "1" * 64
        self.lookups = 0
        self.fail = False
        self.checked: list[tuple[str, int]] = []
        self.result = CheckResult(
            {"workloads": {"optedIn": 0}}, cond.ready("UpToDate", "ok"), [], None
        )

    def observe_base(self, base: Any, clock: float) -> BaseObservation:
        def lookup(_: Any) -> BaseObservation:
            self.lookups += 1
            if self.fail:
                raise RegistryUnavailable("down", registry="r.io")
            ref = ImageRef.parse(f"{BASE}:3.12@{self.digest}")
            return BaseObservation(ref, ResolvedImage(ref, self.digest, "index", ()), clock)

        return self.bases.observe(base.key, base.interval, lookup)

    def check(
        self, policy: Any, body: Any, workloads: Any, now: datetime, clock: float, **_: Any
    ) -> CheckResult:
        self.checked.append((policy.name, len(list(workloads))))
        try:
            self.observe_base(policy.base, clock)  # as the real check does, first of all
        except RegistryUnavailable as exc:
            return CheckResult({}, cond.not_ready("RegistryUnavailable", str(exc)), [], 30.0)
        return self.result


class FakeWriter:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[str] = []

    def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.statuses.append((name, dict(status)))

    def post_event(self, target: Any, type_: str, reason: str, message: str, now: Any) -> None:
        self.events.append(reason)


class FakeWorkloads:
    def __init__(self) -> None:
        self.bodies: dict[WorkloadRef, dict[str, Any]] = {}

    def items(self) -> list[dict[str, Any]]:
        return list(self.bodies.values())

    def get(self, ref: WorkloadRef) -> dict[str, Any] | None:
        return self.bodies.get(ref)

    def wait_synced(self, timeout: float) -> bool:
        return True

    def put(
        self, name: str, policy: str, image: str = "r.io/app:1"
    ) -> tuple[WorkloadRef, dict[str, Any]]:
        ref = WorkloadRef("Deployment", "ns", name)
        body = {
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {"imagedrift.io/policy": policy},
            },
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        }
        self.bodies[ref] = body
        return ref, body


def policy_body(name: str, interval: str = "60s", generation: int = 1) -> dict[str, Any]:
    return {
        "kind": "ImagePolicy",
        "metadata": {"name": name, "generation": generation},
        "spec": {"base": {"image": BASE, "tag": "3.12", "interval": interval}},
        "status": {},
    }


BASE_KEY = ("base", parse_policy("p", policy_body("p")["spec"]).base.key)  # any policy's here


def make() -> tuple[Controller, FakeChecker, FakeWriter, FakeWorkloads]:
    # The checker's caches, handed to the controller as the wiring does.
    bases, searches = BaseWatcher(clock=lambda: CLOCK[0]), TtlCache()
    checker, writer, workloads = FakeChecker(bases, searches), FakeWriter(), FakeWorkloads()
    controller = Controller(
        checker,  # type: ignore[arg-type]
        writer,
        workloads,
        bases=bases,
        searches=searches,
        now=lambda: NOW,
        clock=lambda: CLOCK[0],
    )
    return controller, checker, writer, workloads


def drain(controller: Controller, limit: int = 100) -> list[Any]:
    """Process every queued key now (bounded); the keys in the order processed."""
    seen = []
    for _ in range(limit):
        key = controller.queue.get(timeout=0)
        if key is None:
            break
        seen.append(key)
        controller._process(key)
        controller.queue.done(key)
    return seen


def test_nothing_runs_while_this_replica_does_not_lead() -> None:
    controller, checker, writer, _ = make()
    controller.policy_seen(policy_body("p"))
    drain(controller)
    assert checker.checked == [] and checker.lookups == 0 and writer.statuses == []
    controller.lead()
    drain(controller)
    assert checker.checked == [("p", 0)] and checker.lookups == 1


def test_losing_the_lead_stops_work_and_forgets_what_was_written() -> None:
    controller, checker, writer, _ = make()
    controller.policy_seen(policy_body("p"))
    controller.lead()
    drain(controller)
    assert len(writer.statuses) == 1 and controller._written
    controller.unlead()
    assert controller._written == {}, "the next leader may write: our copy is stale"
    checker.checked.clear()
    controller.queue.add(("policy", "p"))
    controller.queue.add(BASE_KEY)
    drain(controller)
    assert checker.checked == [] and len(writer.statuses) == 1
    controller.lead()
    keys = drain(controller)
    assert ("policy", "p") in keys and any(k[0] == "base" for k in keys), "all queued again"


def test_status_is_written_once_and_not_again_while_nothing_changes() -> None:
    controller, checker, writer, _ = make()
    controller.policy_seen(policy_body("p"))
    controller.lead()
    drain(controller)
    controller.queue.add(("policy", "p"))
    drain(controller)
    assert len(checker.checked) == 2 and len(writer.statuses) == 1


def test_a_base_that_did_not_move_queues_no_policy_and_one_that_moved_queues_its_followers() -> (
    None
):
    controller, checker, _, _ = make()
    for name in ("a", "b"):
        controller.policy_seen(policy_body(name))
        controller.lead()
    drain(controller)
    key = BASE_KEY
    checker.checked.clear()
    lookups = checker.lookups
    CLOCK[0] += 61  # the interval passed
    controller.queue.add(key)
    assert drain(controller) == [key], "an unchanged digest wakes nobody"
    assert checker.lookups == lookups + 1
    checker.digest = "sha256:" + "2" * 64
    CLOCK[0] += 61
    controller.queue.add(key)
    assert set(drain(controller)[1:]) == {("policy", "a"), ("policy", "b")}
    assert checker.lookups == lookups + 2, "one lookup for both followers"


def test_a_workload_change_queues_only_the_policy_that_selects_it() -> None:
    controller, checker, _, workloads = make()
    for name in ("a", "b"):
        controller.policy_seen(policy_body(name))
        controller.lead()
    drain(controller)
    checker.checked.clear()
    ref, body = workloads.put("web", "a")
    controller.workload_changed(ref, None, body)
    drain(controller)
    assert checker.checked == [("a", 1)]
    moved = {**body, "metadata": {**body["metadata"], "labels": {"imagedrift.io/policy": "b"}}}
    workloads.bodies[ref] = moved
    checker.checked.clear()
    controller.workload_changed(ref, body, moved)
    drain(controller)
    assert sorted(checker.checked) == [("a", 0), ("b", 1)], "both the old and the new policy"


def test_a_status_only_change_of_the_policy_queues_nothing() -> None:
    controller, checker, _, _ = make()
    controller.policy_seen(policy_body("p"))
    controller.lead()
    drain(controller)
    checker.checked.clear()
    controller.policy_seen({**policy_body("p"), "status": {"observedGeneration": 1}})
    assert drain(controller) == []
    controller.policy_seen({**policy_body("p", interval="30s", generation=2)})
    drain(controller)
    assert checker.checked == [("p", 0)]


def test_an_invalid_spec_is_stalled_once_without_checking() -> None:
    controller, checker, writer, _ = make()
    bad = policy_body("p")
    bad["spec"]["base"]["interval"] = "soon"
    controller.policy_seen(bad)
    controller.lead()
    drain(controller)
    controller.queue.add(("policy", "p"))
    drain(controller)
    assert checker.checked == [] and len(writer.statuses) == 1
    conditions = {c["type"]: c for c in writer.statuses[0][1]["conditions"]}
    assert conditions["Stalled"]["status"] == "True"
    assert writer.events == ["InvalidSpec"]


def test_a_failing_base_backs_off_and_its_followers_see_the_fault() -> None:
    controller, checker, _, _ = make()
    checker.fail = True
    controller.policy_seen(policy_body("p"))
    controller.lead()
    drain(controller)
    key = BASE_KEY
    assert controller.queue.failures(key) >= 1


def test_a_push_of_the_base_re_resolves_it_and_a_push_of_an_app_wakes_its_policies() -> None:
    controller, checker, _, workloads = make()
    controller.policy_seen(policy_body("p"))
    controller.lead()
    ref, body = workloads.put("web", "p", image="r.io/team/app:1.0.0")
    controller.workload_changed(ref, None, body)
    drain(controller)
    lookups = checker.lookups
    assert controller.wake_for_image(f"{BASE}:3.12") == ["p"]
    assert BASE_KEY in drain(controller)
    assert checker.lookups == lookups + 1, "the checker's own base lookup was invalidated"
    checker.searches.put(("r.io/team/app", "semver"), ["1.0.0"], 60.0)
    assert controller.wake_for_image("r.io/team/app:1.0.1") == ["p"]
    assert len(checker.searches) == 0, "the checker's own searches were dropped"
    assert drain(controller) == [("policy", "p")]
    assert controller.wake_for_image("r.io/other/thing:1") == []


def test_a_throttled_base_lookup_waits_retry_after_from_when_it_failed() -> None:
    """The client retries a 429 in place before giving up, so the lookup ends long after it
    began; Retry-After counts from the end, or the next lookup went out at once."""
    now = [0.0]
    watcher = BaseWatcher(clock=lambda: now[0])
    lookups: list[float] = []

    def slow_throttled(_previous: BaseObservation | None) -> BaseObservation:
        lookups.append(now[0])
        now[0] += 9.0  # three in-place retries of a Retry-After of 3 s
        raise RegistryThrottled("429", registry="r.example", retry_after=3.0)

    with pytest.raises(RegistryThrottled):
        watcher.observe("base", 60.0, slow_throttled)
    watcher.invalidate("base")  # the base's schedule asks to look again
    now[0] += 2.0  # 11 s after the lookup began, 2 s after the last 429
    with pytest.raises(RegistryThrottled):
        watcher.observe("base", 60.0, slow_throttled)
    assert lookups == [0.0], "asked again before the Retry-After the registry gave"
    now[0] += 1.5
    with pytest.raises(RegistryThrottled):
        watcher.observe("base", 60.0, slow_throttled)
    assert lookups == [0.0, 12.5]
