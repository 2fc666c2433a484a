"""``saltext_raft.queuethread``: the helper threads' one way to start, take batches and stop."""

from __future__ import annotations

import threading

from saltext_raft.queuethread import STOP
from saltext_raft.queuethread import QueueThread


def test_a_burst_is_taken_as_one_batch_and_stop_comes_after_everything_put_before_it():
    batches = []
    ready = threading.Event()

    def target():
        ready.wait(10)
        while True:
            items = thread.take(5)
            batches.append(items)
            if STOP in items:
                return

    thread = QueueThread("test-queue-thread", target)
    thread.start()
    for i in range(5):
        thread.put(i)
    assert thread.pending() == 5
    ready.set()
    thread.stop(10)
    assert not thread.started
    flat = [item for batch in batches for item in batch]
    assert flat == [0, 1, 2, 3, 4, STOP]
    assert batches[0][:5] == [0, 1, 2, 3, 4]  # the burst came in one wake-up


def test_take_returns_nothing_when_nothing_comes_in_time():
    thread = QueueThread("idle", lambda: None)
    assert thread.take(0.01) == []


def test_stop_before_start_and_a_second_stop_do_nothing():
    thread = QueueThread("never-started", lambda: None)
    thread.stop(0.1)
    assert thread.pending() == 0  # no STOP queued for a thread that never ran
    thread.start()
    thread.stop(5)
    thread.stop(5)
    assert not thread.started
