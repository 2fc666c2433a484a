"""The runtime's storage thread: store calls run here, in submission order, off the loop.

Lives here: :class:`StorageThread` — one long-lived thread fed by a queue; ``submit`` returns
an asyncio future resolved on the loop. Must not live here: what is saved (``driver``), how
(``storage``).

Why not ``loop.run_in_executor`` with a one-worker ``ThreadPoolExecutor``: that costs, per
save, a ``concurrent.futures.Future`` (a ``Condition`` each, locked three times), the executor's
shutdown locks and idle semaphore (a Python ``Condition`` on both threads), a second
(asyncio) future chained to the first and two extra callbacks on the loop. With a Ready per
2-3 cache writes that overhead was a visible share of both the loop's and the storage thread's
CPU. Here a save is one ``SimpleQueue.put`` (C; wakes the thread), the call, and one
``call_soon_threadsafe`` that resolves the future: the same two wake-ups, nothing else.

Ordering: one thread, FIFO queue, so saves, background hard-state writes and compactions run
in exactly the order they were submitted (the driver relies on it). An exception is handed to
the future; the driver stops the node on a failed save.
"""

from __future__ import annotations

import asyncio
import queue
import threading

__all__ = ["StorageThread"]


def _resolve(fut: asyncio.Future, exc: BaseException | None, result) -> None:
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class StorageThread:
    """Runs ``fn(*args)`` calls one at a time, in order, on a thread of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str):
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # A daemon thread: if the owner never calls shutdown() (the process is exiting without
        # stopping the runtime), exit does not hang on it. Storage is crash-safe, so a save cut
        # short at exit is no worse than a crash.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def submit(self, fn, *args) -> asyncio.Future:
        """Queue ``fn(*args)``; the returned future (of this loop) gets its result."""
        if self._closed:
            raise RuntimeError("storage thread is shut down")
        fut = self._loop.create_future()
        self._queue.put((fn, args, fut))
        return fut

    def shutdown(self, timeout: float | None = None) -> None:
        """Let queued calls finish, then end the thread (waits up to ``timeout`` seconds)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        get = self._queue.get
        loop = self._loop
        while True:
            job = get()
            if job is None:
                return
            fn, args, fut = job
            job = None
            try:
                result, exc = fn(*args), None
            except BaseException as e:  # pylint: disable=broad-except
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(_resolve, fut, exc, result)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            fn = args = fut = result = exc = None
