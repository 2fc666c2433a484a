"""The KV workload (``--kv``): simulated Salt master workers using the replicated cache.

Lives here: ``KVReplica`` (a node's state machine in KV mode: the sim's CRC chain for the
state-machine-safety checker plus a real ``KVStateMachine``, snapshotted through its own
``snapshot()``/``restore()``), and ``KVWorkload`` (a few clients, each attached to one node,
issuing put/delete/get on a small key space and recording the history that
``linearizability.check`` validates at the end of the seed). Nothing here decides faults or
drives Readys; ``cluster`` calls in after every step, and on applies, served reads and crashes.

A client has at most one operation outstanding, like one master worker process:

- put (Salt ``store``), add (store if absent, the cache import's write; answers whether it
  stored) and delete (``flush`` of one key) go through Raft. The client's node
  proposes an encoded ``Command`` carrying the client id and a sequence number; the operation
  completes when the client's node applies an entry with that (client, seq). If it does not
  within a timeout (8-30 ticks by seed), or the node crashes, the client retries the same
  (client, seq) on another node (the state machine drops duplicates), up to ``ATTEMPTS`` times;
  then it gives up and the operation is recorded with no answer (``ret=None``: it may or may
  not have happened). A write that never left the client (every proposal refused) is not
  recorded.
- get (``fetch``) is a ReadIndex read: ``read_index``, wait for the ReadState, wait until the
  node has applied that index, then read the node's ``KVStateMachine``. A get that gets no
  answer is dropped (an unanswered read constrains nothing).
- local get: read the node's copy at once, without ReadIndex. Salt documents these as
  possibly stale, so they are counted in a separate category and never fed to the checker —
  unless ``local_gets`` is set: the deliberately broken client that serves every get locally,
  which the linearizability check must reject.
"""

from __future__ import annotations

import random

import msgpack

from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import RaftError
from saltext_raft.kv import Command
from saltext_raft.kv import KVStateMachine
from saltext_raft.kv import decode_entry
from saltext_raft.kv import encode_command
from saltext_raft.kv import encode_entry
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.sim.linearizability import Op
from saltext_raft.sim.model import chain_hash
from saltext_raft.sim.network import TICK

BANK = "kv"  # the bank the clients' keys live in (checked)
LOAD_BANK = "load"  # the cluster's background writes and liveness probes (not checked)
#: ticks before a client gives up on an attempt, by seed: short ones retry writes that are
#: still in flight (duplicates in the log, which the state machine must drop)
OP_TIMEOUTS = (8, 15, 30)
ATTEMPTS = 3  # a write is proposed at most this many times (same client id and seq)
REFUSALS = 8  # proposals refused (no leader known, transfer...) before a write gives up
BACKOFF = 3  # ticks to wait after a refusal before asking another node
MAX_OPS_PER_KEY = 40  # keeps each key's history short, so the search stays fast
LOCAL_GET_SHARE = 0.15  # of gets, read locally (unchecked) when the client is correct
#: The share of each kind of operation a client issues (the rest are gets). Deletes are as
#: frequent as adds so that adds often find their key missing and store.
PUT_SHARE, ADD_SHARE, DELETE_SHARE = 0.35, 0.12, 0.13
#: The command of each kind of write.
WRITE_OPS = {"put": STORE, "add": ADD, "delete": FLUSH}


