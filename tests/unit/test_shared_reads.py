"""Registry reads shared by every policy for an interval (``engine.shared_reads``): one
lookup per tag and per tag list, however many policies ask, failures included, and a push
event drops them."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from imagedrift.core.refs import ImageRef
from imagedrift.engine.caches import FAILURE_MEMORY, TtlCache
from imagedrift.engine.shared_reads import SharedReads
from imagedrift.errors import RegistryError, RegistryThrottled, RequestBudgetSpent
from imagedrift.registry.manifests import Documents

REF = ImageRef.parse("reg.example/shop/web:1.4")


class Registry:
    """Counts what it is asked; answers or fails as told."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = False
        self.refuse: RegistryError | None = None  # raised instead of answering
        self.gate: threading.Event | None = None

    def resolve_digest(self, ref: ImageRef) -> str:
        self.asked.append(f"HEAD {ref}")
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RegistryError("reg.example: 503 Service Unavailable")
        if self.refuse is not None:
            raise self.refuse
        return "sha256:" + "a" * 64

    def list_tags(self, ref: ImageRef) -> list[str]:
        self.asked.append(f"LIST {ref.name}")
        return ["1.3", "1.4"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shared() -> tuple[SharedReads, TtlCache, Registry, Clock]:
    clock = Clock()
    cache = TtlCache(clock=clock)
    return SharedReads(cache), cache, Registry(), clock


def test_twenty_policies_one_lookup_per_interval() -> None:
    reads, _, registry, clock = shared()
    client: Any = registry
    for _ in range(20):
        assert reads.tag_digest(client, REF, 60) == "sha256:" + "a" * 64
        assert reads.tags(client, REF, 60) == ["1.3", "1.4"]
    assert registry.asked == ["HEAD reg.example/shop/web:1.4", "LIST reg.example/shop/web"]
    clock.now = 61
    reads.tag_digest(client, REF, 60)
    assert len(registry.asked) == 3, "asked again once the interval passed"


def test_a_push_event_drops_them() -> None:
    reads, cache, registry, _ = shared()
    client: Any = registry
    reads.tag_digest(client, REF, 60)
    reads.tags(client, REF, 60)
    assert cache.invalidate(REF.name) == 2
    reads.tag_digest(client, REF, 60)
    assert len(registry.asked) == 3


def test_a_failure_answers_for_everyone_for_a_few_seconds() -> None:
    reads, _, registry, clock = shared()
    client: Any = registry
    registry.fail = True
    for _ in range(5):
        with pytest.raises(RegistryError, match="503"):
            reads.tag_digest(client, REF, 60)
    assert len(registry.asked) == 1
    clock.now = FAILURE_MEMORY
    registry.fail = False
    assert reads.tag_digest(client, REF, 60).startswith("sha256:")
    assert len(registry.asked) == 2


def test_our_own_budget_refusing_is_not_an_answer_to_remember() -> None:
    """Nothing was sent: the next policy asking may find a token and must try."""
    reads, _, registry, _ = shared()
    client: Any = registry
    registry.refuse = RequestBudgetSpent("reg.example: budget spent", retry_after=0.4)
    with pytest.raises(RequestBudgetSpent):
        reads.tag_digest(client, REF, 60)
    registry.refuse = None
    assert reads.tag_digest(client, REF, 60).startswith("sha256:")
    assert len(registry.asked) == 2


def test_a_429_is_remembered_as_long_as_the_registry_asked() -> None:
    reads, _, registry, clock = shared()
    client: Any = registry
    registry.refuse = RegistryThrottled("reg.example: 429", retry_after=2.0)
    for _ in range(3):
        with pytest.raises(RegistryThrottled):
            reads.tag_digest(client, REF, 60)
    assert len(registry.asked) == 1, "everyone waits, as asked"
    registry.refuse = None
    clock.now = 2.0
    assert reads.tag_digest(client, REF, 60).startswith("sha256:")
    assert len(registry.asked) == 2, "and no longer than asked"


def test_workers_asking_at_once_wait_for_the_one_in_flight() -> None:
    """The registry answers only once all four workers have asked (each passed the first
    cache look): without the single flight all four would be in the registry by then."""
    reads, _, registry, _ = shared()
    client: Any = registry
    registry.gate = threading.Event()
    asked_by: set[int] = set()
    known = reads._known

    def counting(key: tuple[str, ...], kind: type[str]) -> str | None:
        asked_by.add(threading.get_ident())
        return known(key, kind)

    reads._known = counting  # type: ignore[method-assign,assignment]
    answers: list[str] = []
    workers = [
        threading.Thread(target=lambda: answers.append(reads.tag_digest(client, REF, 60)))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(asked_by) == 4)
    registry.gate.set()
    for worker in workers:
        worker.join(10)
    assert len(answers) == 4 and len(set(answers)) == 1
    assert len(registry.asked) == 1


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


class ManifestRegistry(Registry):
    """Also serves manifests (read by tag, the answer names the digest)."""

    host = "reg.example"

    def get_manifest(self, ref: ImageRef) -> tuple[bytes, str, str]:
        self.asked.append(f"GET {ref}")
        return b"{}", "application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64


def test_a_tag_first_seen_is_read_by_its_manifest_and_the_manifest_kept() -> None:
    clock = Clock()
    documents = Documents()
    reads, registry = SharedReads(TtlCache(clock=clock), documents), ManifestRegistry()
    client: Any = registry
    digest = reads.tag_digest(client, REF, 60)
    assert registry.asked == ["GET reg.example/shop/web:1.4"]
    # The image behind the digest starts from the kept manifest: 1 request, not 2.
    read = documents.manifest(
        lambda ref: (_ for _ in ()).throw(AssertionError("read again")), "reg.example"
    )
    assert read(REF.with_digest(digest))[2] == digest
    clock.now = 61
    assert reads.tag_digest(client, REF, 60) == digest
    assert registry.asked[1:] == ["HEAD reg.example/shop/web:1.4"], "known tags: a HEAD"
