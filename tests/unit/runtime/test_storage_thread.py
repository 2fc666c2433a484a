"""The runtime's storage thread: calls run in submission order, off the loop, and their
results and exceptions reach the loop's futures."""

from __future__ import annotations

import asyncio
import threading

import pytest

from saltext_raft.runtime.storage_thread import StorageThread


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_calls_run_in_submission_order_on_one_other_thread():
    async def main():
        worker = StorageThread(asyncio.get_running_loop(), "test-store")
        seen = []

        def job(i):
            seen.append((i, threading.get_ident()))
            return i * 2

        futs = [worker.submit(job, i) for i in range(200)]
        assert await asyncio.gather(*futs) == [i * 2 for i in range(200)]
        worker.shutdown(5)
        assert [i for i, _ in seen] == list(range(200))
        threads = {t for _, t in seen}
        assert len(threads) == 1 and threading.get_ident() not in threads

    run(main())


def test_an_exception_reaches_the_future_and_later_calls_still_run():
    async def main():
        worker = StorageThread(asyncio.get_running_loop(), "test-store")

        def fail():
            raise OSError("disk on fire")

        bad = worker.submit(fail)
        good = worker.submit(lambda: "ok")
        with pytest.raises(OSError, match="disk on fire"):
            await bad
        assert await good == "ok"
        worker.shutdown(5)

    run(main())


def test_shutdown_finishes_queued_calls_and_refuses_new_ones():
    async def main():
        worker = StorageThread(asyncio.get_running_loop(), "test-store")
        release = threading.Event()
        done = []
        first = worker.submit(release.wait, 5)
        worker.submit(done.append, 1)
        release.set()
        worker.shutdown(5)  # waits for both queued calls
        assert done == [1] and not worker._thread.is_alive()  # pylint: disable=protected-access
        assert await first is True
        with pytest.raises(RuntimeError):
            worker.submit(done.append, 2)

    run(main())


def test_a_cancelled_waiter_does_not_break_the_thread():
    async def main():
        worker = StorageThread(asyncio.get_running_loop(), "test-store")
        release = threading.Event()
        slow = worker.submit(release.wait, 5)
        slow.cancel()
        release.set()
        assert await worker.submit(lambda: 7) == 7
        worker.shutdown(5)

    run(main())
