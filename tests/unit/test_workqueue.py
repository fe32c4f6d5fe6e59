"""The work queue: deduplication, one worker per key, delayed adds, per-key backoff."""

from __future__ import annotations

import threading

from imagedrift.engine.workqueue import WorkQueue


def make() -> tuple[WorkQueue, list[float]]:
    clock = [100.0]
    return WorkQueue(base_delay=1.0, max_delay=8.0, clock=lambda: clock[0]), clock


def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue, _ = make()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", None]


def test_a_key_added_while_processing_comes_back_after_done() -> None:
    queue, _ = make()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")  # a change arrived while a worker holds it
    assert queue.get(0) is None, "never to two workers at once"
    queue.done("a")
    assert queue.get(0) == "a"


def test_delayed_keys_come_when_due_and_the_earliest_due_time_wins() -> None:
    queue, clock = make()
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 30)
    assert queue.get(0) is None
    clock[0] += 5
    assert queue.get(0) == "a"
    queue.done("a")
    clock[0] += 100
    assert queue.get(0) is None, "the superseded due times do not hand it out again"


def test_backoff_doubles_per_failure_up_to_the_cap_and_forget_resets_it() -> None:
    queue, _ = make()
    assert [queue.retry("a") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    queue.forget("a")
    assert queue.retry("a") == 1.0
    assert queue.backoff("b") == 1.0 and queue.failures("b") == 1


def test_get_waits_for_a_key_from_another_thread_and_shutdown_wakes_it() -> None:
    queue = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    worker.start()
    queue.add("x")
    worker.join(timeout=10)
    assert got == ["x"]
    waiting = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiting.start()
    queue.shutdown()
    waiting.join(timeout=10)
    assert got == ["x", None] and not waiting.is_alive()
