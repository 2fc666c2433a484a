"""The asyncio driver: feeds ticks and messages into the Raft core and carries out its Ready.

Lives here: :class:`RaftRuntime` — the tick timer, the Ready loop (persist → send → apply →
advance), proposals, ReadIndex reads, the catch-up barrier after start, membership changes,
leader transfer, JOIN, periodic snapshots, ``status()`` and observer hooks. Must not live
here: Salt (a test enforces it), sockets (``transport``), disk formats (``storage``), Raft
rules (``core``).

Theory of operation
-------------------
Everything runs on one event loop. Inbound messages are stepped into the core as soon as the
transport hands them over (``Transport.set_handler``); ticks come from a ``call_later`` timer;
client proposals are queued and handed to the core in batches. Each of these only *kicks* the
Ready loop, one task that does::

    while the core has a Ready:
        rd = core.ready()
        await store.save(...) in the storage thread   # the loop keeps running meanwhile
        transport.send(rd.messages)
        apply rd.snapshot / rd.committed_entries to the state machine; answer waiters
        core.advance(rd)

with two refinements of that order (docs/architecture.md, "The runtime"): a leader sends its
appends before its own save; a commit-only hard state is applied at once and rides with the
next save (or is written after an idle tick). And two savings that keep the order: a leader's
empty commit-index appends wait one loop pass so the next proposal's append can carry the
commit index instead; and, opt-in (``follower_inline_saves``), a follower saves a small Ready on
the loop itself (no thread hand-offs).

While one Ready is being persisted the loop keeps stepping inbound messages and queueing
proposals; they all land in the next Ready and share its single fsync (group commit). That is
where throughput comes from: the number of fsyncs per second is fixed by the disk, the number
of entries per fsync grows with load.

Requests that need the leader (membership, transfer) are sent to it as ``MsgType.APP``
request/reply messages (``runtime.remote``); proposals and reads are forwarded by the core.

**Catching up after a start.** A node that restarts replays its own log, which may end long
before what the cluster committed while it was down. Whatever it serves from its state before
it hears from a leader may be stale (a key deleted meanwhile still looks present). So right
after ``start()`` the runtime takes one ReadIndex barrier (thesis §6.4: the leader confirms
its commit index with a heartbeat round) and waits until it has applied up to it;
``caught_up_index`` is None until then, and observers get ``{"event": "caught_up"}``. The
barrier is retried until it succeeds (without a quorum it keeps trying) or the node stops.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from saltext_raft.core import NONE
from saltext_raft.core import ConfChange
from saltext_raft.core import Config
from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.core import HardState
from saltext_raft.core import Membership
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core import NotLeader
from saltext_raft.core import ProposalDropped
from saltext_raft.core import RaftError
from saltext_raft.core import RaftNode
from saltext_raft.core import Ready
from saltext_raft.core import Role
from saltext_raft.core import Snapshot
from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.runtime import envelope
from saltext_raft.runtime.config import DEFAULT_ELECTION_TICKS
from saltext_raft.runtime.config import DEFAULT_HEARTBEAT_TICKS
from saltext_raft.runtime.config import RuntimeConfig
from saltext_raft.runtime.errors import ApplyHalted
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Overloaded
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.errors import StaleRequest
from saltext_raft.runtime.errors import Stopped
from saltext_raft.runtime.errors import StorageFailed
from saltext_raft.runtime.limits import ENTRY_OVERHEAD
from saltext_raft.runtime.limits import PROPOSAL_BATCH_BYTES
from saltext_raft.runtime.remote import Remote
from saltext_raft.runtime.remote import RemoteNotLeader
from saltext_raft.runtime.remote import binding as remote_binding
from saltext_raft.runtime.remote import removed_message
from saltext_raft.runtime.storage_thread import StorageThread
from saltext_raft.transport.base import RateLimitedLog

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)  # per node id: lines a remote node can make repeat

_CONF_OPS = {
    "add_learner": ConfOp.ADD_LEARNER,
    "promote": ConfOp.PROMOTE,
    "demote": ConfOp.DEMOTE,
    "remove": ConfOp.REMOVE,
}
#: A follower's Ready with at most this many entries is saved on the loop (follower_inline_saves).
_INLINE_SAVE_ENTRIES = 8
#: Seconds ``stop()`` waits for a snapshot being encoded on a worker thread.
SNAPSHOT_STOP_WAIT = 60.0
#: After a refused JOIN, a node asks again after this many join intervals (or once added).
JOIN_REFUSED_WAIT = 60


def default_core_config(node_id: str, **overrides) -> Config:
    """Core timing that matches the default tick length (see ``runtime.config``)."""
    kw = {"election_ticks": DEFAULT_ELECTION_TICKS, "heartbeat_ticks": DEFAULT_HEARTBEAT_TICKS}
    kw.update(overrides)
    return Config(node_id, **kw)


class RaftRuntime:
    """One Raft node on an asyncio loop. Create, ``await start()``, use, ``await stop()``.

    ``founders`` ({node id: address}) is the founding voter set: on first start (empty store)
    a node listed there bootstraps the cluster with it; any other node starts empty and asks
    one of ``peers`` to add it (JOIN). After the first start membership comes from the log.
    ``peers`` ({node id: address}) are addresses known from configuration; the transport is
    told about them plus every address in the current membership.
    """

    def __init__(
        self,
        node_id: str,
        store,
        transport,
        state_machine,
        *,
        core_config: Config | None = None,
        config: RuntimeConfig | None = None,
        founders: dict[str, str] | None = None,
        peers: dict[str, str] | None = None,
        address: str = "",
        join: bool = False,
        rng: random.Random | None = None,
    ):
        self.id = node_id
        self.store = store
        self.transport = transport
        self.sm = state_machine
        self.core_config = (core_config or default_core_config(node_id)).validate()
        if self.core_config.id != node_id:
            raise ValueError(f"core config id {self.core_config.id!r} is not {node_id!r}")
        self.config = (config or RuntimeConfig()).validate()
        self.founders = dict(founders or {})
        self.peers = dict(peers or {})
        self.address = address or self.peers.get(node_id, "") or self.founders.get(node_id, "")
        self.join = join
        self._rng = rng or random.Random()
        self.node: RaftNode | None = None
        self._observers: list[Callable[[dict], None]] = []
        self._prefix = envelope.prefix(node_id, envelope.new_nonce())
        self._seq = 0
        self._waiting: dict[int, asyncio.Future] = {}  # proposal seq -> future
        # (data, future, seq) of proposals not yet handed to the core
        self._pending: list[tuple[bytes, asyncio.Future, int]] = []
        # (term, seq, data) of proposals handed to the core, in that order (terms never go
        # down): what _settle_sent re-sends once their term has provably ended without them.
        self._sent: deque[tuple[int, int, bytes]] = deque()
        # (deadline, seq, timeout) of proposals, checked every tick (see _expire_proposals)
        self._deadlines: list[tuple[float, int, float]] = []
        self._reads: dict[bytes, asyncio.Future] = {}  # read context -> future (read index)
        self._read_heap: list[tuple[int, int, asyncio.Future]] = []  # (index, n, future)
        self._conf_waiters: dict[
            int, list[tuple[int, asyncio.Future]]
        ] = {}  # index -> [(term, fut)]
        self._changed: asyncio.Future | None = None
        self._kicked = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage: StorageThread | None = None
        self._tasks: list[asyncio.Task] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._running = False
        self._failure: BaseException | None = None
        self._membership: Membership | None = None
        self._last_snapshot = 0
        #: The state machine's snapshot being encoded on a worker thread (``snapshot_later``).
        self._snapshot_job: asyncio.Future | None = None
        #: A snapshot being decoded on a worker thread (``restore_later``).
        self._restore_job: asyncio.Future | None = None
        #: The read index confirmed by a leader after start, once applied here (None before).
        self._caught_up_index: int | None = None
        self._caught_up: asyncio.Event | None = None
        self._term = 0
        self._saved_vote = (0, NONE)
        # A commit-only hard state waiting for the next save (or the next idle tick).
        self._deferred_hs: HardState | None = None
        self._deferred_seen: HardState | None = None
        self._storage_jobs = 0  # background saves and compactions queued in the storage thread
        self._remote = Remote(self)
        self.counters = dict.fromkeys(
            (
                "readies",
                "saves",
                "entries_saved",
                "applied",
                "proposals",
                "proposal_batches",
                "proposal_timeouts",
                "proposals_resent",
                "proposals_overloaded",
                "reads",
                "snapshots_taken",
                "snapshots_restored",
                "ticks",
                "background_saves",
                "hard_states_deferred",
                "commit_updates_merged",
                "inline_saves",
            ),
            0,
        )
        self._save_seconds = 0.0
        self._save_max = 0.0

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._caught_up_index = None
        self._storage = StorageThread(loop, f"raft-store-{self.id}")
        restored = await self._storage.submit(self.store.load)
        hs, snap, entries = restored
        fresh = hs == HardState() and snap is None and not entries
        if fresh and not self.join and self.id in self.founders:
            node = RaftNode.bootstrap(self.core_config, self._rng, self.founders)
            log.info(
                "raft %s: bootstrapping a new cluster with voters %s",
                self.id,
                sorted(self.founders),
            )
        else:
            node = RaftNode(
                self.core_config, self._rng, hard_state=hs, snapshot=snap, entries=entries
            )
            if snap is not None:
                (await self._decode_snapshot(snap.data))()
                self._last_snapshot = snap.meta.index
        self.node = node
        self._term = node.term
        self._saved_vote = (hs.term, hs.vote)
        self._running = True
        self._update_peers()
        self.transport.set_handler(self._on_message)
        await self.transport.start()
        self._tick_handle = loop.call_later(self.config.tick_seconds, self._on_tick)
        self._tasks.append(loop.create_task(self._ready_loop(), name=f"raft-ready-{self.id}"))
        removed_at = node.membership.removed_at(self.id)
        if removed_at:
            # Our own log says we were removed: stay out (no JOIN) until an operator adds us
            # back, which makes the leader replicate to us again (issue 18, M3).
            log.warning("raft %s: %s", self.id, removed_message(self.id, removed_at))
        elif not self.is_member:
            self._tasks.append(loop.create_task(self._join_loop(), name=f"raft-join-{self.id}"))
        self._tasks.append(loop.create_task(self._catch_up_loop(), name=f"raft-catchup-{self.id}"))
        self._kick()

    async def stop(self) -> None:
        if not self._running and self._storage is None:
            return
        self._running = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        jobs = (self._snapshot_job, self._restore_job)
        self._snapshot_job = self._restore_job = None
        for job in jobs:
            if job is not None and not job.done():
                # An encoding or decoding thread cannot be interrupted; let it finish rather
                # than leave it running behind a stopped node. Its result is dropped (_packed
                # sees the stop; the ready loop that awaited a decoding is gone).
                await asyncio.wait([job], timeout=SNAPSHOT_STOP_WAIT)
        self._fail_all(
            self._failure_error() if self._failure else Stopped(f"raft node {self.id} stopped")
        )
        self._remote.close()
        try:
            await self.transport.close()
        finally:
            storage, self._storage = self._storage, None
            if storage is not None:
                hs, self._deferred_hs = self._deferred_hs, None
                if hs is not None and self._failure is None:
                    try:  # a clean stop keeps the latest commit index
                        await storage.submit(self.store.save, hs, (), None)
                    except Exception as exc:  # pylint: disable=broad-except
                        log.warning("raft %s: last commit index not saved: %s", self.id, exc)
                try:
                    await storage.submit(self.store.close)
                finally:
                    storage.shutdown()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def is_member(self) -> bool:
        return self.id in self.node.membership.members

    def add_observer(self, callback: Callable[[dict], None]) -> None:
        """``callback(event)`` on every role/leader/term change (``{"event": "role", ...}``) and
        every membership change (``{"event": "membership", ...}``). Runs on the loop: be quick."""
        self._observers.append(callback)

    # ------------------------------------------------------------------------------------------
    # input: ticks and messages
    # ------------------------------------------------------------------------------------------
    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._wake.set()

    def _on_tick(self) -> None:
        if not self._running:
            return
        # Never catch up on missed ticks: after a stall the heartbeats that queued meanwhile
        # are stepped first, so a busy follower does not start a needless election.
        self._tick_handle = self._loop.call_later(self.config.tick_seconds, self._on_tick)
        self.counters["ticks"] += 1
        if self._deadlines:
            self._expire_proposals(self._loop.time())
        self._flush_deferred_hs()
        self.node.tick()
        self._kick()

    def _on_message(self, m: Message) -> None:
        if not self._running:
            return
        if m.type is MsgType.APP:
            self._remote.on_message(m)
            return
        try:
            self.node.step(m)
        except RaftError as exc:  # a message the core refuses must not kill the reader
            log.debug("raft %s: %s from %s refused: %s", self.id, m.type.name, m.frm, exc)
            return
        self._kick()

    # ------------------------------------------------------------------------------------------
    # the Ready loop
    # ------------------------------------------------------------------------------------------
    async def _ready_loop(self) -> None:
        storage = self._storage
        node = self.node
        wake = self._wake
        try:
            while self._running:
                await wake.wait()
                wake.clear()
                self._kicked = False
                self._flush_proposals()
                held: list[Message] = []
                while node.has_ready():
                    rd = node.ready()
                    self.counters["readies"] += 1
                    messages = rd.messages
                    if held:
                        messages = self._merge_held(held, messages)
                        held = []
                    if rd.must_sync:
                        hs = rd.hard_state
                        if rd.commit_only:
                            # Only the commit index changed (the core's word). Losing it in a
                            # crash is harmless (it is re-learned from the leader): it need not
                            # hold up apply, nor cost an fsync of its own: it rides along with
                            # the next save, or is written in the background after an idle tick.
                            self._deferred_hs = hs
                            self.counters["hard_states_deferred"] += 1
                        else:
                            deferred, self._deferred_hs = self._deferred_hs, None
                            if deferred is not None:
                                if hs is None and rd.snapshot is None:
                                    hs = deferred  # newer than what is on disk, never older
                                elif hs is None:
                                    self._save_in_background(deferred)  # in order, before
                                # else: hs is newer and carries a commit index at least as high
                            # What the core lets leave before this save (a leader's appends and
                            # heartbeats, thesis §10.2.1) goes now; held commit-index updates
                            # go with this Ready's appends.
                            early, messages = rd.split(messages)
                            if early:
                                self.transport.send_many(early)
                            t0 = time.perf_counter()
                            if (
                                self.config.follower_inline_saves
                                and node.role is not Role.LEADER
                                and len(rd.entries) <= _INLINE_SAVE_ENTRIES
                                and not self._storage_jobs
                            ):
                                # A follower has nothing to do until this save is done but
                                # queue what arrives meanwhile (zmq holds it); a save on the
                                # loop skips two thread hand-offs on the commit path. Large
                                # Readies mean load: those keep decoding and stepping the next
                                # batch while the storage thread syncs this one.
                                self.store.save(hs, rd.entries, rd.snapshot)
                                self.counters["inline_saves"] += 1
                            else:
                                await storage.submit(self.store.save, hs, rd.entries, rd.snapshot)
                            dt = time.perf_counter() - t0
                            self._save_seconds += dt
                            self._save_max = max(self._save_max, dt)
                            self.counters["saves"] += 1
                            self.counters["entries_saved"] += len(rd.entries)
                    if messages and rd.committed_entries and _commit_updates_only(messages):
                        held = messages  # see _merge_held
                    elif messages:
                        self.transport.send_many(messages)
                    install = None
                    if rd.snapshot is not None:
                        install = await self._decode_snapshot(rd.snapshot.data)
                    resolved = self._apply(rd, install)
                    node.advance(rd)
                    self._after_advance(rd)
                    if held and resolved:
                        # Let the callers whose proposals were just applied propose again, so
                        # the commit index rides on their append instead of a message of its own.
                        await asyncio.sleep(0)
                    self._flush_proposals()
                if held:
                    self.transport.send_many(held)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage failure or a bug: stop rather than run unsafely
            self._fatal(exc)

    def _merge_held(self, held: list[Message], messages: list[Message]) -> list[Message]:
        """Held commit-index updates, minus those the next Ready's appends make redundant.

        A leader tells followers about a new commit index with an empty append, one per
        follower per Ready. Right after an apply the callers it answered usually propose again,
        and the append carrying their entries carries the commit index too: the empty one is
        then dropped, which halves the messages per commit at one proposal in flight. Dropping
        a message is always safe (the network may lose any); only redundant ones are dropped.
        """
        newest = {}
        for m in messages:
            if m.type is MsgType.APPEND:
                newest[m.to] = max(newest.get(m.to, -1), m.commit)
        kept = [m for m in held if newest.get(m.to, -1) < m.commit]
        self.counters["commit_updates_merged"] += len(held) - len(kept)
        return kept + messages if kept else messages

    def _flush_deferred_hs(self) -> None:
        """Write a commit-only hard state that no save has picked up for a whole tick."""
        hs = self._deferred_hs
        if hs is None:
            return
        if hs is self._deferred_seen:
            self._deferred_hs = self._deferred_seen = None
            self._save_in_background(hs)
        else:
            self._deferred_seen = hs  # written at the next tick if still nobody took it

    def _in_storage_thread(self, fn, *args) -> asyncio.Future:
        """Queue background storage work; counted so that no save runs on the loop meanwhile
        (the storage thread keeps all store calls in submission order)."""
        self._storage_jobs += 1
        fut = self._storage.submit(fn, *args)
        fut.add_done_callback(self._storage_job_done)
        return fut

    def _storage_job_done(self, fut) -> None:
        self._storage_jobs -= 1

    def _save_in_background(self, hs: HardState) -> None:
        self.counters["background_saves"] += 1
        fut = self._in_storage_thread(self.store.save, hs, (), None)
        fut.add_done_callback(self._background_saved)

    def _background_saved(self, fut) -> None:
        if fut.cancelled() or fut.exception() is None or self._failure is not None:
            return
        self._fatal(fut.exception())

    def _fatal(self, exc: BaseException) -> None:
        self._failure = exc
        log.critical("raft %s: stopping: %s", self.id, exc, exc_info=exc)
        self._running = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._fail_all(self._failure_error())
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def _failure_error(self) -> RaftRuntimeError:
        if isinstance(self._failure, ApplyHalted):
            return Stopped(f"raft node {self.id} stopped: {self._failure}")
        return StorageFailed(f"raft node {self.id} stopped after a failure: {self._failure}")

    async def _decode_snapshot(self, data: bytes) -> Callable[[], None]:
        """What installs the snapshot ``data`` into the state machine, to be called on the loop.
        A state machine with ``restore_later`` decodes on a worker thread meanwhile (nothing is
        applied until the install), so the loop keeps stepping messages and ticks; otherwise
        the install is ``restore(data)`` on the loop."""
        later = getattr(self.sm, "restore_later", None)
        if later is None:
            return functools.partial(self.sm.restore, data)
        t0 = time.perf_counter()
        job = self._restore_job = self._loop.run_in_executor(None, later(data))
        # Shielded: a stop cancels the ready loop, not the thread's future, so stop() can wait
        # for the thread to finish (its result is then dropped).
        install = await asyncio.shield(job)
        self._restore_job = None
        log.info(
            "raft %s: decoded a snapshot of %d bytes in %.3fs off the loop",
            self.id,
            len(data),
            time.perf_counter() - t0,
        )
        return install

    def _apply(self, rd: Ready, install: Callable[[], None] | None) -> int:
        """Apply ``rd``'s snapshot (``install``, from :meth:`_decode_snapshot`; None when there
        is none) and entries; returns how many local proposals it answered."""
        sm = self.sm
        if install is not None:
            meta = rd.snapshot.meta
            install()
            self._last_snapshot = meta.index
            self.counters["snapshots_restored"] += 1
            for idx in [i for i in self._conf_waiters if i <= meta.index]:
                for _, fut in self._conf_waiters.pop(idx):
                    if not fut.done():
                        fut.set_exception(
                            CommitTimeout(
                                f"entry {idx} was overtaken by a snapshot; outcome unknown"
                            )
                        )
            self._emit_membership(meta.membership, meta.index)
            if self._sent:
                self._settle_overtaken(meta.term)
        pfx = self._prefix
        plen = len(pfx)
        waiting = self._waiting
        conf_waiters = self._conf_waiters
        applied = 0
        resolved = 0
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                data = e.data
                if data:
                    fut = None
                    if data.startswith(pfx):
                        fut = waiting.pop(int.from_bytes(data[plen : plen + 8], "big"), None)
                        payload = data[plen + 8 :]
                    else:
                        payload = envelope.unwrap(data)
                    try:
                        result = sm.apply(Entry(e.term, e.index, e.kind, payload))
                    except Exception as exc:  # the state machine's bug: answer the proposer
                        if getattr(exc, "halt", False):
                            # It cannot apply this entry, and every node that can will: stop
                            # (the entry is applied after a fix and a restart), never skip.
                            raise ApplyHalted(f"cannot apply entry {e.index}: {exc}") from exc
                        log.exception("raft %s: state machine failed on entry %d", self.id, e.index)
                        if fut is not None and not fut.done():
                            fut.set_exception(
                                Rejected(f"state machine failed on entry {e.index}: {exc}")
                            )
                    else:
                        if fut is not None and not fut.done():
                            fut.set_result(result)
                            resolved += 1
                    applied += 1
            else:
                cc = ConfChange.decode(e.data)
                if cc.result is not None:
                    self._emit_membership(cc.result, e.index, cc)
            if conf_waiters:
                for term, fut in conf_waiters.pop(e.index, ()):
                    if not fut.done():
                        if term == e.term:
                            fut.set_result(e.index)
                        else:
                            fut.set_exception(
                                CommitTimeout(f"entry {e.index} was replaced after a leader change")
                            )
        self.counters["applied"] += applied
        if self._sent and rd.committed_entries:
            self._settle_sent(rd.committed_entries[-1].term)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                self.counters["reads"] += 1
                heapq.heappush(self._read_heap, (rs.index, self.counters["reads"], fut))
        return resolved

    def _after_advance(self, rd: Ready) -> None:
        node = self.node
        applied = node.applied_index
        heap = self._read_heap
        while heap and heap[0][0] <= applied:
            index, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(index)
        if node.membership is not self._membership:
            self._update_peers()
        changed = rd.soft_state is not None or node.term != self._term or rd.committed_entries
        if rd.soft_state is not None or node.term != self._term:
            self._term = node.term
            self._emit(
                {"event": "role", "role": node.role.value, "leader": node.leader, "term": node.term}
            )
            log.info(
                "raft %s: %s in term %d, leader %s",
                self.id,
                node.role.value,
                node.term,
                node.leader or "unknown",
            )
        if changed and self._changed is not None:
            fut, self._changed = self._changed, None
            if not fut.done():
                fut.set_result(None)
        interval = self.config.snapshot_interval
        if interval and applied - self._last_snapshot >= interval and self._snapshot_job is None:
            later = getattr(self.sm, "snapshot_later", None)
            if later is None:
                self._take_snapshot(applied)
            else:
                self._snapshot_in_background(applied, later())

    def snapshot(self) -> dict:
        """Snapshot the state machine at the applied index now and compact the log behind it
        (the compaction is queued behind pending saves in the storage thread). Encodes on the
        loop: see :meth:`take_snapshot`."""
        self._check_running()
        index = self.node.applied_index
        self._take_snapshot(index)
        return {"snapshot_index": index, "term": self.node.term_at(index)}

    async def take_snapshot(self) -> dict:
        """:meth:`snapshot` for a caller that can wait (the ``raft.snapshot`` runner): with a
        state machine that offers ``snapshot_later`` the encoding runs on a worker thread, as
        the periodic snapshots do, so the loop keeps sending heartbeats. Waits for a periodic
        snapshot being encoded first (one at a time)."""
        self._check_running()
        if getattr(self.sm, "snapshot_later", None) is None:
            return self.snapshot()
        while self._snapshot_job is not None:
            await asyncio.wait([self._snapshot_job])
            self._check_running()
        index = self.node.applied_index
        job = self._snapshot_job = self._loop.run_in_executor(None, self.sm.snapshot_later())
        try:
            data = await job
        finally:
            if self._snapshot_job is job:
                self._snapshot_job = None
        self._check_running()
        self._record_snapshot(index, data)
        return {"snapshot_index": index, "term": self.node.term_at(index)}

    async def backup_snapshot(self) -> Snapshot:
        """The state machine at this node's applied index, with the membership in force there:
        a snapshot taken now (as :meth:`take_snapshot` does, log compaction included), or the
        latest one when nothing was applied since. For ``raft.backup``."""
        self._check_running()
        if self.node.applied_index > self.node.snapshot_meta.index:
            try:
                await self.take_snapshot()
            except RaftError:
                # A periodic snapshot got to this index first: the latest one is just as good.
                if self.node.snapshot is None:
                    raise
        snap = self.node.snapshot
        if snap is None:
            raise RaftRuntimeError("nothing applied yet on this node: no state to back up")
        return snap

    def _snapshot_in_background(self, index: int, pack) -> None:
        """Encode the state machine's snapshot at ``index`` (``pack``, from ``snapshot_later``)
        on a worker thread, not the storage thread: saves must not queue behind it, and every
        node snapshots at about the same index. The loop keeps applying meanwhile."""
        job = self._snapshot_job = self._loop.run_in_executor(None, pack)
        job.add_done_callback(functools.partial(self._packed, index))

    def _packed(self, index: int, job: asyncio.Future) -> None:
        if self._snapshot_job is job:
            self._snapshot_job = None
        if job.cancelled() or not self._running:
            return
        exc = job.exception()
        if exc is not None:
            # Retried after another snapshot_interval entries; the log just stays longer.
            self._last_snapshot = index
            log.error("raft %s: encoding the snapshot at %d failed: %s", self.id, index, exc)
            return
        try:
            self._record_snapshot(index, job.result())
        except RaftError as err:  # overtaken meanwhile, e.g. by a snapshot from the leader
            log.info("raft %s: snapshot at %d dropped: %s", self.id, index, err)

    def _take_snapshot(self, index: int) -> None:
        self._record_snapshot(index, self.sm.snapshot())

    def _record_snapshot(self, index: int, data: bytes) -> None:
        snap = self.node.create_snapshot(index, data, keep=self.config.snapshot_keep)
        self._last_snapshot = index
        self.counters["snapshots_taken"] += 1
        # Queued behind (and serialized with) the saves in the storage thread; entries it covers
        # are applied, hence already saved.
        fut = self._in_storage_thread(self.store.compact, snap)
        fut.add_done_callback(self._compacted)

    def _compacted(self, fut) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("raft %s: log compaction failed: %s", self.id, fut.exception())

    # ------------------------------------------------------------------------------------------
    # membership, peers and observers
    # ------------------------------------------------------------------------------------------
    def learn_joiner_address(self, node_id: str, address: str) -> None:
        """A node that is not a member asked to join (its frame authenticated with the cluster
        secret): remember its address so replies and, once it is added, the log reach it."""
        if address and node_id != self.id and node_id not in self.node.membership.members:
            if self.peers.get(node_id) != address:
                self.peers[node_id] = address
                self._update_peers()

    def _update_peers(self) -> None:
        previous, membership = self._membership, self.node.membership
        self._membership = membership
        if previous is not None:
            for nid in previous.members - membership.members:
                # A removed node is still told about its removal (RaftNode._departing): keep
                # reaching it at its last address.
                if nid != self.id and nid not in self.peers and previous.address_of(nid):
                    self.peers[nid] = previous.address_of(nid)
            removed_at = membership.removed_at(self.id)
            if removed_at and self.id in previous.members:
                log.warning("raft %s: %s", self.id, removed_message(self.id, removed_at))
        addresses = dict(self.peers)
        addresses.update(membership.addresses)
        addresses.pop(self.id, None)
        self.transport.set_peers(addresses)

    def _emit_membership(
        self, membership: Membership, index: int, cc: ConfChange | None = None
    ) -> None:
        log.info(
            "raft %s: membership at %d: voters %s learners %s",
            self.id,
            index,
            sorted(membership.voters),
            sorted(membership.learners),
        )
        event = {"event": "membership", "index": index, "membership": membership.to_dict()}
        if cc is not None:
            event.update(op=cc.op.value, node=cc.node_id)
        self._emit(event)

    def _emit(self, event: dict) -> None:
        for cb in self._observers:
            try:
                cb(event)
            except Exception:
                log.exception("raft %s: observer failed on %s", self.id, event.get("event"))

    async def wait_changed(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until a Ready changed role, term or applied state."""
        if self._changed is None:
            self._changed = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked after each change); False on timeout."""
        deadline = self._loop.time() + timeout
        while not predicate():
            remaining = deadline - self._loop.time()
            if remaining <= 0 or not self._running:
                return predicate()
            await self.wait_changed(min(remaining, self.config.tick_seconds * 4))
        return True

    # ------------------------------------------------------------------------------------------
    # client API: proposals
    # ------------------------------------------------------------------------------------------
    def _check_running(self) -> None:
        if not self._running:
            raise (
                self._failure_error()
                if self._failure
                else Stopped(f"raft node {self.id} is not running")
            )

    def _timeout(self, timeout: float | None) -> float:
        return self.config.request_timeout if timeout is None else timeout

    async def propose(self, data: bytes, timeout: float | None = None) -> object:
        """Replicate ``data``; return the state machine's result once it is committed and
        applied here. Raises NoLeader / CommitTimeout / Stopped."""
        return await self.submit(data, timeout)

    def submit(self, data: bytes, timeout: float | None = None) -> asyncio.Future:
        """:meth:`propose` without a coroutine: the future of the result, for callers that
        answer from a done-callback (the cache service) rather than from a task of their own.
        Raises :class:`Overloaded` at once when ``max_pending_proposals`` are waiting, and
        :class:`Rejected` on a node whose membership says it was removed."""
        self._check_running()
        if len(data) > self.config.max_entry_bytes:
            raise Rejected(
                f"a proposal of {len(data)} bytes is larger than max_entry_bytes "
                f"({self.config.max_entry_bytes})"
            )
        removed_at = self.node.membership.removed_at(self.id)
        if removed_at:  # the leader would drop it: say so now, definitely
            raise Rejected(f"not queued: {removed_message(self.id, removed_at)}")
        limit = self.config.max_pending_proposals
        if len(self._waiting) >= limit:
            self.counters["proposals_overloaded"] += 1
            raise Overloaded(
                f"{limit} proposals of node {self.id} are already waiting "
                "(max_pending_proposals): not queued; retry after a short back-off"
            )
        timeout = self._timeout(timeout)
        self._seq = seq = self._seq + 1
        fut = self._loop.create_future()
        self._waiting[seq] = fut
        self._pending.append((envelope.wrap(self._prefix, seq, data), fut, seq))
        self.counters["proposals"] += 1
        self._kick()
        heapq.heappush(self._deadlines, (self._loop.time() + timeout, seq, timeout))
        return fut

    def _expire_proposals(self, now: float) -> None:
        """Time out proposals whose deadline passed (at most one tick late).

        One heap of plain tuples checked per tick instead of a ``call_later`` timer per
        proposal: a timer is a ``TimerHandle`` pushed into the loop's heap with Python-level
        comparisons, then cancelled (and swept later) for nearly every proposal, since nearly
        all of them commit in time. Entries of answered proposals are dropped lazily: when they
        reach the top, or in a sweep once they outnumber the live ones."""
        heap = self._deadlines
        waiting = self._waiting
        expired = False
        while heap and heap[0][0] <= now:
            _, seq, timeout = heapq.heappop(heap)
            # Popped here or by the apply that answers it (a cancelled one waits for either).
            fut = waiting.pop(seq, None)
            if fut is not None:
                self._expire_proposal(fut, timeout)
                expired = True
        if expired and self._pending:
            # Answered proposals still queued (no leader known, so never flushed) go now, with
            # their data: else a client retrying every timeout grows the queue without bound.
            self._pending[:] = [p for p in self._pending if not p[1].done()]
        sent = self._sent
        if expired and len(sent) > 2 * len(waiting):
            # Likewise the record of sent proposals, pruned otherwise only by an apply (none
            # comes while our proposals are lost on the way to a leader on an idle cluster).
            # Order is kept; at least half of it is dead, so the sweep costs O(1) per entry.
            self._sent = deque(s for s in sent if s[1] in waiting)
        if len(heap) > 2 * len(waiting) + 1024:
            heap[:] = [d for d in heap if d[1] in waiting]
            heapq.heapify(heap)

    def _expire_proposal(self, fut: asyncio.Future, timeout: float) -> None:
        if fut.done():
            return
        self.counters["proposal_timeouts"] += 1
        node = self.node
        if any(f is fut for _, f, _ in self._pending) and node.leader == NONE:
            fut.set_exception(
                NoLeader(f"no leader known within {timeout:g}s (election in progress or no quorum)")
            )
        else:
            fut.set_exception(
                CommitTimeout(
                    f"not committed within {timeout:g}s "
                    f"(leader {node.leader or 'unknown'}, term {node.term}): "
                    "no quorum reachable, or the leader changed"
                )
            )

    def _flush_proposals(self) -> None:
        pending = self._pending
        if not pending:
            return
        node = self.node
        removed_at = node.membership.removed_at(self.id)
        if removed_at:
            # Removed while they were queued here: never handed to a leader, and no leader
            # takes them from us now (RaftNode drops a non-member's forwarded requests).
            refused = Rejected(f"not sent: {removed_message(self.id, removed_at)}")
            for _, fut, seq in pending:
                self._waiting.pop(seq, None)
                if not fut.done():
                    fut.set_exception(refused)
            pending.clear()
            # Those already sent are not re-sent (no leader would take them); they time out.
            self._sent.clear()
            return
        if node.role is not Role.LEADER and node.leader == NONE:
            return  # kept until a leader is known (or they time out)
        live = [p for p in pending if not p[1].done()]
        pending.clear()
        limit = self.config.max_batch
        k = 0
        while k < len(live):
            chunk = live[k : k + limit]
            # Stop before the batch's encoded size would pass PROPOSAL_BATCH_BYTES (one larger
            # entry goes alone): runtime.limits derives the frame size cap from this.
            size = 0
            n = 0
            for d, _, _ in chunk:
                size += len(d) + ENTRY_OVERHEAD
                if size > PROPOSAL_BATCH_BYTES and n:
                    break
                n += 1
            chunk = chunk[:n]
            try:
                node.propose_batch([d for d, _, _ in chunk])
            except (NotLeader, ProposalDropped):
                pending.extend(live[k:])  # retried on the next wake-up
                return
            term = node.term
            self._sent.extend([(term, seq, d) for d, _, seq in chunk])
            self.counters["proposal_batches"] += 1
            k += n

    def _settle_sent(self, applied_term: int) -> None:
        """Re-send the proposals whose term ended without them (issue 17, part 3).

        This node has just applied an entry of ``applied_term``. A proposal handed to the core
        in an earlier term and not applied here by now can never commit (``propose_batch``
        explains why), so proposing it again cannot apply it twice: the caller gets its answer
        from the new leader instead of waiting out its timeout. Called after every apply; the
        front of ``_sent`` is pruned of answered proposals on the way."""
        sent = self._sent
        waiting = self._waiting
        again = []
        while sent:
            term, seq, data = sent[0]
            fut = waiting.get(seq)
            if fut is not None and term >= applied_term:
                break
            sent.popleft()
            if fut is not None and not fut.done():
                again.append((data, fut, seq))
        if again:
            self.counters["proposals_resent"] += len(again)
            log.info(
                "raft %s: re-sending %d proposal(s) of an earlier term that did not commit "
                "(term %d applied)",
                self.id,
                len(again),
                applied_term,
            )
            self._pending[:0] = again
            self._kick()

    def _settle_overtaken(self, snap_term: int) -> None:
        """A snapshot up to term ``snap_term`` was installed instead of entries: whether a
        proposal sent in a term up to ``snap_term`` is inside it cannot be told, so answer those
        at once with an indeterminate error (never re-send them: that could apply twice)."""
        sent = self._sent
        waiting = self._waiting
        while sent and sent[0][0] <= snap_term:
            _, seq, _ = sent.popleft()
            fut = waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    CommitTimeout(
                        "a snapshot from the leader replaced the entries; "
                        "outcome unknown (the write may or may not have been applied)"
                    )
                )

    # ------------------------------------------------------------------------------------------
    # client API: reads
    # ------------------------------------------------------------------------------------------
    async def read(self, timeout: float | None = None) -> int:
        """Linearizable read barrier (ReadIndex, thesis §6.4): returns the read index once this
        node has applied up to it; a read of the local state machine after that is current."""
        self._check_running()
        timeout = self._timeout(timeout)
        loop = self._loop
        self._seq = seq = self._seq + 1
        ctx = self._prefix + seq.to_bytes(8, "big")
        fut = loop.create_future()
        self._reads[ctx] = fut
        deadline = loop.time() + timeout
        retry = self.core_config.election_ticks * self.config.tick_seconds
        asked = False
        try:
            while True:
                self._check_running()
                try:
                    self.node.read_index(ctx)  # idempotent: a retry after a lost message is fine
                    asked = True
                    self._kick()
                except NotLeader:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    (fut,), timeout=min(remaining, retry if asked else self.config.tick_seconds * 2)
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

    @property
    def caught_up_index(self) -> int | None:
        """The read index a leader confirmed after this start, once applied here; None until
        then (see the module docstring, "Catching up after a start")."""
        return self._caught_up_index

    async def wait_caught_up(self, timeout: float | None = None) -> int:
        """Wait until the catch-up barrier after start is passed; returns its read index.
        Raises ``asyncio.TimeoutError`` after ``timeout`` (None: no limit), Stopped if the
        node stops meanwhile."""
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        while self._caught_up_index is None:
            self._check_running()
            wait = 0.5 if deadline is None else min(0.5, deadline - loop.time())
            if wait <= 0:
                raise asyncio.TimeoutError(f"not caught up within {timeout:g}s")
            try:  # short waits: a stop is noticed within half a second
                await asyncio.wait_for(self._caught_up.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return self._caught_up_index

    async def _catch_up_loop(self) -> None:
        """One ReadIndex barrier after start, retried until it passes or the node stops."""
        timeout = max(self.core_config.election_ticks * self.config.tick_seconds * 4, 0.5)
        attempts = 0
        while self._running:
            attempts += 1
            try:
                index = await self.read(timeout)
            except (NoLeader, CommitTimeout) as exc:
                if attempts == 1 or attempts % 10 == 0:
                    log.info("raft %s: not caught up with the cluster yet: %s", self.id, exc)
                continue
            except Stopped:
                return
            self._caught_up_index = index
            self._caught_up.set()
            log.info("raft %s: caught up with the cluster (read index %d applied)", self.id, index)
            self._emit({"event": "caught_up", "index": index})
            return

    # ------------------------------------------------------------------------------------------
    # client API: membership and leadership (on the leader; forwarded from followers)
    # ------------------------------------------------------------------------------------------
    async def add_learner(self, node_id: str, address: str, timeout: float | None = None) -> dict:
        return await self.admin("add_learner", {"node": node_id, "address": address}, timeout)

    async def promote(self, node_id: str, timeout: float | None = None) -> dict:
        return await self.admin("promote", {"node": node_id}, timeout)

    async def demote(self, node_id: str, timeout: float | None = None) -> dict:
        return await self.admin("demote", {"node": node_id}, timeout)

    async def remove(self, node_id: str, timeout: float | None = None) -> dict:
        return await self.admin("remove", {"node": node_id}, timeout)

    async def transfer_leader(self, target: str, timeout: float | None = None) -> dict:
        return await self.admin("transfer_leader", {"node": target}, timeout)

    async def admin(
        self,
        cmd: str,
        args: dict,
        timeout: float | None = None,
        *,
        forward: bool = True,
        bound: Callable[[RaftNode], None] | None = None,
    ) -> dict:
        """Run a leader operation here if we lead, else on the leader (APP request/reply).

        ``bound(node)``, for a request that came from another node, raises
        :class:`StaleRequest` unless the request was issued against this leader's term and
        membership (``runtime.remote``); it is checked right before the operation runs."""
        self._check_running()
        target = args.get("node")
        problem = node_id_problem(target)
        if problem and (cmd == "add_learner" or target not in self.node.membership.members):
            # An id that was committed before ids were checked can still be removed.
            raise Rejected(f"{cmd}: {problem}")
        timeout = self._timeout(timeout)
        loop = self._loop
        deadline = loop.time() + timeout
        hint = NONE
        last: RaftRuntimeError | None = None
        while True:
            self._check_running()
            node = self.node
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if node.role is Role.LEADER:
                if bound is not None:
                    bound(node)
                try:
                    return await self._admin_local(cmd, args, deadline)
                except _Retry as exc:
                    last = CommitTimeout(str(exc))
                    await self.wait_changed(min(remaining, self.config.tick_seconds * 2))
                    continue
            if not forward:
                raise RemoteNotLeader(node.leader)
            leader = node.leader or hint
            if leader == NONE or leader == self.id:
                last = _keep_uncertain(last, NoLeader(f"no leader known within {timeout:g}s"))
                await self.wait_changed(min(remaining, self.config.tick_seconds * 2))
                continue
            request = {"op": "admin", "cmd": cmd, "args": args}
            request.update(remote_binding(node, remaining, time.time()))
            try:
                return await self._remote.request(leader, request, remaining)
            except StaleRequest as exc:
                # Our view of the term or membership lags the leader's: catch up, ask again.
                last = exc
                await self.wait_changed(min(deadline - loop.time(), self.config.tick_seconds * 2))
            except RemoteNotLeader as exc:
                hint = exc.leader if exc.leader != leader else NONE
                last = _keep_uncertain(last, NoLeader(f"{leader} is not the leader"))
                await self.wait_changed(min(deadline - loop.time(), self.config.tick_seconds * 2))
            except CommitTimeout as exc:
                last = exc
        raise last or CommitTimeout(f"{cmd} not done within {timeout:g}s")

    async def _admin_local(self, cmd: str, args: dict, deadline: float) -> dict:
        node = self.node
        target = str(args.get("node") or "")
        if cmd == "transfer_leader":
            try:
                node.transfer_leader(target)
            except ProposalDropped as exc:
                raise Rejected(str(exc)) from None
            self._kick()
            ok = await self.wait_for(lambda: node.leader == target, deadline - self._loop.time())
            if not ok:
                raise CommitTimeout(
                    f"leadership did not move to {target} in time (leader: {node.leader or 'none'})"
                )
            return {"leader": target, "term": node.term}
        op = _CONF_OPS.get(cmd)
        if op is None:
            raise Rejected(f"unknown operation {cmd!r}")
        m = node.membership
        already = (
            (op is ConfOp.ADD_LEARNER and target in m.members)
            or (op is ConfOp.PROMOTE and target in m.voters)
            or (op is ConfOp.DEMOTE and target in m.learners)
            or (op is ConfOp.REMOVE and target not in m.members)
        )
        removed_at = m.removed_at(target)
        if op is ConfOp.ADD_LEARNER and args.get("join") and removed_at:
            # A node asking to add itself back after it was removed: only an operator may.
            msg = removed_message(target, removed_at)
            _rl.warning(target, "raft %s: JOIN refused: %s", self.id, msg)
            raise Rejected(msg)
        if already:  # idempotent, so a JOIN or a retried request is harmless
            index = node.membership_at(node.last_index)[0]
            if index > node.commit_index:
                # What it asks for is appended but not committed (e.g. this very request sent
                # again after an unclear answer): that entry may still be lost, so answer as
                # its first sender is answered, once it commits.
                term = node.term_at(index)
                await self._await_conf(f"{cmd} {target}", index, term, deadline)
            return {"index": index, "membership": m.to_dict(), "changed": False}
        try:
            index = node.propose_conf_change(op, target, str(args.get("address") or ""))
        except NotLeader:
            raise _Retry("leadership lost") from None
        except ProposalDropped as exc:
            text = str(exc)
            if "pending" in text or "transferred" in text:
                raise _Retry(text) from None
            raise Rejected(text) from None
        await self._await_conf(f"{cmd} {target}", index, node.term, deadline)
        return {
            "index": index,
            "membership": node.membership_at(index)[1].to_dict(),
            "changed": True,
        }

    async def _await_conf(self, what: str, index: int, term: int, deadline: float) -> None:
        """Return once membership entry ``(index, term)`` is applied here (or known committed),
        else raise :class:`CommitTimeout` (indeterminate)."""
        fut = self._loop.create_future()
        self._conf_waiters.setdefault(index, []).append((term, fut))
        self._kick()
        if not await self._wait_conf(fut, index, term, deadline):
            fut.cancel()  # its entry in _conf_waiters is dropped when that index is applied
            raise CommitTimeout(f"{what} (entry {index}) not committed in time")

    async def _wait_conf(self, fut: asyncio.Future, index: int, term: int, deadline: float) -> bool:
        """Wait for our membership entry ``(index, term)`` to be applied here (True), or for the
        deadline (False); raises what ``fut`` raises (e.g. the entry was replaced).

        A leader that removed itself may lose leadership before it learns that the entry
        committed (check-quorum, a partition): the next leader commits it but no longer
        replicates to the removed node, so it would never apply it here. Such a node asks the
        remaining members instead, once per election timeout (``Remote.committed``)."""
        loop = self._loop
        retry = self.core_config.election_ticks * self.config.tick_seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            done, _ = await asyncio.wait((fut,), timeout=min(remaining, retry))
            if done:
                fut.result()
                return True
            node = self.node
            if node.role is Role.LEADER or self.is_member:
                continue  # it reaches us through the log
            answer = await self._remote.committed(
                sorted(node.membership.voters), index, term, deadline - loop.time()
            )
            if answer is True:
                return True
            if answer is False:
                raise CommitTimeout(f"entry {index} was replaced after a leader change")

    # ------------------------------------------------------------------------------------------
    # JOIN: a node in no membership asks a peer to add it as a learner
    # ------------------------------------------------------------------------------------------
    async def _join_loop(self) -> None:
        targets = sorted(n for n in self.peers if n != self.id)
        k = 0
        while self._running and not self.is_member:
            if not targets:
                log.warning("raft %s: not a member and no peers to ask to join", self.id)
                return
            target = targets[k % len(targets)]
            k += 1
            try:
                wait = self.config.join_interval * 4
                await self._remote.request(
                    target, {"op": "join", "address": self.address, "exp": time.time() + wait}, wait
                )
                log.info("raft %s: %s accepted our JOIN; waiting for the log", self.id, target)
                await self.wait_for(lambda: self.is_member, self.config.join_interval * 4)
            except Rejected as exc:
                # Definite, e.g. we were removed: asking again soon would only fill two logs.
                log.warning("raft %s: JOIN via %s refused: %s", self.id, target, exc)
                await self.wait_for(
                    lambda: self.is_member, self.config.join_interval * JOIN_REFUSED_WAIT
                )
            except RaftRuntimeError as exc:
                log.info("raft %s: JOIN via %s failed: %s", self.id, target, exc)
                await self.wait_changed(self.config.join_interval)

    # ------------------------------------------------------------------------------------------
    # status
    # ------------------------------------------------------------------------------------------
    def entry_committed(self, index: int, term: int) -> bool | None:
        """Whether entry ``(index, term)`` is committed (True), was replaced or never existed
        in that term (False), or this node cannot tell yet (None)."""
        node = self.node
        if index > node.commit_index:
            return None
        at = node.term_at(index)
        if at is None:  # compacted behind the snapshot: only its last entry's term is known
            meta = node.snapshot_meta
            return meta.term == term if index == meta.index else None
        return at == term

    def status(self) -> dict:
        node = self.node
        st = node.status()
        st["leader_committed"] = (
            node.role is Role.LEADER and node.term_at(node.commit_index) == node.term
        )
        st["transport"] = self.transport.stats()
        info = getattr(self.store, "info", None)
        st["storage"] = {"type": type(self.store).__name__, **(info() if callable(info) else {})}
        st["runtime"] = dict(
            self.counters,
            running=self._running,
            failure=str(self._failure) if self._failure else None,
            caught_up_index=self._caught_up_index,
            pending_proposals=len(self._pending),
            waiting_proposals=len(self._waiting),
            sent_proposals=len(self._sent),
            waiting_reads=len(self._reads) + len(self._read_heap),
            save_seconds_total=round(self._save_seconds, 6),
            save_seconds_max=round(self._save_max, 6),
            remote=self._remote.stats(),
        )
        return st

    # ------------------------------------------------------------------------------------------
    # shutdown helpers
    # ------------------------------------------------------------------------------------------
    def _fail_all(self, exc: RaftRuntimeError) -> None:
        futs = [f for _, f, _ in self._pending]
        futs += list(self._waiting.values()) + list(self._reads.values())
        futs += [f for _, _, f in self._read_heap]
        futs += [f for lst in self._conf_waiters.values() for _, f in lst]
        self._pending.clear()
        self._sent.clear()
        self._waiting.clear()
        self._deadlines.clear()
        self._read_heap.clear()
        self._conf_waiters.clear()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._remote.fail_all(exc)


def _keep_uncertain(last: RaftRuntimeError | None, new: RaftRuntimeError) -> RaftRuntimeError:
    """The error to report after another failed attempt: a definite one (``new``) must not
    hide an earlier attempt whose outcome is unknown."""
    return last if last is not None and not last.definite else new


def _commit_updates_only(messages: list[Message]) -> bool:
    """True for a leader's commit-index updates: appends that carry no entries."""
    return all(m.type is MsgType.APPEND and not m.entries for m in messages)


class _Retry(Exception):
    """A transient refusal on the leader: try again until the deadline."""
