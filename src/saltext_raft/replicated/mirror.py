"""The replicated Salt cache, engine side: the state machine wrapper and its on-disk mirror.

Lives here: :class:`MirrorWriter` (one thread that applies mirror jobs in apply order and tells
the event loop how far it got), :class:`CacheStateMachine` (the runtime's state machine: wraps
:class:`saltext_raft.kv.KVStateMachine` and queues every change it applies to the mirror) and
:func:`new_mirror` (the layout's writer).
Must not live here: the two layouts of the copy (``replicated/localfs.py``,
``replicated/sqlite.py``), the socket the workers talk to (``replicated/service.py``), the driver
the workers load (``replicated/driver.py``), Raft rules.

Why a thread: a mirror write is a small file write and rename (tens of microseconds, more on a
busy disk). Doing it inline would stall the event loop (heartbeats, elections) behind the disk.
The writer thread applies jobs strictly in the order ``apply`` queued them; ``apply`` returns an
:class:`Applied` whose ``ticket`` the proposer awaits (``MirrorWriter.wait``), so a write is
acknowledged to the worker that made it only once this master's mirror shows it
(read-your-writes on the writing master).

Why no fsync: the mirror is derived state. On every engine start it is rebuilt from the Raft
state (snapshot, then log replay), so a torn mirror after a crash is repaired before the engine
acknowledges anything. A write that fails while the engine runs (disk full) is repaired the same
way, by a rebuild queued with the next applied write or by the cache service's timer
(``CacheStateMachine.repair_if_damaged``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import NamedTuple

from saltext_raft.kv import KVStateMachine
from saltext_raft.kv.machine import EXPIRE
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import UNION
from saltext_raft.kv.machine import BadName
from saltext_raft.kv.machine import bank_parts
from saltext_raft.kv.machine import check_key
from saltext_raft.kv.machine import decode_entry
from saltext_raft.kv.machine import tree_contents
from saltext_raft.queuethread import STOP
from saltext_raft.queuethread import QueueThread
from saltext_raft.replicated.localfs import LocalfsMirror

log = logging.getLogger(__name__)

#: The most jobs the loop writes itself (``MirrorWriter.inline``); bigger batches go to the
#: thread.
INLINE_MAX_JOBS = 1024
#: (bank, key) names whose checked slot the writer remembers (``MirrorWriter._path``); past
#: this many the memory starts over.
MAX_SLOTS = 1 << 14
#: Seconds between two log lines about failing mirror writes.
ERROR_LOG_INTERVAL = 10.0
#: Seconds between two repairs (rebuilds from the state machine) after failed mirror writes.
REPAIR_INTERVAL = 30.0


class Applied(NamedTuple):
    """What :meth:`CacheStateMachine.apply` returns: the KV result (for a batch entry, the
    list of its commands' results), the mirror ticket to await before acknowledging, and the
    entry's index (what a relayed write's follower waits to apply, ``replicated.relay``)."""

    result: object
    ticket: int
    index: int = 0


class MirrorWriter:
    """Applies mirror jobs in order on one thread; ``wait(ticket)`` on the loop resolves once
    every job up to ``ticket`` is on disk.

    ``inline``: write small batches on the loop itself while the thread is idle (the ``sqlite``
    layout, where a batch is one transaction of cheap inserts with no fsync). Handing a batch to
    the thread and being told it is done costs two thread switches and a wait for the GIL; on
    the loop it costs only the inserts. Rebuilds and batches of more than
    :data:`INLINE_MAX_JOBS` jobs still go to the thread, so the loop never stalls on them, and
    jobs stay in order: the loop writes only when every batch handed over is done."""

    def __init__(self, mirror: LocalfsMirror, *, inline: bool = False):
        self.mirror = mirror
        self.inline = inline
        self._handed = 0  # last ticket handed to the thread
        #: The writer thread, handed lists of (ticket, job).
        self._worker = QueueThread("raft-cache-mirror", self._run)
        self._buffer: list[tuple[int, tuple]] = []  # queued on the loop, not yet handed over
        self._seq = 0  # last ticket handed out (loop thread)
        self._done = 0  # last ticket finished (loop thread's view)
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._n = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: (bank, key) -> the mirror's slot for names that passed ``check_name``: Salt writes
        #: the same few names per minion again and again, and checking and normalising them
        #: on every write was a third of the copy's Python work per store. The slot is a pure
        #: function of the names, so remembering it changes nothing but the cost.
        self._slots: dict[tuple, object] = {}
        self.counters = {
            "jobs": 0,
            "batches": 0,
            "inline_batches": 0,
            "coalesced": 0,
            "errors": 0,
            "rebuilds": 0,
        }
        self.last_error = ""
        #: Set by the writer thread when a write failed, cleared by the loop when it queues a
        #: repair (a rebuild): the mirror may miss writes until then.
        self.damaged = False
        self._last_error_log = 0.0

    # --- loop side --------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._worker.started:
            self._hand_over()
            self._worker.stop(timeout)

    def enqueue(self, job: tuple) -> int:
        """Queue ``job`` (on the loop thread); returns its ticket.

        Jobs are handed to the writer thread once per loop iteration, not one by one: the
        runtime applies a Ready's committed entries in one go, and waking the writer thread
        (and being woken by it) once per entry cost two thread switches per store on every
        master, more CPU than the write itself when the mirror is on tmpfs."""
        self._seq += 1
        self._buffer.append((self._seq, job))
        if len(self._buffer) == 1:
            if self._loop is None or self._loop.is_closed():
                self._hand_over()  # not started yet: the thread drains it when it starts
            else:
                self._loop.call_soon(self._hand_over)
        return self._seq

    def _hand_over(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        if (
            self.inline
            and self._worker.started
            and self._handed <= self._done
            and len(batch) <= INLINE_MAX_JOBS
            and all(job[0] != "rebuild" for _, job in batch)
        ):
            self._write_batch(batch)
            self.counters["inline_batches"] += 1
            self._progress(batch[-1][0])
            return
        self._handed = batch[-1][0]
        self._worker.put(batch)

    @property
    def ticket(self) -> int:
        """The ticket of the last queued job (wait on it to see everything applied so far)."""
        return self._seq

    def done(self, ticket: int) -> bool:
        """Whether every job up to ``ticket`` is written (as far as the loop knows)."""
        return ticket <= self._done

    def future(self, ticket: int) -> asyncio.Future:
        """A future that is done once every job up to ``ticket`` is written."""
        fut = self._loop.create_future()
        if ticket <= self._done:
            fut.set_result(None)
        else:
            self._n += 1
            heapq.heappush(self._waiters, (ticket, self._n, fut))
        return fut

    async def wait(self, ticket: int) -> None:
        if ticket > self._done:
            await self.future(ticket)

    def _progress(self, done: int) -> None:
        self._done = max(self._done, done)
        heap = self._waiters
        while heap and heap[0][0] <= self._done:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    # --- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            parts = self._worker.take()
            stop = STOP in parts
            if stop:
                parts = parts[: parts.index(STOP)]
            batch = [item for part in parts for item in part]
            if batch:
                self._write_batch(batch)
                self._report(batch[-1][0])
            if stop:
                self.mirror.close()
                return

    def _write_batch(self, batch: list[tuple[int, tuple]]) -> None:
        try:
            with self.mirror.transaction():
                self._do_batch([job for _, job in batch])
        except Exception as exc:  # pylint: disable=broad-except
            self._failed("batch", exc)  # e.g. the commit of a full disk
        self.counters["batches"] += 1

    def _do_batch(self, jobs: list[tuple]) -> None:
        """Apply ``jobs`` (in apply order) with the same end result as one by one.

        Between two barriers (a bank flush or a rebuild, which touch many paths) the jobs each
        touch one file, so only the last job per path matters: earlier ones are skipped
        (coalesced). Everything in ``jobs`` is on disk when this returns.

        Writing the survivors on several threads was tried: on the ext4 disk of the benchmark
        machine it was no faster (create + rename serialize in the kernel), so one thread."""
        self.counters["jobs"] += len(jobs)
        run: dict = {}
        for job in jobs:
            path = self._path(job)
            if path is None:  # a barrier: finish the run before it, then apply it alone
                self._write_run(run)
                run = {}
                self._do(job)
            else:
                if path in run:
                    self.counters["coalesced"] += 1
                    del run[path]  # keep apply order of the survivors (for the tests' sake)
                run[path] = job
        self._write_run(run)

    def _path(self, job: tuple) -> object:
        """The one place (``mirror.slot``) a store or key flush touches; None for jobs that
        touch more (bank flush, rebuild) and for names the mirror refuses (``_do`` reports
        those)."""
        if job[0] == "store" or (job[0] == "flush" and job[2] is not None):
            names = (job[1], job[2])
            slot = self._slots.get(names)
            if slot is None:
                try:
                    check_key(job[1], job[2])
                except BadName:
                    return None
                if len(self._slots) >= MAX_SLOTS:
                    self._slots = {}
                slot = self._slots[names] = self.mirror.slot(job[1], job[2])
            return slot
        return None

    def _write_run(self, run: dict) -> None:
        write_slots = getattr(self.mirror, "write_slots", None)
        if write_slots is None or not run:
            for job in run.values():
                self._do(job)
            return
        try:
            # Every job of a run touches its own slot, so they commute: the layout may write
            # them in any order (the sqlite layout: one statement per kind for the whole run).
            write_slots(run.items())
        except Exception as exc:  # pylint: disable=broad-except
            self._failed("store", exc)

    def _report(self, last: int) -> None:
        if last and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._progress, last)
            except RuntimeError:  # loop closed meanwhile
                pass

    def _do(self, job: tuple) -> None:
        kind = job[0]
        try:
            if kind == "store":
                self.mirror.store(*job[1:])
            elif kind == "flush":
                self.mirror.flush(*job[1:])
            elif kind == "rebuild":  # ("rebuild", KVStateMachine.copy_tree())
                self.counters["rebuilds"] += 1
                t0 = time.monotonic()
                stats = self.mirror.rebuild(*tree_contents(job[1]))
                log.info(
                    "saltext-raft cache: mirror %s rebuilt in %.3fs (%s)",
                    self.mirror.root,
                    time.monotonic() - t0,
                    stats,
                )
        except Exception as exc:  # pylint: disable=broad-except
            self._failed(kind, exc)

    def _failed(self, kind: str, exc: Exception) -> None:
        # The Raft state is authoritative and the entry is committed: a failed mirror write
        # makes this master's local reads stale, it does not undo the write. Say so loudly
        # (rate-limited) and keep going; the state machine queues a rebuild (a repair) with a
        # later write, at most every REPAIR_INTERVAL seconds, and every engine start rebuilds.
        self.damaged = True
        self.counters["errors"] += 1
        self.last_error = f"{kind}: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL:
            self._last_error_log = now
            log.error(
                "saltext-raft cache: mirror write failed (%d so far; local reads on this "
                "master may be stale until the copy is repaired, with a later write or at the "
                "engine's next start): %s",
                self.counters["errors"],
                self.last_error,
            )


class CacheStateMachine:
    """The runtime's state machine when the engine hosts the Salt cache.

    Deterministic part: :class:`KVStateMachine` (identical on every master). Local side effect:
    each change queued to the mirror in apply order. Results are :class:`Applied`.
    """

    def __init__(
        self, writer: MirrorWriter, *, clock=time.monotonic, repair_interval=REPAIR_INTERVAL
    ):
        self.kv = KVStateMachine()
        self.writer = writer
        self._synced = False  # the mirror was rebuilt from this state at least once
        self._clock = clock
        self._repair_interval = repair_interval
        self._last_repair = float("-inf")
        #: ``on_change(bank, key, ticket)`` after each command that changed the state (``key``
        #: None: a whole bank; ``bank`` None: everything, a rebuild); ``ticket`` is the mirror
        #: ticket that shows it. Called on the loop: be quick (the cache service's watchers).
        self.on_change = None

    def _sync_mirror(self) -> None:
        # The writer thread lists the copy's banks and keys: on the loop, walking 30,000 keys
        # took ~190 ms, copying the tree takes 10-16 ms (bench snapshot).
        self.writer.enqueue(("rebuild", self.kv.copy_tree()))
        self._synced = True
        if self.on_change is not None:
            self.on_change(None, None, self.writer.ticket)

    def apply(self, entry) -> Applied:
        if not self._synced:
            # First apply after start without a snapshot: the log is replayed from the start,
            # so the mirror starts from the empty state (stale files from an old run go).
            self._sync_mirror()
        else:
            self.repair_if_damaged()
        batch, cmds = decode_entry(entry.data)
        if batch:
            results = [self._apply_command(cmd) for cmd in cmds]
        else:
            results = self._apply_command(cmds[0])
        return Applied(results, self.writer.ticket, entry.index)

    def _apply_command(self, cmd):
        kv = self.kv
        before = kv.applied_commands
        # an expire removes sub-banks the command does not name: learn which before applying
        gone = kv.expired(cmd.bank, cmd.cutoff()) if cmd.op == EXPIRE else ()
        result = kv.apply_command(cmd)
        if kv.applied_commands == before:  # a retry the dedup table answered: nothing changed
            return result
        if cmd.op == EXPIRE:
            for name in gone:
                sub = "/".join([*bank_parts(cmd.bank), name])
                self.writer.enqueue(("flush", sub, None))
                if self.on_change is not None:
                    self.on_change(sub, None, self.writer.ticket)
            return result
        if cmd.op == UNION:  # the merged value, as the state machine now holds it
            self.writer.enqueue(("store", cmd.bank, cmd.key, kv.fetch(cmd.bank, cmd.key), cmd.ts))
        elif cmd.op == FLUSH:
            if result:
                self.writer.enqueue(("flush", cmd.bank, cmd.key))
        elif cmd.op == STORE or result:  # an add that found the key present changed nothing
            self.writer.enqueue(("store", cmd.bank, cmd.key, cmd.value, cmd.ts))
        else:
            return result
        if self.on_change is not None:
            self.on_change(cmd.bank, cmd.key, self.writer.ticket)
        return result

    def repair_if_damaged(self) -> bool:
        """Queue a repair if a mirror write failed and the last repair is ``repair_interval``
        seconds old. Called on the loop thread, between two applies: by ``apply``, and by the
        cache service's timer for a master that receives no more writes."""
        if self.writer.damaged and self._clock() - self._last_repair >= self._repair_interval:
            self._repair()
            return True
        return False

    def _repair(self) -> None:
        """A mirror write failed (disk full, permissions): rewrite the whole copy from the
        state applied so far, in order before the entry being applied. If the disk still
        fails, the writer marks the copy damaged again and the next repair waits
        ``repair_interval`` seconds (a walk of the whole state runs on the loop)."""
        self.writer.damaged = False
        self._last_repair = self._clock()
        log.warning(
            "saltext-raft cache: repairing the local copy %s after failed writes (%s)",
            self.writer.mirror.root,
            self.writer.last_error,
        )
        self._sync_mirror()

    def snapshot(self) -> bytes:
        return self.kv.snapshot()

    def snapshot_later(self):
        return self.kv.snapshot_later()

    def restore(self, data: bytes) -> None:
        self.restore_later(data)()()

    def restore_later(self, data: bytes):
        """The KV state's decoding for a worker thread; its install (on the loop) also queues
        the local copy's rebuild from the new state."""
        decode = self.kv.restore_later(data)

        def decode_then_install():
            install = decode()

            def install_and_sync():
                install()
                self._sync_mirror()

            return install_and_sync

        return decode_then_install


def new_mirror(backend: str, root: str):
    """The local copy's writer for ``raft_cache_backend`` (``cacheconfig.BACKENDS``)."""
    if backend == "sqlite":
        from saltext_raft.replicated.sqlite import SqliteMirror  # pylint: disable=import-outside-toplevel

        return SqliteMirror(root)
    return LocalfsMirror(root)
