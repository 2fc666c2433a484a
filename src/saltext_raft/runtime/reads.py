"""Linearizable reads (ReadIndex, thesis §6.4) and the catch-up barrier after a start.

Lives here: :class:`Reads` — asking the core for a read index (retried after a lost message),
matching the read states of a Ready to the waiting callers, releasing them once this node has
applied up to their index, and the one barrier after start (``caught_up_index``; see
"Catching up after a start" below). Must not live here: the ReadIndex protocol
itself (``core``), the Ready loop (``runtime.driver``).

**Catching up after a start.** A node that restarts replays its own log, which may end long
before what the cluster committed while it was down. Whatever it serves from its state before
it hears from a leader may be stale (a key deleted meanwhile still looks present). So right
after ``start()`` the runtime takes one ReadIndex barrier (thesis §6.4: the leader confirms
its commit index with a heartbeat round) and waits until it has applied up to it;
``caught_up_index`` is None until then, and observers get ``{"event": "caught_up"}``. The
barrier is retried until it succeeds (without a quorum it keeps trying) or the node stops.

Its port is the runtime's :class:`~saltext_raft.runtime.host.Host`, plus ``new_context`` (a
fresh read context, ``Proposals.context``) and ``emit`` (tell observers).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

from saltext_raft.core import NotLeader
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Stopped
from saltext_raft.runtime.host import Host

log = logging.getLogger(__name__)


class Reads:
    """The read barriers of one node: waiting for a read index, then for its apply."""

    def __init__(self, host: Host, new_context: Callable[[], bytes], emit: Callable[[dict], None]):
        self._host = host
        self.id = host.node_id
        self._counters = host.counters
        self._new_context = new_context
        self._emit = emit
        self._reads: dict[bytes, asyncio.Future] = {}  # read context -> future (read index)
        #: Callers waiting for the apply of an index: confirmed reads and :meth:`wait_applied`,
        #: as (index, order of arrival, future).
        self._read_heap: list[tuple[int, int, asyncio.Future]] = []
        #: Entries of the heap whose caller gave up (their future cancelled, :meth:`_abandon`):
        #: the heap is rebuilt without them once they are half of it, so callers that give up
        #: on an index never applied here (a bogus one a member answered) cannot grow it.
        self._abandoned = 0
        self._order = itertools.count()
        #: The read index confirmed by a leader after start, once applied here (None before).
        self.caught_up_index: int | None = None
        self._caught_up: asyncio.Event | None = None

    def started(self) -> None:
        self._caught_up = asyncio.Event()
        self.caught_up_index = None

    def waiting(self) -> int:
        return len(self._reads) + len(self._read_heap)

    async def read(self, timeout: float | None) -> int:
        """Linearizable read barrier (ReadIndex, thesis §6.4): returns the read index once this
        node has applied up to it; a read of the local state machine after that is current.
        ``timeout`` None: the ``request_timeout``."""
        host = self._host
        host.check_running()
        if timeout is None:
            timeout = host.config.request_timeout
        loop = host.loop
        ctx = self._new_context()
        fut = loop.create_future()
        self._reads[ctx] = fut
        deadline = loop.time() + timeout
        retry = host.election_seconds
        asked = False
        try:
            while True:
                host.check_running()
                try:
                    host.node.read_index(ctx)  # idempotent: a retry after a lost message is fine
                    asked = True
                    host.kick()
                except NotLeader:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    (fut,),
                    timeout=min(remaining, retry if asked else host.config.tick_seconds * 2),
                )
                if done:
                    return fut.result()
        finally:
            self._reads.pop(ctx, None)
        if not asked:
            raise NoLeader(f"no leader known within {timeout:g}s for a read")
        raise CommitTimeout(
            f"read not confirmed within {timeout:g}s (no quorum reachable, or the leader changed)"
        )

    def confirmed(self, read_states) -> None:
        """A Ready's read states: their callers wait for the apply of the index (released)."""
        for rs in read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                self._counters["reads"] += 1
                heapq.heappush(self._read_heap, (rs.index, next(self._order), fut))

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Return once this node has applied up to ``index``: an entry another member says it
        committed there (the cache service's relayed writes, ``replicated.relay``). Raises
        CommitTimeout after ``timeout`` seconds, Stopped if the node stops meanwhile."""
        host = self._host
        host.check_running()
        if host.node.applied_index >= index:
            return
        fut = host.loop.create_future()
        heapq.heappush(self._read_heap, (index, next(self._order), fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(timeout, 0.001))
        except asyncio.TimeoutError:
            raise CommitTimeout(
                f"entry {index} not applied here within {timeout:.3g}s (this node lags behind "
                "the leader)"
            ) from None
        finally:
            if not fut.done():  # timed out, or the caller was cancelled
                self._abandon(fut)

    def _abandon(self, fut: asyncio.Future) -> None:
        """The caller of ``fut`` (in the heap) gave up: cancel it, and rebuild the heap without
        such entries once they are half of it (amortised O(1) per abandoned wait)."""
        fut.cancel()
        self._abandoned += 1
        heap = self._read_heap
        if self._abandoned * 2 > len(heap):
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
            self._abandoned = 0

    def release(self, applied: int) -> None:
        """Answer the reads whose index this node has now applied."""
        heap = self._read_heap
        while heap and heap[0][0] <= applied:
            index, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(index)
            elif fut.cancelled() and self._abandoned:
                self._abandoned -= 1  # an abandoned entry left the heap here

    async def wait_caught_up(self, timeout: float | None = None) -> int:
        """Wait until the catch-up barrier after start is passed; returns its read index.
        Raises ``asyncio.TimeoutError`` after ``timeout`` (None: no limit), Stopped if the
        node stops meanwhile."""
        loop = self._host.loop
        deadline = None if timeout is None else loop.time() + timeout
        while self.caught_up_index is None:
            self._host.check_running()
            wait = 0.5 if deadline is None else min(0.5, deadline - loop.time())
            if wait <= 0:
                raise asyncio.TimeoutError(f"not caught up within {timeout:g}s")
            try:  # short waits: a stop is noticed within half a second
                await asyncio.wait_for(self._caught_up.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return self.caught_up_index

    async def catch_up(self) -> None:
        """One ReadIndex barrier after start, retried until it passes or the node stops."""
        timeout = max(self._host.election_seconds * 4, 0.5)
        attempts = 0
        while self._host.running():
            attempts += 1
            try:
                index = await self.read(timeout)
            except (NoLeader, CommitTimeout) as exc:
                if attempts == 1 or attempts % 10 == 0:
                    log.info("raft %s: not caught up with the cluster yet: %s", self.id, exc)
                continue
            except Stopped:
                return
            self.caught_up_index = index
            self._caught_up.set()
            log.info("raft %s: caught up with the cluster (read index %d applied)", self.id, index)
            self._emit({"event": "caught_up", "index": index})
            return

    def fail_all(self, exc: RaftRuntimeError) -> None:
        futs = list(self._reads.values()) + [f for _, _, f in self._read_heap]
        self._read_heap.clear()
        self._abandoned = 0
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)