class KVReplica:
    """A node's state machine in KV mode: applied index, CRC chain and a ``KVStateMachine``."""

    __slots__ = ("applied", "chain", "kv", "results")

    kv_class = KVStateMachine  # replaced in tests by a deliberately broken machine

    def __init__(self):
        self.applied = 0
        self.chain = 0
        self.kv = self.kv_class()
        #: What the machine answered for the last entry applied (a list for a batch).
        self.results = None

    def apply(self, entry) -> None:
        self.applied = entry.index
        self.chain = chain_hash(self.chain, entry)
        if entry.kind == EntryKind.NORMAL and entry.data:
            self.results = self.kv.apply(entry.data)

    def encode(self) -> bytes:
        return msgpack.packb([self.applied, self.chain, self.kv.snapshot()], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> KVReplica:
        sm = cls()
        if data:
            sm.applied, sm.chain, state = msgpack.unpackb(data, raw=False)
            sm.kv.restore(state)
        return sm


def replica_class(kv_class: type | None) -> type:
    """``KVReplica``, or a subclass whose nodes run ``kv_class`` instead of the real machine."""
    if kv_class is None or kv_class is KVStateMachine:
        return KVReplica
    return type("KVReplicaWith" + kv_class.__name__, (KVReplica,), {"kv_class": kv_class})


def write_payload(bank: str, key: str, value: bytes) -> bytes:
    """A background write in KV mode (no client id: nothing waits for it)."""
    return encode_command(Command(STORE, bank, key, value))


class ClientOp:
    __slots__ = (
        "client",
        "kind",
        "key",
        "value",
        "result",
        "seq",
        "call",
        "ret",
        "sent",
        "attempts",
        "refusals",
        "deadline",
    )

    def __init__(self, client: str, kind: str, key: str, value, seq: int, call: int):
        self.client = client
        self.kind = kind  # put, add, delete, get
        self.key = key
        self.value = value  # put, add: value written; get: value read
        self.result = None  # add: whether it stored, from the state machine's answer
        self.seq = seq
        self.call = call
        self.ret: int | None = None
        self.sent = False  # a proposal left the client at least once
        self.attempts = 0  # proposals that left the client
        self.refusals = 0  # proposals the node refused outright (nothing left the client)
        self.deadline = 0  # sim time at which the current attempt times out


class KVClient:
    __slots__ = ("id", "node", "seq", "op", "ctx", "next_at")

    def __init__(self, cid: str, node: str):
        self.id = cid
        self.node = node  # the node this worker talks to
        self.seq = 0
        self.op: ClientOp | None = None
        self.ctx = b""  # ReadIndex context of the outstanding get
        self.next_at = 0  # sim time at which the client issues its next operation


class KVWorkload:
    def __init__(self, sim, local_gets: bool = False):
        self.sim = sim
        self.rng = random.Random(f"{sim.seed}/kv")
        self.local_gets = local_gets
        self.keys = [f"k{i}" for i in range(1, self.rng.randint(2, 4) + 1)]
        self.ops_per_key = dict.fromkeys(self.keys, 0)
        self.op_timeout = self.rng.choice(OP_TIMEOUTS) * TICK
        self.think_max = self.rng.choice((TICK // 2, TICK, 3 * TICK))  # sim time units
        self.clients: list[KVClient] = []
        self.by_id: dict[str, KVClient] = {}
        self.gets: dict[bytes, KVClient] = {}
        self.history: list[ClientOp] = []
        self.local_reads = 0
        self._ctx = 0
        # Half the seeds pack the writes their clients send to a node in one step into one
        # entry, as the cache service does with the writes of one loop turn (its own stream,
        # so the other choices of a seed stay what they were).
        self.batching = random.Random(f"{sim.seed}/kvbatch").random() < 0.5
        self._outbox: dict[str, tuple[object, list]] = {}

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, node_ids: list[str]) -> None:
        for i in range(1, self.rng.randint(2, 5) + 1):
            c = KVClient(f"c{i}", self.rng.choice(node_ids))
            self.clients.append(c)
            self.by_id[c.id] = c
        if self.sim.trace:
            self.sim.note(
                f"kv: keys {self.keys}, clients "
                f"{[(c.id, c.node) for c in self.clients]}, think 0-{self.think_max / TICK} ticks, "
                f"timeout {self.op_timeout // TICK} ticks"
                + (", batched writes" if self.batching else "")
                + (", BROKEN: gets read the local copy" if self.local_gets else "")
            )

    def _t(self, text: str) -> None:
        if self.sim.trace:
            self.sim.note(text)

    def _live_node(self, avoid: str = ""):
        live = [s for s in self.sim.live() if not s.removed]
        others = [s for s in live if s.id != avoid]
        pool = others or live
        return self.rng.choice(pool) if pool else None

    def poll(self) -> None:
        """After every step: idle clients whose think time is over issue their next operation;
        an attempt past its deadline is retried or given up."""
        now = self.sim.now
        for c in self.clients:
            op = c.op
            if op is None:
                if now >= c.next_at:
                    self._issue(c)
            elif now >= op.deadline:
                self._timeout(c)
        if self._outbox:
            self._send_batches()

    def on_crash(self, nid: str) -> None:
        now = self.sim.now
        for c in self.clients:
            if c.node == nid and c.op is not None:
                c.op.deadline = now  # the attempt is lost; handled after this step

    # --- issuing ------------------------------------------------------------------------------
    def _issue(self, c: KVClient) -> None:
        keys = [k for k in self.keys if self.ops_per_key[k] < MAX_OPS_PER_KEY]
        if not keys:
            return
        slot = self.sim.slots.get(c.node)
        if slot is None or slot.node is None:
            slot = self._live_node()
            if slot is None:
                return
            c.node = slot.id
        key = self.rng.choice(keys)
        r = self.rng.random()
        now = self.sim.now
        if r < PUT_SHARE + ADD_SHARE:
            c.seq += 1
            kind = "put" if r < PUT_SHARE else "add"
            op = ClientOp(c.id, kind, key, f"{c.id}.{c.seq}", c.seq, now)
        elif r < PUT_SHARE + ADD_SHARE + DELETE_SHARE:
            c.seq += 1
            op = ClientOp(c.id, "delete", key, None, c.seq, now)
        else:
            if self.local_gets or self.rng.random() < LOCAL_GET_SHARE:
                self._local_get(c, slot, key, now)
                return
            op = ClientOp(c.id, "get", key, None, 0, now)
        self.ops_per_key[key] += 1
        c.op = op
        if op.kind == "get":
            self._read(c, slot)
        else:
            self._propose(c, slot)

    def _local_get(self, c: KVClient, slot, key: str, now: int) -> None:
        raw = slot.sm.kv.fetch(BANK, key)
        value = None if raw is None else raw.decode()
        self.local_reads += 1
        self._t(f"kv {c.id} local get {key} at {c.node} -> {value!r}")
        if self.local_gets:  # the broken client: treat it as a linearizable read
            self.ops_per_key[key] += 1
            op = ClientOp(c.id, "get", key, value, 0, now)
            op.ret = now
            self.history.append(op)
        self._idle(c)

    def _propose(self, c: KVClient, slot) -> None:
        op = c.op
        value = op.value.encode() if op.kind != "delete" else b""
        cmd = Command(
            WRITE_OPS[op.kind],
            BANK,
            op.key,
            value,
            op.call // TICK,
            c.id,
            op.seq,
        )
        if self.batching:
            self._outbox.setdefault(slot.id, (slot, []))[1].append((c, cmd))
            return
        self._send(slot, [(c, cmd)])

    def _send_batches(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for slot, items in outbox.values():
            self._send(slot, items)

    def _send(self, slot, items: list) -> None:
        """Propose the writes of ``items`` ((client, command), ...) as one entry."""
        try:
            idx = slot.node.propose(encode_entry([cmd for _, cmd in items]))
        except RaftError as exc:
            what = f"refused ({type(exc).__name__})"
            sent = False
        else:
            what = "-> " + (f"{idx}" if idx is not None else "forwarded")
            sent = True
        self.sim.touch(slot.id)
        batch = f" (batch of {len(items)})" if len(items) > 1 else ""
        for c, _ in items:
            op = c.op
            if sent:
                op.sent = True
                op.attempts += 1
                op.deadline = self.sim.now + self.op_timeout
                outcome = f"attempt {op.attempts} {what}"
            else:
                # nothing left the client: not an attempt, try another node after a short wait
                op.refusals += 1
                op.deadline = self.sim.now + BACKOFF * TICK
                outcome = what
            arg = f"={op.value!r}" if op.kind != "delete" else ""
            self._t(
                f"kv {c.id} {op.kind} {op.key}{arg} seq={op.seq} at {slot.id}: {outcome}" + batch
            )

    def _read(self, c: KVClient, slot) -> None:
        op = c.op
        op.attempts += 1
        op.deadline = self.sim.now + self.op_timeout
        self._ctx += 1
        c.ctx = ctx = b"g%d" % self._ctx
        self.sim.checkers.on_read_start(ctx)
        try:
            slot.node.read_index(ctx)
            self.gets[ctx] = c
            what = "read_index"
        except RaftError as exc:
            op.deadline = self.sim.now  # refused: dropped at the next tick
            what = f"refused ({type(exc).__name__})"
        self.sim.touch(slot.id)
        self._t(f"kv {c.id} get {op.key} at {slot.id} ({ctx.decode()}): {what}")

    def _timeout(self, c: KVClient) -> None:
        op = c.op
        if op.kind == "get":
            self.gets.pop(c.ctx, None)
            self._t(f"kv {c.id} get {op.key}: no answer, dropped")
            if self.rng.random() < 0.5:  # reconnect elsewhere, or keep trying this node
                slot = self._live_node(avoid=c.node)
                if slot is not None:
                    c.node = slot.id
            self._idle(c)
            return
        if op.attempts < ATTEMPTS and op.refusals < REFUSALS:
            slot = self._live_node(avoid=c.node)
            if slot is not None:
                c.node = slot.id
                self._propose(c, slot)
                return
        if op.sent:
            self.history.append(op)  # ret stays None: outcome unknown
            self._t(f"kv {c.id} {op.kind} {op.key} seq={op.seq}: gave up (outcome unknown)")
        else:
            self._t(f"kv {c.id} {op.kind} {op.key} seq={op.seq}: gave up (never proposed)")
        self._idle(c)

    def _idle(self, c: KVClient) -> None:
        c.op = None
        c.ctx = b""
        c.next_at = self.sim.now + self.rng.randint(0, self.think_max)

    # --- completions --------------------------------------------------------------------------
    def on_applied(self, slot, entry) -> None:
        """``slot`` applied ``entry`` (NORMAL, non-empty): complete the writes waiting for it."""
        batch, cmds = decode_entry(entry.data)
        results = slot.sm.results if batch else [slot.sm.results]
        for cmd, result in zip(cmds, results, strict=True):
            c = self.by_id.get(cmd.client)
            if c is None or c.node != slot.id:
                continue
            op = c.op
            if op is None or op.kind == "get" or op.seq != cmd.seq:
                continue
            op.ret = self.sim.now
            answer = ""
            if op.kind == "add":
                op.result = bool(result)
                answer = f" -> {op.result}"
            self.history.append(op)
            self._t(
                f"kv {c.id} {op.kind} {op.key} seq={op.seq}: done{answer} "
                f"(applied at {entry.index})"
            )
            self._idle(c)

    def on_read_served(self, slot, ctx: bytes) -> None:
        """``slot`` has applied up to the ReadState for ``ctx``: answer the get from it."""
        c = self.gets.get(ctx)
        if c is None or c.node != slot.id or c.ctx != ctx:
            return
        del self.gets[ctx]
        op = c.op
        raw = slot.sm.kv.fetch(BANK, op.key)
        op.value = None if raw is None else raw.decode()
        op.ret = self.sim.now
        self.history.append(op)
        self._t(f"kv {c.id} get {op.key} -> {op.value!r} (applied {slot.sm.applied})")
        self._idle(c)

    # --- the end of the seed ------------------------------------------------------------------
    def finish(self) -> list[Op]:
        """Close outstanding operations and return the history for the checker."""
        for c in self.clients:
            op = c.op
            if op is not None and op.kind != "get" and op.sent:
                self.history.append(op)  # no answer before the run ended
            c.op = None
        return [
            Op(
                op.client,
                op.kind,
                op.key,
                op.call / TICK,
                None if op.ret is None else op.ret / TICK,
                op.value,
                op.result,
            )
            for op in self.history
        ]
