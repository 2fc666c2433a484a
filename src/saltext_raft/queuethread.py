"""One daemon thread fed by a queue: started, handed items, drained in batches, stopped.

Lives here: :class:`QueueThread` and its stop marker :data:`STOP`, the one way the engine's
helper threads (the cache copy's writer, key revocation, Salt 3007's key directories) are
started, fed, drained and stopped. Must not live here: what a thread does with its items (each
owner's ``target``), the runtime's storage thread (``runtime/storage_thread.py``: it hands
results back to the loop, one call at a time, in order).

A thread takes what is queued as a batch (:meth:`QueueThread.take`): the first item waits up to
a bound, everything already queued behind it comes along, so a burst costs one wake-up.
:meth:`QueueThread.stop` queues :data:`STOP` behind everything already handed over, so a worker
sees every item put before the stop, and then joins the thread with a bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


#: The item :meth:`QueueThread.stop` queues: a worker that takes it finishes what came before it
#: in the same batch (its owner decides) and returns.
STOP = _Stop()


class QueueThread:
    """A daemon thread named ``name`` running ``target()``, which takes its work with
    :meth:`take` and returns once it has taken :data:`STOP`."""

    def __init__(self, name: str, target: Callable[[], None]):
        self.name = name
        self._target = target
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        """Hand ``item`` to the thread (from any thread; never blocks)."""
        self._queue.put(item)

    def pending(self) -> int:
        """Items handed over and not taken yet."""
        return self._queue.qsize()

    def take(self, timeout: float | None = None) -> list:
        """Wait up to ``timeout`` seconds (None: for ever) for one item, then take everything
        queued behind it; ``[]`` when nothing came in time. Called by the thread."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def stop(self, timeout: float = 5.0) -> None:
        """Queue :data:`STOP` behind what was handed over and wait up to ``timeout`` for the
        thread to return. A second call, or one before :meth:`start`, does nothing."""
        if self._thread is not None:
            self._queue.put(STOP)
            self._thread.join(timeout)
            self._thread = None
