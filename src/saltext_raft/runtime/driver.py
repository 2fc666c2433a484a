"""The asyncio driver: feeds ticks and messages into the Raft core and carries out its Ready.

Lives here: :class:`RaftRuntime` — the lifecycle, the tick timer, the Ready loop (persist →
send → apply → advance) with its persistence policy, ``status()``/``view()`` and the client
API, which it hands to small parts, each in its own module with a narrow port
(``runtime.host``), wired in ``runtime.parts``: ``proposals``, ``reads`` (ReadIndex and the
catch-up barrier after start), ``snapshots``, ``admin`` (membership changes, leader transfer,
JOIN), ``apply`` (the apply step), ``events`` (observers, waiting for a change), ``peers``
(the transport's peer addresses) and ``remote`` (requests to other nodes). Must not live
here: Salt (a test enforces it), sockets (``transport``), disk formats (``storage``), Raft
rules (``core``), the envelope's layout (``runtime.envelope``).

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
empty commit-index appends wait up to ``COMMIT_UPDATE_HOLD`` (or until the next message to
that member) so the next proposal's append can carry the commit index instead; and
(``follower_inline_saves``, on by default) a follower saves a small Ready on the loop itself
(no thread hand-offs) unless a recent one was slow (``INLINE_SAVE_SLOW``).

While one Ready is being persisted the loop keeps stepping inbound messages and queueing
proposals; they all land in the next Ready and share its single fsync (group commit). That is
where throughput comes from: the number of fsyncs per second is fixed by the disk, the number
of entries per fsync grows with load.

Requests that need the leader (membership, transfer) are sent to it as ``MsgType.APP``
request/reply messages (``runtime.remote``); proposals and reads are forwarded by the core.
Right after ``start()`` the runtime takes one ReadIndex barrier and waits until it has applied
up to it (``runtime.reads``, "Catching up after a start").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from saltext_raft.core import Config
from saltext_raft.core import HardState
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core import RaftError
from saltext_raft.core import RaftNode
from saltext_raft.core import Ready
from saltext_raft.core import Role
from saltext_raft.core import Snapshot
from saltext_raft.runtime.config import RuntimeConfig
from saltext_raft.runtime.config import client_timeout
from saltext_raft.runtime.config import default_core_config
from saltext_raft.runtime.errors import ApplyHalted
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Stopped
from saltext_raft.runtime.errors import StorageFailed
from saltext_raft.runtime.host import Host
from saltext_raft.runtime.parts import wire
from saltext_raft.runtime.storage_thread import StorageThread
from saltext_raft.runtime.view import NodeView
from saltext_raft.runtime.view import node_view

log = logging.getLogger(__name__)

#: A follower's Ready with at most this many entries is saved on the loop (follower_inline_saves).
_INLINE_SAVE_ENTRIES = 8
#: An inline save slower than this (seconds) means the disk is slow or stalling: the loop must
#: not wait on it again, so saves go to the storage thread for ``INLINE_SAVE_PAUSE`` seconds.
#: Far above a healthy small save here (``fdatasync`` p99 2-12 ms on the shared virtual disk,
#: docs/benchmarks.md), well below a tick's worth of missed heartbeats adding up.
INLINE_SAVE_SLOW = 0.025
#: Seconds inline saves stay off after a slow one (:data:`INLINE_SAVE_SLOW`).
INLINE_SAVE_PAUSE = 30.0
#: Seconds a leader holds its empty commit-index appends after answering proposers, waiting for
#: the next proposal's append to carry the commit index instead (:meth:`RaftRuntime._hold`).
#: Longer than an outside client's round trip on loopback (~0.3 ms), short against a tick.
COMMIT_UPDATE_HOLD = 0.001


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
        self.config = config = (config or RuntimeConfig()).validate()
        self.founders = dict(founders or {})
        self.peers = dict(peers or {})
        self.address = address or self.peers.get(node_id, "") or self.founders.get(node_id, "")
        self.join = join
        self._rng = rng or random.Random()
        self.node: RaftNode | None = None
        self._kicked = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage: StorageThread | None = None
        self._tasks: list[asyncio.Task] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._running = False
        self._failure: BaseException | None = None
        # A commit-only hard state waiting for the next save (or the next idle tick).
        self._deferred_hs: HardState | None = None
        self._deferred_seen: HardState | None = None
        self._storage_jobs = 0  # background saves and compactions queued in the storage thread
        self._save_seconds = 0.0
        self._save_max = 0.0
        self._inline_paused_until = 0.0  # loop time; see INLINE_SAVE_SLOW
        # Empty commit-index appends held for the next proposal's append (_hold) and the timer
        # that sends them if none comes.
        self._held: list[Message] = []
        self._held_timer: asyncio.TimerHandle | None = None
        running = lambda: self._running  # noqa: E731
        host = self._host = Host(node_id, config, self._kick, self._check_running, running)
        self.counters = host.counters
        parts = wire(
            host,
            peers=self.peers,
            transport=lambda: self.transport,
            send=self._send_request,
            state_machine=lambda: self.sm,
            admin=self.admin,
            compact=lambda snap: self._in_storage_thread(self.store.compact, snap),
        )
        self._events, self._peers, self._remote, self._proposals = parts[:4]
        self._reads, self._snapshots, self._admin, self._applier = parts[4:]
        # What the Ready loop calls, straight to the part that does it.
        self._flush_proposals = self._proposals.flush
        self._decode_snapshot = self._snapshots.decode
        self._apply = self._applier.apply

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._storage = StorageThread(loop, f"raft-store-{self.id}")
        hs, snap, entries = await self._storage.submit(self.store.load)
        founders = {} if self.join else self.founders
        node = _core_node(self.core_config, self._rng, founders, hs, snap, entries)
        self.node = self._host.node = node
        election_seconds = self.core_config.election_ticks * self.config.tick_seconds
        self._host.loop, self._host.election_seconds = loop, election_seconds
        if snap is not None:
            (await self._snapshots.decode(snap.data))()
            self._snapshots.last_index = snap.meta.index
        self._events.started()
        self._reads.started()
        self._running = True
        self._peers.update()
        self.transport.set_handler(self._on_message)
        await self.transport.start()
        self._tick_handle = loop.call_later(self.config.tick_seconds, self._on_tick)
        tasks = {"ready": self._ready_loop(), "join": self._admin.joining(self.peers, self.address)}
        tasks["catchup"] = self._reads.catch_up()
        for name, coro in tasks.items():
            if coro is not None:
                self._tasks.append(loop.create_task(coro, name=f"raft-{name}-{self.id}"))
        self._kick()

    async def stop(self) -> None:
        if not self._running and self._storage is None:
            return
        self._running = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._drop_held()
        await _cancel(self._tasks)
        await self._snapshots.settle()
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
        self._events.add_observer(callback)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked after each change); False on timeout."""
        return await self._events.wait_for(predicate, timeout)

    # --- input: ticks and messages -----------------------------------------------------------
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
        self._proposals.expire(self._loop.time())
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
                while node.has_ready():
                    rd = node.ready()
                    self.counters["readies"] += 1
                    messages = rd.messages
                    if self._held:  # this Ready's appends may carry them (_hold)
                        messages = self._merge_held(self._held, messages)
                        self._held = []
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
                            inline = self._inline_save(rd)
                            if inline:
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
                            if inline and dt > INLINE_SAVE_SLOW:
                                self._pause_inline_saves(dt)
                            self._save_seconds += dt
                            self._save_max = max(self._save_max, dt)
                            self.counters["saves"] += 1
                            self.counters["entries_saved"] += len(rd.entries)
                    if messages and rd.committed_entries and _commit_updates_only(messages):
                        self._held = messages  # see _hold
                    elif messages:
                        self.transport.send_many(messages)
                    install = None
                    if rd.snapshot is not None:
                        install = await self._decode_snapshot(rd.snapshot.data)
                    resolved = self._apply(rd, install)
                    node.advance(rd)
                    self._after_advance(rd)
                    if self._held and resolved:
                        # Let the callers whose proposals were just applied propose again, so
                        # the commit index rides on their append instead of a message of its own.
                        await asyncio.sleep(0)
                    self._flush_proposals()
                if self._held:
                    if node.last_index == node.commit_index:
                        self._hold()  # nothing in flight: only a new proposal can carry it
                    else:  # under load: as they come (a held one measured slower at 20,000)
                        held, self._held = self._held, []
                        self.transport.send_many(held)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage failure or a bug: stop rather than run unsafely
            self._fatal(exc)

    def _inline_save(self, rd: Ready) -> bool:
        """Whether this Ready is saved on the loop (``follower_inline_saves``): a follower's
        (or candidate's) small Ready with no snapshot (one can be megabytes), nothing queued
        in the storage thread ahead of it (order), and no slow inline save in the last
        ``INLINE_SAVE_PAUSE`` seconds."""
        return (
            self.config.follower_inline_saves
            and self.node.role is not Role.LEADER
            and len(rd.entries) <= _INLINE_SAVE_ENTRIES
            and rd.snapshot is None
            and not self._storage_jobs
            and self._loop.time() >= self._inline_paused_until
        )

    def _pause_inline_saves(self, seconds: float) -> None:
        """An inline save took ``seconds`` (over ``INLINE_SAVE_SLOW``): the disk is slow, and
        the loop (heartbeats, the cache socket, the readiness file) must not wait on it again;
        saves go to the storage thread for ``INLINE_SAVE_PAUSE`` seconds."""
        self._inline_paused_until = self._loop.time() + INLINE_SAVE_PAUSE
        self.counters["inline_saves_paused"] += 1
        log.warning(
            "raft %s: a save on the event loop took %.0f ms; saving in the storage thread "
            "for the next %.0f s",
            self.id,
            seconds * 1000,
            INLINE_SAVE_PAUSE,
        )

    def _hold(self) -> None:
        """Keep the leader's empty commit-index appends (``_held``) for up to
        ``COMMIT_UPDATE_HOLD``, for the next proposal's append to carry the commit index.
        Only when a pass ends with every entry committed (nothing else in flight); under load
        they go at the end of the pass, as they did before.

        A caller outside the process (a control-channel client, a Salt master's cache
        service answering its own client) proposes again one round trip after its answer,
        not in the loop pass after it; sent at once, the updates woke both followers, which
        applied and acknowledged them while that next request was on its way, and on two
        CPUs the request waited for them (docs/benchmarks.md, issue 21, seventh pass). Held,
        they are merged into the next Ready's appends (:meth:`_merge_held`), sent before any
        other message to the same member (:meth:`_send_request`: a follower waiting to apply
        what a relay was answered with learns the commit index first), or sent when the
        timer runs out. Holding a message is always safe (the network may delay any); it only
        delays when an idle follower applies, by at most ``COMMIT_UPDATE_HOLD``.
        """
        if self._held_timer is None:
            self._held_timer = self._loop.call_later(COMMIT_UPDATE_HOLD, self._release_held)

    def _release_held(self) -> None:
        """The hold ran out: send what is still held."""
        self._held_timer = None
        held, self._held = self._held, []
        if held and self._running:
            self.transport.send_many(held)

    def _send_request(self, m: Message) -> bool:
        """Send a request or answer between members (``runtime.remote``), after the commit
        index held for the same member: an answer must not overtake the commit index of what
        it answers about."""
        if self._held:
            mine = [h for h in self._held if h.to == m.to]
            if mine:
                self._held = [h for h in self._held if h.to != m.to]
                self.transport.send_many(mine)
        return self.transport.send(m)

    def _drop_held(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held = []

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
        self._drop_held()
        self._fail_all(self._failure_error())
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def _failure_error(self) -> RaftRuntimeError:
        if isinstance(self._failure, ApplyHalted):
            return Stopped(f"raft node {self.id} stopped: {self._failure}")
        return StorageFailed(f"raft node {self.id} stopped after a failure: {self._failure}")

    def _after_advance(self, rd: Ready) -> None:
        applied = self.node.applied_index
        self._reads.release(applied)
        self._peers.follow()
        self._events.advanced(rd)
        self._snapshots.applied(applied)

    # --- snapshots (runtime.snapshots) -------------------------------------------------------
    def snapshot(self) -> dict:
        """:meth:`Snapshots.snapshot`: snapshot and compact at the applied index, now."""
        return self._snapshots.snapshot()

    async def take_snapshot(self) -> dict:
        """:meth:`Snapshots.take`: :meth:`snapshot`, encoded off the loop when it can be."""
        return await self._snapshots.take()

    async def backup_snapshot(self) -> Snapshot:
        """:meth:`Snapshots.backup`: a snapshot at the applied index, for ``raft.backup``."""
        return await self._snapshots.backup()

    # --- client API: proposals and reads (runtime.proposals, runtime.reads) ------------------
    def _check_running(self) -> None:
        if not self._running:
            raise (
                self._failure_error()
                if self._failure
                else Stopped(f"raft node {self.id} is not running")
            )

    async def propose(self, data: bytes, timeout: float | None = None) -> object:
        """Replicate ``data``; return the state machine's result once it is committed and
        applied here. Raises NoLeader / CommitTimeout / Stopped."""
        return await self.submit(data, timeout)

    def submit(self, data: bytes, timeout: float | None = None) -> asyncio.Future:
        """:meth:`propose` without a coroutine, for callers that answer from a done-callback
        (the cache service): :meth:`Proposals.submit`."""
        return self._proposals.submit(data, self._timeout(timeout))

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """:meth:`Reads.wait_applied`: until this node has applied up to ``index``."""
        await self._reads.wait_applied(index, self._timeout(timeout))

    @property
    def leader(self) -> str:
        """The leader this node knows of ("" if none, or before ``start()``)."""
        return self.node.leader if self.node is not None else ""

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.role is Role.LEADER

    # --- requests between members for the layers above (runtime.remote) ---------------------
    def serve(self, op: str, handler) -> None:
        """:meth:`Remote.serve`: answer ``op`` requests from members with ``handler``."""
        self._remote.serve(op, handler)

    async def ask(self, to: str, body: dict, timeout: float | None = None) -> object:
        """Send request ``body`` (``{"op": ..., ...}``) to member ``to``; its handler's result.
        Raises what the handler raised there (RemoteNotLeader, Rejected, ...) or CommitTimeout."""
        self._check_running()
        return await self._remote.request(to, body, self._timeout(timeout))

    async def read(self, timeout: float | None = None) -> int:
        """Linearizable read barrier (ReadIndex): :meth:`Reads.read`."""
        return await self._reads.read(self._timeout(timeout))

    @property
    def caught_up_index(self) -> int | None:
        """The read index a leader confirmed after this start, once applied here; None until
        then (``runtime.reads``, "Catching up after a start")."""
        return self._reads.caught_up_index

    async def wait_caught_up(self, timeout: float | None = None) -> int:
        """:meth:`Reads.wait_caught_up`: until the barrier after start is passed. ``timeout``
        None waits without limit (the cache service's catch-up after start: a master started
        alone waits for its quorum however long that takes), unlike the other calls here,
        whose None is the ``request_timeout``."""
        if timeout is not None:
            timeout = self._timeout(timeout)
        return await self._reads.wait_caught_up(timeout)

    # --- client API: membership and leadership (runtime.admin; forwarded from followers) -----
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
        """Run a leader operation here if we lead, else on the leader: :meth:`Admin.run`."""
        return await self._admin.run(
            cmd, args, self._timeout(timeout), forward=forward, bound=bound
        )

    def _timeout(self, timeout) -> float:
        """A client's ``timeout`` under the one rule (:func:`client_timeout`)."""
        return client_timeout(timeout, self.config.request_timeout)

    # --- status ------------------------------------------------------------------------------
    def view(self) -> NodeView | None:
        """This node's role, leader, indexes, membership and (on a leader) each member's
        replication, copied now (``runtime.view``); None before ``start()``."""
        return None if self.node is None else node_view(self.node)

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
            caught_up_index=self._reads.caught_up_index,
            **self._proposals.stats(),
            waiting_reads=self._reads.waiting(),
            save_seconds_total=round(self._save_seconds, 6),
            save_seconds_max=round(self._save_max, 6),
            remote=self._remote.stats(),
        )
        return st

    def _fail_all(self, exc: RaftRuntimeError) -> None:
        self._proposals.fail_all(exc)
        self._reads.fail_all(exc)
        self._admin.fail_all(exc)
        self._events.stopped()
        self._remote.fail_all(exc)


async def _cancel(tasks: list[asyncio.Task]) -> None:
    """Cancel ``tasks`` and wait until each has ended, whatever it raised; empties the list."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    tasks.clear()


def _core_node(config: Config, rng, founders: dict, hs: HardState, snap, entries) -> RaftNode:
    """The core node a start begins with: from what the store held, or, on a first start (empty
    store) of a node listed in ``founders``, bootstrapped with them as the voters."""
    if hs == HardState() and snap is None and not entries and config.id in founders:
        log.info("raft %s: bootstrapping a new cluster with voters %s", config.id, sorted(founders))
        return RaftNode.bootstrap(config, rng, founders)
    return RaftNode(config, rng, hard_state=hs, snapshot=snap, entries=entries)


def _commit_updates_only(messages: list[Message]) -> bool:
    """True for a leader's commit-index updates: appends that carry no entries."""
    return all(m.type is MsgType.APPEND and not m.entries for m in messages)
