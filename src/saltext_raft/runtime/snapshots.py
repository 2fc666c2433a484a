"""Snapshots of the state machine: taking them, recording them in the core, decoding them.

Lives here: :class:`Snapshots` — the periodic snapshot every ``snapshot_interval`` applied
entries (encoded on a worker thread when the state machine offers ``snapshot_later``), the
on-demand ones (``raft.snapshot``, ``raft.backup``), handing a taken snapshot to the core and
its log compaction to the storage thread, and decoding a received snapshot off the loop
(``restore_later``). Must not live here: the snapshot transfer between nodes (``core``), the
disk format (``storage``), the Ready loop that installs a decoded snapshot (``runtime.driver``).

Its port is the runtime's :class:`~saltext_raft.runtime.host.Host`, plus a getter of the state
machine (a test may swap it) and ``compact`` (queue a log compaction behind the saves; returns
its future).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from saltext_raft.core import RaftError
from saltext_raft.core import Snapshot
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.host import Host

log = logging.getLogger(__name__)

#: Seconds ``stop()`` waits for a snapshot being encoded or decoded on a worker thread.
SNAPSHOT_STOP_WAIT = 60.0


class Snapshots:
    """The snapshots one node takes and decodes; at most one encoding at a time."""

    def __init__(
        self,
        host: Host,
        state_machine: Callable[[], object],
        compact: Callable[[Snapshot], asyncio.Future],
    ):
        self._host = host
        self.id = host.node_id
        self._state_machine = state_machine  # a getter: the runtime's sm may be swapped
        self._config = host.config
        self._counters = host.counters
        self._compact = compact
        #: The applied index of the latest snapshot taken or installed here.
        self.last_index = 0
        #: The state machine's snapshot being encoded on a worker thread (``snapshot_later``).
        self.encoding: asyncio.Future | None = None
        #: A snapshot being decoded on a worker thread (``restore_later``).
        self.decoding: asyncio.Future | None = None

    async def decode(self, data: bytes) -> Callable[[], None]:
        """What installs the snapshot ``data`` into the state machine, to be called on the loop.
        A state machine with ``restore_later`` decodes on a worker thread meanwhile (nothing is
        applied until the install), so the loop keeps stepping messages and ticks; otherwise
        the install is ``restore(data)`` on the loop."""
        sm = self._state_machine()
        later = getattr(sm, "restore_later", None)
        if later is None:
            return functools.partial(sm.restore, data)
        t0 = time.perf_counter()
        job = self.decoding = self._host.loop.run_in_executor(None, later(data))
        # Shielded: a stop cancels the ready loop, not the thread's future, so stop() can wait
        # for the thread to finish (its result is then dropped).
        install = await asyncio.shield(job)
        self.decoding = None
        log.info(
            "raft %s: decoded a snapshot of %d bytes in %.3fs off the loop",
            self.id,
            len(data),
            time.perf_counter() - t0,
        )
        return install

    def installed(self, index: int) -> None:
        """A snapshot up to ``index`` (from the leader) was installed in the state machine."""
        self.last_index = index
        self._counters["snapshots_restored"] += 1

    async def settle(self) -> None:
        """For ``stop()``: let a thread that is encoding or decoding finish (it cannot be
        interrupted) rather than leave it running behind a stopped node; its result is dropped
        (``_packed`` sees the stop; the ready loop that awaited a decoding is gone)."""
        jobs = (self.encoding, self.decoding)
        self.encoding = self.decoding = None
        for job in jobs:
            if job is not None and not job.done():
                await asyncio.wait([job], timeout=SNAPSHOT_STOP_WAIT)

    def applied(self, applied: int) -> None:
        """After an apply: take the periodic snapshot once ``snapshot_interval`` entries were
        applied since the last one (unless one is being encoded)."""
        interval = self._config.snapshot_interval
        if interval and applied - self.last_index >= interval and self.encoding is None:
            sm = self._state_machine()
            later = getattr(sm, "snapshot_later", None)
            if later is None:
                self._record(applied, sm.snapshot())
            else:
                self._in_background(applied, later())

    def snapshot(self) -> dict:
        """Snapshot the state machine at the applied index now and compact the log behind it
        (the compaction is queued behind pending saves in the storage thread). Encodes on the
        loop: see :meth:`take`."""
        self._host.check_running()
        node = self._host.node
        index = node.applied_index
        self._record(index, self._state_machine().snapshot())
        return {"snapshot_index": index, "term": node.term_at(index)}

    async def take(self) -> dict:
        """:meth:`snapshot` for a caller that can wait (the ``raft.snapshot`` runner): with a
        state machine that offers ``snapshot_later`` the encoding runs on a worker thread, as
        the periodic snapshots do, so the loop keeps sending heartbeats. Waits for a periodic
        snapshot being encoded first (one at a time)."""
        host = self._host
        host.check_running()
        if getattr(self._state_machine(), "snapshot_later", None) is None:
            return self.snapshot()
        while self.encoding is not None:
            await asyncio.wait([self.encoding])
            host.check_running()
        index = host.node.applied_index
        job = self.encoding = host.loop.run_in_executor(
            None, self._state_machine().snapshot_later()
        )
        try:
            data = await job
        finally:
            if self.encoding is job:
                self.encoding = None
        host.check_running()
        self._record(index, data)
        return {"snapshot_index": index, "term": host.node.term_at(index)}

    async def backup(self) -> Snapshot:
        """The state machine at this node's applied index, with the membership in force there:
        a snapshot taken now (as :meth:`take` does, log compaction included), or the latest
        one when nothing was applied since. For ``raft.backup``."""
        self._host.check_running()
        node = self._host.node
        if node.applied_index > node.snapshot_meta.index:
            try:
                await self.take()
            except RaftError:
                # A periodic snapshot got to this index first: the latest one is just as good.
                if node.snapshot is None:
                    raise
        snap = node.snapshot
        if snap is None:
            raise RaftRuntimeError("nothing applied yet on this node: no state to back up")
        return snap

    def _in_background(self, index: int, pack) -> None:
        """Encode the state machine's snapshot at ``index`` (``pack``, from ``snapshot_later``)
        on a worker thread, not the storage thread: saves must not queue behind it, and every
        node snapshots at about the same index. The loop keeps applying meanwhile."""
        job = self.encoding = self._host.loop.run_in_executor(None, pack)
        job.add_done_callback(functools.partial(self._packed, index))

    def _packed(self, index: int, job: asyncio.Future) -> None:
        if self.encoding is job:
            self.encoding = None
        if job.cancelled() or not self._host.running():
            return
        exc = job.exception()
        if exc is not None:
            # Retried after another snapshot_interval entries; the log just stays longer.
            self.last_index = index
            log.error("raft %s: encoding the snapshot at %d failed: %s", self.id, index, exc)
            return
        try:
            self._record(index, job.result())
        except RaftError as err:  # overtaken meanwhile, e.g. by a snapshot from the leader
            log.info("raft %s: snapshot at %d dropped: %s", self.id, index, err)

    def _record(self, index: int, data: bytes) -> None:
        snap = self._host.node.create_snapshot(index, data, keep=self._config.snapshot_keep)
        self.last_index = index
        self._counters["snapshots_taken"] += 1
        # Queued behind (and serialized with) the saves in the storage thread; entries it covers
        # are applied, hence already saved.
        self._compact(snap).add_done_callback(self._compacted)

    def _compacted(self, fut) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("raft %s: log compaction failed: %s", self.id, fut.exception())
