"""The ``load`` control op of our standalone node: proposals generated inside the node.

Lives here: :func:`run_load` (``count`` proposals of ``size`` bytes with ``outstanding`` in
flight, for at most ``duration`` seconds; throughput, commit-and-apply latency and errors by
code) and the back-off of a refused proposal. Must not live here: the control channel
(``runtime.control``), the node (``standalone``), the figures' shape (``bench.figures``).

Why callbacks and not a task per outstanding slot: each proposal's answer resubmits from the
future's done-callback, as PySyncObj's load does (``bench.pysyncobj_node``), and as the Salt
cache service answers its callers (``RaftRuntime.submit``). A task per slot costs a task step
(coroutine resume, a future's callbacks, a scheduling hop) per commit, which at 20,000
outstanding is a visible part of the leader's CPU: the benchmark would measure its own client.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time

from saltext_raft.bench.figures import load_figures
from saltext_raft.runtime import Overloaded
from saltext_raft.runtime import RaftRuntimeError

#: A slot refused as ``overloaded`` waits this long, doubling up to the cap, as a client that
#: backs off would; a refusal does not count toward ``count`` (it proposed nothing).
BACKOFF_FIRST = 0.005
BACKOFF_CAP = 0.5


class _Load:
    def __init__(self, rt, count: int, outstanding: int, payload: bytes, timeout: float, duration):
        self.rt = rt
        self.count = count
        self.payload = payload
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.start = time.perf_counter()
        self.stop_at = self.start + duration
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.issued = 0
        self.slots = outstanding
        self.finished = self.loop.create_future()

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def issue(self, backoff: float = BACKOFF_FIRST) -> None:
        """Propose the next payload in this slot, or close the slot when the load is done."""
        while True:
            t0 = time.perf_counter()
            if self.issued >= self.count or t0 >= self.stop_at:
                self.slots -= 1
                if not self.slots and not self.finished.done():
                    self.finished.set_result(None)
                return
            try:
                fut = self.rt.submit(self.payload, self.timeout)
            except Overloaded:
                self._error("overloaded")
                delay = min(backoff, max(0.0, self.stop_at - t0))
                self.loop.call_later(delay, self.issue, min(backoff * 2, BACKOFF_CAP))
                return
            except RaftRuntimeError as exc:
                self._error(exc.code)
                self.issued += 1
                continue
            self.issued += 1
            fut.add_done_callback(functools.partial(self._answered, t0))
            return

    def _answered(self, t0: float, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self._error("cancelled")
        elif fut.exception() is None:
            self.latencies.append(time.perf_counter() - t0)
        else:
            exc = fut.exception()
            self._error(exc.code if isinstance(exc, RaftRuntimeError) else type(exc).__name__)
        self.issue()


async def run_load(rt, req: dict) -> dict:
    """Propose ``count`` payloads of ``size`` bytes with ``outstanding`` in flight through
    ``rt`` (a started ``RaftRuntime``), for at most ``duration`` seconds. Returns throughput,
    per proposal commit-and-apply latency, and the errors by code (``overloaded``: refused at
    once, counted per refusal). Every proposal ends within its ``timeout``, so this does too."""
    count = int(req.get("count", 1000))
    size = int(req.get("size", 100))
    outstanding = max(1, int(req.get("outstanding", 1)))
    duration = float(req.get("duration", 10.0))
    timeout = float(req.get("timeout", 5.0))
    payload = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"x")
    load = _Load(rt, count, outstanding, payload, timeout, duration)
    for _ in range(outstanding):
        load.issue()
    await load.finished
    return load_figures(load.latencies, load.errors, time.perf_counter() - load.start)
