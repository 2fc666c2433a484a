"""The replicated Salt cache inside the ``raft`` engine: mirror, state machine, local socket.

Lives here: :class:`CacheService` — owns the :class:`~.mirror.MirrorWriter` and the
:class:`~.mirror.CacheStateMachine` the runtime applies entries to, and serves the ``raft``
cache driver's requests on a unix socket in the master's ``sock_dir`` (mode 0600, the runtime's
:class:`~saltext_raft.runtime.control.ControlServer` with only the cache operations). Must not
live here: the driver (``replicated/driver.py``), mirror file handling (``replicated/mirror.py``).

Requests (JSON lines; several may be outstanding per connection, answers carry the ``id``)::

    {"id": 1, "op": "cache.store", "bank": "minions/web1", "key": "data",
     "value": <base64 of the salt.payload bytes>, "client": "host:pid:rand", "seq": 7,
     "timeout": 4.8}
    {"id": 2, "op": "cache.flush", "bank": "minions/web1", "key": null, "client": ..., "seq": 8}
    {"id": 5, "op": "cache.add", ...same fields as cache.store}  # result: false if key present
    {"id": 6, "op": "cache.union", ...same fields, "value": <base64 of a msgpack string list>}
    {"id": 7, "op": "cache.expire", "bank": "saltext_raft_jobs", "key": null,
     "value": <base64 of a msgpack integer: the cut-off>, ...}   # result: sub-banks removed
    {"id": 3, "op": "cache.read", "timeout": 5}     # ReadIndex barrier, then mirror caught up
    {"id": 4, "op": "cache.status"}

A write is answered once its entry is committed, applied here and written to this master's
mirror.

**Caught up.** When the engine starts, the mirror is the state this master had applied before
(or its rebuild from the local log), which can be older than what the cluster committed while
the master was down. The service removes the marker ``CacheSettings.caught_up_path`` before the
runtime starts, waits for the runtime's catch-up barrier (a read index confirmed by a leader,
applied here), waits until the mirror shows it, and only then writes the marker again, with
the engine's pid. The driver serves no read without a marker naming a running engine
(``replicated/driver.py``), and the engine's readiness (the request gate) waits for
:attr:`CacheService.caught_up`. A clean stop removes the marker too.

``(client, seq)`` makes a retried write apply at most once (the KV state machine's
dedup table), so a worker may resend a write whose answer it lost.

Writes are batched: those that arrive while a batch is open (from any number of workers)
become one Raft entry (``kv.encode_batch``), so the per-entry costs of the log, the storage,
the replication and the apply are paid once per batch, not once per write. A batch is proposed
at the end of the loop turn that received its first write, unless workers answered a moment
ago have not yet sent their next write: then it waits for them, for at most
``raft_cache_batch_wait`` seconds. Answers to one batch wake its workers together, but their
next writes trickle in over a millisecond or so (the workers take turns for the CPU), and
without the wait each of them would pay for an entry of its own. A lone worker writing in a
loop is never held back: its next write is the one awaited, so the batch goes at once. Writes
are answered from done-callbacks, without a task each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import time

from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import COMMAND_FRAMING_MAX
from saltext_raft.kv.machine import EXPIRE
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import MAX_SEQ
from saltext_raft.kv.machine import OPS
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import UNION
from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import check_flush
from saltext_raft.kv.machine import check_key
from saltext_raft.kv.machine import check_value
from saltext_raft.kv.machine import encode_entry
from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.readiness import BOOT_ID
from saltext_raft.master.readiness import process_start
from saltext_raft.replicated import relay
from saltext_raft.replicated.config import CacheSettings
from saltext_raft.replicated.mirror import CacheStateMachine
from saltext_raft.replicated.mirror import MirrorWriter
from saltext_raft.replicated.mirror import new_mirror
from saltext_raft.runtime.control import ControlServer
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.errors import Stopped
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES
from saltext_raft.runtime.remote import RemoteNotLeader

log = logging.getLogger(__name__)

#: Value bytes that close a batch at once (an entry stays a modest size however many workers
#: write big values in the same turn).
MAX_BATCH_BYTES = 1 << 20
#: Room an entry keeps beyond its writes' counted bytes (:func:`_command_bytes`), for the
#: batch's own framing: at most this, and at most a quarter of a (small) ``max_entry_bytes``.
ENTRY_ROOM = 256 << 10


def entry_values_max(max_entry_bytes: int) -> int:
    """Bytes of values and names (with their framing, :func:`_command_bytes`) one entry may
    hold when the runtime takes entries of up to ``max_entry_bytes``. A batch is proposed
    before a write would take it past this (a single larger write still goes alone and is
    refused with the runtime's "larger than max_entry_bytes" if too large). Below about
    2.3 MiB a follower's relay (up to ``relay.MAX_RELAY_BYTES``) may be cut in two entries:
    safe, its answer waits for both, and a relay one of them failed is proposed again by its
    follower, applied at most once (``(client, seq)``)."""
    return max_entry_bytes - min(ENTRY_ROOM, max_entry_bytes // 4)


#: :func:`entry_values_max` of the runtime's default ``max_entry_bytes``: what the engine
#: uses (it sets no other), and the bound callers without a runtime check against
#: (``roots.sync``). A service uses that of its runtime's configured limit.
ENTRY_VALUES_MAX = entry_values_max(DEFAULT_MAX_ENTRY_BYTES)
#: Share of a batch's time a follower waits for the leader to answer its relay before it
#: proposes the batch itself with the time left (``CacheService._relay``).
RELAY_SHARE = 0.5
#: How many times ``raft_cache_batch_wait`` a leader's batch waits for followers whose relays
#: it answered a moment ago: their next relay comes after their own batch (up to one
#: ``batch_wait``), their apply and two hops. ``bench cache --backend sqlite`` (32 writers over
#: 3 masters, 2026-12-07, load ~12): with 1x (2 ms) 810 of 1,169 waits ran out, the relays
#: went as entries of their own and a write cost 0.303 ms of CPU; with 2x, 98-334 ran out
#: (0.22-0.26 ms); with 3x, 11-25 (0.206-0.217 ms, against 0.300-0.311 without relays).
RELAY_WAIT_FACTOR = 3
#: Seconds a follower proposes its batches itself after its leader did not know the relay
#: request (an older version during a rolling upgrade, or a service still starting).
NO_RELAY_RETRY = 30.0
#: Seconds before the catch-up after start is awaited again after an unexpected error.
CATCH_UP_RETRY = 1.0
#: (bank, key) pairs of checked names a service remembers (``CacheService._write``); past this
#: many the memory starts over.
MAX_GOOD_NAMES = 1 << 14
#: Seconds between two checks for a local copy that failed writes left stale.
REPAIR_CHECK_INTERVAL = 10.0


class CacheService:
    def __init__(
        self, settings: CacheSettings, *, clock=time.time, repair_check=REPAIR_CHECK_INTERVAL
    ):
        self.settings = settings
        self.writer = MirrorWriter(
            new_mirror(settings.backend, settings.root), inline=settings.backend == "sqlite"
        )
        self.state_machine = CacheStateMachine(self.writer)
        self.server: ControlServer | None = None
        self._clock = clock
        self._repair_check = repair_check
        self._repair_timer = None
        self.runtime = None
        #: :func:`entry_values_max` of the runtime's ``max_entry_bytes`` (set by :meth:`start`).
        self.entry_bytes_limit = ENTRY_VALUES_MAX
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop (start_writer)
        #: The local copy has applied the read index confirmed after start (see the docstring).
        self.caught_up = False
        self._catch_up_task: asyncio.Task | None = None
        #: (bank prefix, callback) pairs: see :meth:`watch`.
        self._watchers: list[tuple[str, object]] = []
        #: Further requests on the cache socket (:meth:`add_handler`).
        self._extra_handlers: dict = {}
        self.state_machine.on_change = self._changed
        #: Writes received in this turn of the loop: (command, future, timeout, relay); the
        #: future gets the command's result, or ``(entry index, result)`` for a write relayed
        #: by a follower (``relay``: the number of its relay, 0 for a worker's write).
        self._batch: list[tuple[Command, asyncio.Future, float, int]] = []
        self._relays_taken = 0
        self._batch_bytes = 0
        #: Writes answered (successfully) whose workers have not sent another write since: the
        #: open batch waits for them (see the module docstring).
        self._awaited = 0
        #: Of those, followers' relays answered (``replicated.relay``): a relay comes back
        #: after two hops and the follower's own batch, so the batch waits longer for it.
        self._awaited_relays = 0
        self._propose_handle: asyncio.Handle | None = None
        self._wait_handle: asyncio.TimerHandle | None = None
        #: (bank, key) pairs of writes that passed ``check_name``: workers write the same few
        #: names per minion again and again, and the check is a pure function of the names.
        self._good_names: set[tuple] = set()
        #: ``waited``: entries whose batch waited for workers just answered; ``wait_expired``:
        #: of those, the ones ``raft_cache_batch_wait`` ran out for (a worker did not come back
        #: in time, so the batch waited the full bound).
        #: ``relayed``: batches sent to the leader (``replicated.relay``); ``relay_fallbacks``:
        #: of those, the ones proposed here after all; ``relays_served``: relays taken in as
        #: the leader.
        self.counters = {
            "writes": 0,
            "entries": 0,
            "largest_batch": 0,
            "waited": 0,
            "wait_expired": 0,
            "relayed": 0,
            "relay_fallbacks": 0,
            "relays_served": 0,
        }
        #: A leader found not to take relays (an older version, or its cache service not yet
        #: started) and until when (loop time): batches are proposed here meanwhile.
        self._no_relay: tuple[str, float] = ("", 0.0)
        #: Relays under way (tasks): cancelled at stop.
        self._relays: set[asyncio.Task] = set()

    def start_writer(self, loop) -> None:
        """Before the runtime starts: its start may restore a snapshot into the mirror. The
        caught-up marker goes first: from here on the copy may be behind the cluster."""
        self._remove_caught_up_marker()
        self._loop = loop
        self.writer.start(loop)

    def _remove_caught_up_marker(self) -> None:
        self.caught_up = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.settings.caught_up_path)

    async def _catch_up(self, runtime) -> None:
        """Wait for the runtime's barrier after start, then for the mirror to show what it
        applied; then mark the copy caught up (file for the driver, flag for readiness)."""
        while True:
            try:
                index = await runtime.wait_caught_up()
                break
            except Stopped:
                return
            except Exception as exc:  # pylint: disable=broad-except
                # This task dying would leave the copy unserved until the engine restarts,
                # with nothing in the log: say so and keep waiting.
                log.error("saltext-raft cache: waiting to catch up failed (%r); retrying", exc)
                await asyncio.sleep(CATCH_UP_RETRY)
        await self.writer.wait(self.writer.ticket)
        pid = os.getpid()
        # start and boot: a worker tells this engine from a later process given its pid
        # (driver.marker_live), should this one die without removing the marker.
        body = json.dumps(
            {
                "pid": pid,
                "start": process_start(pid),
                "boot": BOOT_ID,
                "read_index": index,
                "at": time.time(),
            }
        )
        try:
            atomic_write(self.settings.caught_up_path, body.encode(), prefix=".caught-up-")
        except OSError as exc:
            log.error(
                "saltext-raft cache: cannot write %s (%s); reads on this master keep failing",
                self.settings.caught_up_path,
                exc,
            )
            return
        self.caught_up = True
        log.info(
            "saltext-raft cache: local copy caught up with the cluster (read index %d); "
            "serving reads",
            index,
        )
        self._notify([cb for _, cb in self._watchers], None, None)

    # --- watchers -----------------------------------------------------------------------------
    def watch(self, prefix: str, callback) -> None:
        """``callback(bank, key)`` on the loop for each applied change of a bank under
        ``prefix`` (``key`` None: the whole bank), once the local copy shows it; and
        ``callback(None, None)`` when the copy has caught up after start, or was rebuilt from a
        snapshot, when anything may have changed. Nothing is reported before the copy caught
        up: until then it may be older than the cluster, and the catch-up call covers it."""
        self._watchers.append((prefix, callback))

    def _changed(self, bank, key, ticket: int) -> None:
        if not self.caught_up or not self._watchers:
            return
        matching = [
            cb
            for prefix, cb in self._watchers
            if bank is None or bank == prefix or bank.startswith(prefix + "/")
        ]
        if not matching:
            return
        if self.writer.done(ticket):
            self._notify(matching, bank, key)
        else:
            self.writer.future(ticket).add_done_callback(
                lambda _: self._notify(matching, bank, key)
            )

    @staticmethod
    def _notify(callbacks, bank, key) -> None:
        for cb in callbacks:
            try:
                cb(bank, key)
            except Exception:  # pylint: disable=broad-except
                log.exception("saltext-raft cache: a watcher failed on %s/%s", bank, key)

    def add_handler(self, op: str, handler) -> None:
        """Serve ``op`` on the cache socket too (``async handler(runtime, request)``), for
        what the engine offers the request workers beside the cache (Salt 3007's ``_auth``
        wrapper: ``replicated/keys3007.py``). Before :meth:`start`."""
        self._extra_handlers[op] = handler

    async def start(self, runtime) -> str:
        self.runtime = runtime
        # The configured limit, not the default: with a lower one a turn's writes (or relays)
        # could make an entry the runtime refuses, failing every write in it. (A higher one
        # changes nothing in practice: MAX_BATCH_BYTES closes a batch well before either.)
        self.entry_bytes_limit = entry_values_max(runtime.config.max_entry_bytes)
        server = ControlServer(runtime, self.settings.socket)
        # Only the cache operations: membership changes are not for request workers.
        server.handlers = {
            "cache.read": self._read,
            "cache.status": self._status,
            **self._extra_handlers,
        }
        server.future_handlers = {
            "cache.store": self._store,
            "cache.flush": self._flush,
            "cache.add": self._add,
            "cache.union": functools.partial(self._op, UNION),
            "cache.expire": functools.partial(self._op, EXPIRE),
        }
        self.server = server
        runtime.serve(relay.RELAY_OP, self._serve_relay)
        bound = await server.start()
        self._catch_up_task = asyncio.get_running_loop().create_task(self._catch_up(runtime))
        self._schedule_repair_check()
        log.info(
            "saltext-raft cache: serving the raft cache driver on %s (mirror %s)",
            bound,
            self.settings.root,
        )
        return bound

    def _schedule_repair_check(self) -> None:
        loop = asyncio.get_running_loop()
        self._repair_timer = loop.call_later(self._repair_check, self._repair_check_due)

    def _repair_check_due(self) -> None:
        """A failed mirror write is repaired with the next applied write; this covers a master
        that gets no more writes (its reads would stay stale until a restart)."""
        self.state_machine.repair_if_damaged()
        self._schedule_repair_check()

    async def stop(self) -> None:
        self._remove_caught_up_marker()  # no longer kept current: a restart must catch up first
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._catch_up_task
            self._catch_up_task = None
        if self._repair_timer is not None:
            self._repair_timer.cancel()
            self._repair_timer = None
        for task in list(self._relays):
            task.cancel()
        if self.server is not None:
            await self.server.close()
            self.server = None
        self.writer.stop()

    # --- handlers -----------------------------------------------------------------------------
    def _timeout(self, req: dict) -> float:
        t = req.get("timeout")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0:
            return min(float(t), 3600.0)
        return self.settings.timeout

    def _store(self, rt, req: dict) -> asyncio.Future:
        return self._write(req, STORE)

    def _flush(self, rt, req: dict) -> asyncio.Future:
        return self._write(req, FLUSH)

    def _add(self, rt, req: dict) -> asyncio.Future:
        return self._write(req, ADD)

    def _op(self, op: int, rt, req: dict) -> asyncio.Future:
        return self._write(req, op)

    def _write(self, req: dict, op: int) -> asyncio.Future:
        """The command of a write request (``cache.store``/``add``/``flush``/``union``/
        ``expire``), checked before it joins a batch (a bad one is refused alone), queued for
        this turn's batch."""
        try:
            value = base64.b64decode(req.get("value") or "", validate=True) if op != FLUSH else b""
            cmd = self._command(
                op,
                req.get("bank", ""),
                req.get("key"),
                value,
                int(self._clock()),
                str(req.get("client") or ""),
                req.get("seq", 0),  # absent: the engine's own writes (no client id either)
            )
            size = _command_bytes(cmd)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise Rejected(str(exc)) from None
        return self._submit(req, cmd, size)

    def _command(self, op, bank, key, value, ts, client, seq) -> Command:
        """A write's command once every field passed the rules a worker's write must pass
        (a relayed command too: ``_serve_relay``). Raises TypeError/ValueError."""
        if op in (FLUSH, EXPIRE):
            check_flush(bank, None if op == EXPIRE else key)  # never the root
            if op == EXPIRE and key is not None:
                raise ValueError("an expire names a bank, not a key")
        elif not (type(bank) is str and type(key) is str and (bank, key) in self._good_names):
            check_key(bank, key)
            if len(self._good_names) >= MAX_GOOD_NAMES:
                self._good_names.clear()
            self._good_names.add((bank, key))
        if type(value) is not bytes:
            raise TypeError(f"a value is bytes, not {type(value).__name__}")
        check_value(op, value)
        if type(client) is not str or type(ts) is not int or not 0 <= ts <= MAX_SEQ:
            raise TypeError("a write's client id is a string and its time an integer")
        return Command(op, bank, key, value, ts, client, _seq(seq))

    # --- the engine's own writes and reads (loop thread) ---------------------------------------
    def propose(self, op: int, bank: str, key: str | None, value: bytes = b"") -> asyncio.Future:
        """A write made by the engine itself (not a request worker): ``op`` is one of the KV
        commands (``STORE``, ``ADD``, ``FLUSH``), checked as a worker's would be; the future
        gets its result once the entry is applied here and written to the local copy. No
        client id: the engine's writes are idempotent (a store of a value, an add)."""
        req = {"bank": bank, "key": key, "value": base64.b64encode(value).decode()}
        return self._write(req, op)

    def fetch(self, bank: str, key: str) -> bytes | None:
        """The value this master has applied (loop thread): the replicated state, not a
        linearizable read; callers act on the watcher calls that follow every change."""
        return self.state_machine.kv.fetch(bank, key)

    def list(self, bank: str) -> list[str]:
        """Keys and sub-banks of ``bank`` as applied here (loop thread)."""
        return self.state_machine.kv.list(bank)

    # --- batching -----------------------------------------------------------------------------
    def _submit(self, req: dict, cmd: Command, size: int) -> asyncio.Future:
        """Queue ``cmd`` (``size``: :func:`_command_bytes`) for this turn's batch; the future
        gets the command's result once its entry is applied here and written to the local
        copy."""
        fut = self._enqueue(cmd, size, self._timeout(req), relay_no=0)
        self._schedule()
        return fut

    def _enqueue(self, cmd: Command, size: int, timeout: float, relay_no: int) -> asyncio.Future:
        fut = self._loop.create_future()
        if self._batch and self._batch_bytes + size > self.entry_bytes_limit:
            self._propose_batch()  # this write would take the entry past max_entry_bytes
        self._batch.append((cmd, fut, timeout, relay_no))
        self._batch_bytes += size
        return fut

    def _schedule(self, relayed: bool = False) -> None:
        """One worker (or, ``relayed``, one follower's relay) has come back: propose the open
        batch now, at the end of this turn, or once the other workers (and followers) answered
        a moment ago are back."""
        loop = self._loop
        if self._awaited:
            self._awaited -= 1
        if relayed and self._awaited_relays:
            self._awaited_relays -= 1
        if self._batch_bytes >= MAX_BATCH_BYTES:
            self._propose_batch()  # big values: propose now rather than grow the entry
        elif not self._awaited or self.settings.batch_wait <= 0:
            if self._propose_handle is None:
                self._propose_handle = loop.call_soon(self._propose_batch)
        elif self._wait_handle is None:
            wait = self.settings.batch_wait * (RELAY_WAIT_FACTOR if self._awaited_relays else 1)
            self._wait_handle = loop.call_later(wait, self._wait_over)

    def _wait_over(self) -> None:
        self._wait_handle = None
        self._propose_batch(expired=True)

    def _propose_batch(self, expired: bool = False) -> None:
        # This batch waited for workers if its wait timer is still pending or just ran out.
        waited = expired or self._wait_handle is not None
        for handle in (self._propose_handle, self._wait_handle):
            if handle is not None:
                handle.cancel()
        self._propose_handle = self._wait_handle = None
        # Workers that have not come back by now are not waited for by the next batch.
        self._awaited = self._awaited_relays = 0
        batch = [b for b in self._batch if not b[1].done()]
        size = self._batch_bytes  # counted as the writes joined (at most: some may be gone)
        self._batch = []
        self._batch_bytes = 0
        if not batch:
            return
        if waited:
            self.counters["waited"] += 1
            self.counters["wait_expired"] += expired
        cmds = [b[0] for b in batch]
        # The batch's deadline is its most impatient writer's: nobody waits past their own.
        timeout = min(b[2] for b in batch)
        if self._relay_to(cmds, size):
            task = self._loop.create_task(self._relay(batch, cmds, timeout))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
            return
        self._propose(batch, cmds, timeout)

    def _propose(self, batch: list, cmds: list[Command], timeout: float) -> None:
        """Propose ``batch`` as one entry from this master (its leader, when a follower)."""
        try:
            proposal = self.runtime.submit(encode_entry(cmds), timeout)
        except RaftRuntimeError as exc:
            _fail(batch, exc)
            return
        # Writes received here: a follower's relayed writes are counted on that follower.
        self.counters["writes"] += sum(1 for b in batch if not b[3])
        self.counters["entries"] += 1
        self.counters["largest_batch"] = max(self.counters["largest_batch"], len(cmds))
        proposal.add_done_callback(functools.partial(self._applied, batch))

    # --- relayed writes (replicated.relay) ------------------------------------------------------
    def _relay_to(self, cmds: list[Command], size: int) -> bool:
        """Whether this batch (``size``: its bytes as :func:`_command_bytes` counts them) goes
        to the leader's cache service rather than into an entry of its own: on a follower
        that knows a leader that takes relays, for writes that apply at most once."""
        runtime = self.runtime
        if not self.settings.relay or runtime.is_leader:
            return False
        leader = runtime.leader
        if not leader or (leader == self._no_relay[0] and self._loop.time() < self._no_relay[1]):
            return False
        return relay.relayable(cmds, size)

    async def _relay(self, batch: list, cmds: list[Command], timeout: float) -> None:
        """Send ``batch`` to the leader; once it answers ``(index, results)``, wait until this
        master applied ``index`` and its copy shows it, and answer the workers.

        A relay the leader did not take, or did not answer within half the batch's time (it
        may have crashed, or lost its leadership), is proposed here for the time left, with
        the same ``(client, seq)``: a copy that did commit is not applied twice, and the
        proposal gets that copy's result."""
        loop = self._loop
        deadline = loop.time() + timeout
        leader = self.runtime.leader
        if self.runtime.is_leader or not leader:
            # The leadership moved in the loop turn since the batch chose to relay: asking
            # nobody (or ourselves) would only cost half the batch's time before the fallback.
            self._propose(batch, cmds, timeout)
            return
        self.counters["relayed"] += 1
        try:
            reply = await self.runtime.ask(leader, relay.request_body(cmds), timeout * RELAY_SHARE)
            index, results = relay.reply_of(reply, len(cmds))
        except asyncio.CancelledError:
            _fail(batch, Stopped("the write was cancelled: the engine is stopping"))
            raise
        except Stopped as exc:
            _fail(batch, exc)
            return
        except RaftRuntimeError as exc:
            if isinstance(exc, Rejected) and "unknown request" in str(exc):
                # an older leader (or one whose service is starting): not again for a while
                self._no_relay = (leader, loop.time() + NO_RELAY_RETRY)
            self.counters["relay_fallbacks"] += 1
            log.debug("saltext-raft cache: relay to %s not taken (%s); proposing here", leader, exc)
            left = deadline - loop.time()
            if left <= 0:
                _fail(batch, CommitTimeout(f"not committed within {timeout:.3g}s ({exc})"))
            else:
                self._propose(batch, cmds, left)
            return
        try:
            await self.runtime.wait_applied(index, max(deadline - loop.time(), 0.001))
        except RaftRuntimeError as exc:
            _fail(batch, exc)
            return
        self.counters["writes"] += len(cmds)
        ticket = self.writer.ticket  # covers the entry at ``index``: it is applied here
        # ``index``: the batch may hold relays this master took while it led (it stepped down
        # before proposing them); their followers wait for that entry.
        if self.writer.done(ticket):
            self._answer(batch, results, index)
        else:
            self.writer.future(ticket).add_done_callback(
                lambda _: self._answer(batch, results, index)
            )

    async def _serve_relay(self, frm: str, body: dict) -> dict:
        """A follower's relay (``Remote.serve``): its commands join this leader's open batch
        as if its workers had sent them here; the answer is ``(index, results)``."""
        runtime = self.runtime
        if not runtime.is_leader:
            raise RemoteNotLeader(runtime.leader, f"{runtime.leader or 'nobody'} leads now")
        raw = relay.commands_of(body)
        # The leader's own deadline (a relay carries none): the batch's deadline is its most
        # impatient writer's, so a member's deadline for its relay failed the leader's own
        # workers' writes in the same entry when it asked for a microsecond, and kept this
        # task (and a batch of relays alone) an hour when it asked for that. The follower
        # bounds its own wait for the answer.
        timeout = self.settings.timeout
        cmds = []
        try:
            for op, bank, key, value, ts, client, seq in raw:
                if type(op) is not int or op not in OPS:
                    raise ValueError(f"unknown command {op!r:.20}")
                if not client:
                    raise ValueError("a relayed write needs a client id")
                cmds.append(self._command(op, bank, key, value, ts, client, seq))
            sizes = [_command_bytes(cmd) for cmd in cmds]
        except (TypeError, ValueError) as exc:
            raise Rejected(f"relay from {frm} refused: {exc}") from None
        if sum(sizes) > relay.MAX_RELAY_BYTES:
            raise Rejected(f"relay from {frm} refused: more than {relay.MAX_RELAY_BYTES} bytes")
        self.counters["relays_served"] += 1
        self._relays_taken += 1
        number = self._relays_taken
        futs = [self._enqueue(c, n, timeout, number) for c, n in zip(cmds, sizes, strict=True)]
        self._schedule(relayed=True)  # the follower's batch counts as one worker come back
        done = await asyncio.gather(*futs)
        return relay.reply_body(max(i for i, _ in done), [r for _, r in done])

    def _applied(self, batch: list, proposal: asyncio.Future) -> None:
        if proposal.cancelled():
            _fail(batch, Stopped("the write was cancelled: the engine is stopping"))
            return
        exc = proposal.exception()
        if exc is not None:
            _fail(batch, exc)
            return
        applied = proposal.result()
        results = applied.result if len(batch) > 1 else [applied.result]
        if not isinstance(results, list) or len(results) != len(batch):
            _fail(
                batch,
                Rejected(f"{len(batch)} writes, but the state machine answered {results!r:.80}"),
            )
            return
        index = applied.index
        if self.writer.done(applied.ticket):
            self._answer(batch, results, index)
        else:
            self.writer.future(applied.ticket).add_done_callback(
                lambda _: self._answer(batch, results, index)
            )

    def _answer(self, batch: list, results: list, index: int = 0) -> None:
        relays = set()
        for (_, fut, _, relay_no), result in zip(batch, results, strict=True):
            if not fut.done():
                if relay_no:
                    fut.set_result((index, result))
                    relays.add(relay_no)
                else:
                    fut.set_result(result)
                    self._awaited += 1
        # A follower whose relay is answered sends its next one as a whole: one to wait for.
        self._awaited += len(relays)
        self._awaited_relays += len(relays)

    async def _read(self, rt, req: dict):
        index = await rt.read(self._timeout(req))
        await self.writer.wait(self.writer.ticket)
        return index

    async def _status(self, rt, req: dict):
        return self.status()

    def status(self) -> dict:
        """What ``cache.status`` answers and ``salt-run raft.status`` shows under ``cache``."""
        return {
            "socket": self.settings.socket,
            "layout": self.settings.backend,
            "mirror": self.settings.root,
            "caught_up": self.caught_up,
            "mirror_counters": dict(self.writer.counters),
            "mirror_last_error": self.writer.last_error or None,
            "applied_commands": self.state_machine.kv.applied_commands,
            "batching": dict(self.counters),
        }


def _command_bytes(cmd: Command) -> int:
    """What ``cmd`` adds to an entry at most: its value and its names (bank, key, client id),
    encoded as the entry encodes them, and their framing. A batch is closed before a write
    would take it past the entry limit, names included (a name may be megabytes), and framing
    too (a member's relays may put hundreds of thousands of tiny writes in one batch); a name
    UTF-8 cannot encode (a lone surrogate, valid in JSON) raises ``UnicodeEncodeError`` here,
    for that write alone, instead of in the batch's encoding, which would leave every write of
    the batch unanswered."""
    names = len(cmd.bank.encode()) + len(cmd.client.encode())
    key = len(cmd.key.encode()) if cmd.key is not None else 0
    return len(cmd.value) + names + key + COMMAND_FRAMING_MAX


def _seq(raw) -> int:
    """A write's sequence number: an integer in ``0..MAX_SEQ``, nothing else (the driver sends
    its counter, a relay the command's own; a request without one passes 0). Not a bool, a
    float or a numeric string: ``(client, seq)`` is what makes a retried write apply at most
    once, so it is taken as sent or refused, never guessed (1.5 and True both read as 1).
    Outside the range it would break the entry's encoding, and every other write of that batch
    would go unanswered."""
    if type(raw) is not int or not 0 <= raw <= MAX_SEQ:
        raise ValueError(f"seq must be an integer in 0..{MAX_SEQ} (got {raw!r:.40})")
    return raw


def _fail(batch: list, exc: BaseException) -> None:
    for _, fut, _, _ in batch:
        if not fut.done():
            fut.set_exception(exc)


def new_cache_service(opts: dict) -> CacheService:
    """The engine's cache service from the master opts (raises CacheConfigError)."""
    from saltext_raft.replicated.config import from_opts  # pylint: disable=import-outside-toplevel

    return CacheService(from_opts(opts))
