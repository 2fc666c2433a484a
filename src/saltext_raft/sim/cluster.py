"""One seeded simulation run: a cluster of ``RaftNode``s on a simulated clock and network.

Lives here: ``SimOptions``, ``FaultMix`` (which fault kinds a seed uses, and how hard),
``Slot`` (one node id: its live ``RaftNode`` or None while crashed, its disk, its state
machine) and ``Simulation`` (the event loop, the client workload, the fault actions, the heal
phase and the liveness check). Invariants live in ``checkers``; the Ready contract in
``driver``; nothing here may import Salt, asyncio or sockets.

A step is one event: a tick of every live node, the delivery of one message, or one action
(client write, ReadIndex read, partition, crash, restart, membership change, leader transfer,
campaign). After every step the driver drains the Readys of the nodes the step touched, then
the checkers look at those nodes. Every random choice comes from RNGs derived from the seed,
and no set is ever iterated unsorted, so a seed replays exactly.
"""

from __future__ import annotations

import copy
import heapq
import math
import random
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core.config import Config
from saltext_raft.core.node import RaftNode
from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import Role
from saltext_raft.kv import decode_entry
from saltext_raft.sim.checkers import Checkers
from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.driver import Driver
from saltext_raft.sim.kvworkload import LOAD_BANK
from saltext_raft.sim.kvworkload import KVWorkload
from saltext_raft.sim.kvworkload import replica_class
from saltext_raft.sim.kvworkload import write_payload
from saltext_raft.sim.linearizability import check as check_linearizable
from saltext_raft.sim.model import Disk
from saltext_raft.sim.model import StateMachine
from saltext_raft.sim.network import TICK
from saltext_raft.sim.network import NetFaults
from saltext_raft.sim.network import Network
from saltext_raft.sim.trace import fmt_msg
from saltext_raft.sim.trace import fmt_ready

#: Every fault kind a seed may use (``--fault-mix`` takes a comma-separated subset).
FAULT_KINDS = (
    "loss",  # messages dropped
    "dup",  # messages delivered twice
    "reorder",  # messages overtaking others on the same link
    "delay",  # messages held for up to a few election timeouts
    "partition",  # symmetric partitions
    "oneway",  # one-way link cuts
    "crash",  # crash (losing what was not persisted) and restart between steps
    "crash-ready",  # crash in the middle of handling a Ready (between its stages)
    "membership",  # add learner, promote, demote, remove follower, remove leader
    "transfer",  # leader transfers and forced campaigns
    "snapshot",  # periodic snapshots and log compaction (keeping 0..1000 entries)
    "group-commit",  # a Ready's save stays in flight while the node is stepped and ticked
    "disk",  # saves that fail (the node stops) and torn writes on a crash
    "clock",  # nodes tick at different rates
    "pause",  # a node stops ticking and stepping for a while, then resumes
)

_TICK_EVENT = 0
_DELIVER_EVENT = 1
_SAVE_EVENT = 2
_LEADER_TYPES = frozenset({MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT})
#: How long a removed node may keep running after its removal commits (ticks).
LINGER_TICKS_MAX = 40


@dataclass
class SimOptions:
    nodes: int | None = None  # founding nodes; None: 3..5 by seed
    steps: int | None = None  # events before the heal phase; None: 1000..2500 by seed
    faults: tuple[str, ...] | None = None  # fault kinds; None: a random mix per seed
    send_before_persist: bool = False  # a broken driver, for tests
    runtime_refinements: bool = False  # drive Readys as saltext_raft.runtime does
    #: Liveness bound after healing (ticks): 30 election timeouts. Elections are randomized, so
    #: this is a bound on bad luck, not a proof: with pre-vote off, candidates with stale logs
    #: keep raising the term, each resetting everyone's timer, and only one node may be able to
    #: win (sim-long seed 9533: the most up-to-date node had appended its own removal, so only one
    #: of the other three could win and it needed to time out first; it did after 310 ticks).
    #: Catch-up is bounded by the drawn flow control too: `--kv` seed 3905 (max_inflight 1, one
    #: 64-byte entry per append, saves of up to 2.7 ticks) needed 300+ ticks to bring two
    #: followers 120 entries forward before the leader could commit.
    heal_ticks: int = 600
    node_class: type = RaftNode  # hook: a subclass or patched class to run instead
    kv: bool = False  # KV workload: clients, KVStateMachine replicas, linearizability check
    local_gets: bool = False  # a broken KV client: gets read the local copy (implies kv)
    kv_class: type | None = None  # hook: a KVStateMachine variant to replicate (implies kv)
    mutant: str = ""  # a planted bug of saltext_raft.sim.mutants, applied for the run

    @property
    def kv_mode(self) -> bool:
        return self.kv or self.local_gets or self.kv_class is not None


@dataclass
class FaultMix:
    kinds: tuple[str, ...]
    net: NetFaults
    crash_ready: float  # probability that handling a Ready crashes the node midway
    snapshot_every: int  # entries applied between snapshots (0: never)
    snapshot_keep: int = 0  # a snapshot keeps 0..this many entries before it in memory
    save_inflight: float = 0.0  # probability that a Ready's save stays in flight
    disk_fail: float = 0.0  # probability that a save raises
    torn: bool = False  # a crash in the middle of a save keeps a prefix of its entries
    clock_skew: float = 0.0  # node tick rates vary within 1 +- this
    pause_max: int = 0  # longest pause in ticks (0: no pauses)

    @classmethod
    def choose(cls, rng: random.Random, kinds: tuple[str, ...] | None) -> FaultMix:
        if kinds is None:
            kinds = tuple(k for k in FAULT_KINDS if rng.random() < 0.5)
        on = set(kinds)
        net = NetFaults(
            loss=rng.choice((0.01, 0.05, 0.15)) if "loss" in on else 0.0,
            dup=rng.choice((0.02, 0.1)) if "dup" in on else 0.0,
            reorder=rng.choice((0.05, 0.3)) if "reorder" in on else 0.0,
            delay=rng.choice((0.005, 0.02)) if "delay" in on else 0.0,
        )
        return cls(
            kinds=tuple(k for k in FAULT_KINDS if k in on),
            net=net,
            crash_ready=rng.choice((0.003, 0.01, 0.03)) if "crash-ready" in on else 0.0,
            snapshot_every=rng.choice((2, 5, 20)) if "snapshot" in on else 0,
            snapshot_keep=rng.choice((0, 0, 2, 10, 1000)) if "snapshot" in on else 0,
            save_inflight=rng.choice((0.3, 0.7, 1.0)) if "group-commit" in on else 0.0,
            disk_fail=rng.choice((0.002, 0.01)) if "disk" in on else 0.0,
            torn="disk" in on,
            clock_skew=rng.choice((0.2, 0.5)) if "clock" in on else 0.0,
            pause_max=rng.choice((15, 40)) if "pause" in on else 0,
        )


class Slot:
    """Everything the sim keeps for one node id."""

    __slots__ = (
        "id",
        "node",
        "disk",
        "sm",
        "incarnation",
        "removed",
        "pending_reads",
        "inflight",
        "rate",
        "phase",
        "paused_until",
        "stop_at",
        "isolated",
    )

    def __init__(self, nid: str, sm_class: type = StateMachine, rate: float = 1.0):
        self.id = nid
        self.node = None
        self.disk = Disk()
        self.sm = sm_class()
        self.incarnation = 0
        self.removed = False
        self.pending_reads: list = []
        self.inflight = None  # a Ready whose save is in flight (driver.InFlight)
        self.rate = rate  # ticks of this node per simulated tick (clock-rate differences)
        self.phase = 0.0
        self.paused_until = 0  # sim time before which the node neither ticks nor steps
        self.stop_at = None  # a removed node lingering: sim time at which it stops
        self.isolated = 0  # own ticks as a leader out of reach of a quorum of its voters


@dataclass
class Stats:
    steps: int = 0
    ticks: int = 0
    elections: int = 0
    commits: int = 0
    reads: int = 0
    membership_changes: int = 0
    proposals: int = 0
    crashes: int = 0
    restarts: int = 0
    snapshots: int = 0
    transfers: int = 0
    partitions: int = 0
    saves_inflight: int = 0  # Readys whose save was in flight while the node was stepped
    stepped_while_saving: int = 0  # messages and ticks a node took with a save in flight
    disk_failures: int = 0
    torn_writes: int = 0
    pauses: int = 0
    lingered: int = 0  # messages sent by removed nodes that had not stopped yet
    kv_ops: int = 0  # answered KV operations checked for linearizability
    kv_unknown: int = 0  # KV writes without an answer (outcome unknown)
    kv_local_reads: int = 0  # local (possibly stale, unchecked) reads
    lin_states: int = 0  # states the linearizability search explored
    faults: dict = field(default_factory=dict)


class Simulation:
    def __init__(self, seed: int, options: SimOptions | None = None, trace=None):
        self.seed = seed
        self.opts = opts = options or SimOptions()
        self.rng = rng = random.Random(seed)
        self.trace = trace
        self.n_founders = opts.nodes or rng.randint(3, 5)
        self.max_steps = opts.steps or rng.randint(1000, 2500)
        self.mix = FaultMix.choose(rng, opts.faults)
        self.config = {
            "election_ticks": 10,
            "heartbeat_ticks": rng.choice((1, 2, 3)),
            "pre_vote": rng.random() < 0.8,
            "check_quorum": rng.random() < 0.8,
            "auto_promote": rng.random() < 0.6,
            "max_inflight": rng.choice((1, 4, 256)),
            "max_msg_bytes": rng.choice((1, 64, 1 << 20)),
            "snapshot_chunk_bytes": rng.choice((16, 16, 64, 256, 1 << 20)),
        }
        self.network = Network(random.Random(f"{seed}/net"), self.mix.net)
        self.slots: dict[str, Slot] = {}
        self.checkers = Checkers({})
        self.driver = Driver(
            self,
            send_before_persist=opts.send_before_persist,
            runtime_refinements=opts.runtime_refinements,
        )
        self.stats = Stats()
        self.now = 0
        self._queue: list = []
        self._seq = 0
        self._touched: dict[str, None] = {}
        self._to_stop: list[str] = []
        self._next_id = self.n_founders + 1
        self._write_seq = 0
        self._read_seq = 0
        self._started = False  # the founding Readys are saved without faults
        self._healing = False
        self._heal_committed = False
        self._quiet_ticks = 0
        self._weights = self._action_weights()
        delay_ticks = NetFaults.delay_max / TICK
        # two election timeouts for check-quorum, then the latest a message sent before the
        # leader lost its quorum can still arrive (delays, reordering, saves in flight), in the
        # leader's own ticks
        self._stepdown_bound = 2 * self.config["election_ticks"] + math.ceil(
            (delay_ticks + 10) * (1 + self.mix.clock_skew)
        )
        kv = opts.kv_mode
        self.sm_class = replica_class(opts.kv_class) if kv else StateMachine
        self.kv = KVWorkload(self, local_gets=opts.local_gets) if kv else None

    # --- tracing ------------------------------------------------------------------------------
    def _t(self, text: str) -> None:
        if self._quiet_ticks:
            n, self._quiet_ticks = self._quiet_ticks, 0
            self.trace(f"{'':>9} ... {n} tick(s)")
        self.trace(f"{self.now / TICK:9.2f} {text}")

    def trace_ready(self, slot: Slot, rd) -> None:
        if self.trace:
            self._t(fmt_ready(slot.id, rd))

    # --- setup --------------------------------------------------------------------------------
    def _node_config(self, nid: str) -> Config:
        return Config(id=nid, **self.config)

    def _node_rng(self, slot: Slot) -> random.Random:
        return random.Random(f"{self.seed}/{slot.id}/{slot.incarnation}")

    def _start(self) -> None:
        founders = {f"n{i}": f"addr-n{i}" for i in range(1, self.n_founders + 1)}
        if self.trace:
            self._t(
                f"seed {self.seed}: founders {sorted(founders)}, {self.max_steps} steps, "
                f"faults {list(self.mix.kinds) or 'none'} {self.mix.net}, crash_ready="
                f"{self.mix.crash_ready}, snapshot_every={self.mix.snapshot_every}, "
                f"config {self.config}"
            )
        for nid in founders:
            slot = self._new_slot(nid)
            slot.node = self.opts.node_class.bootstrap(
                self._node_config(nid), self._node_rng(slot), founders
            )
            # the founding Ready is persisted without crash points: a founder that loses
            # entry 1 is a different scenario (a joining node), not a fault of the cluster
            self.driver.handle(slot)
            self.driver.drain(slot)
        if self.kv is not None:
            self.kv.start(sorted(founders))
        self._started = True
        self._push(TICK, _TICK_EVENT, None)

    def _new_slot(self, nid: str) -> Slot:
        skew = self.mix.clock_skew
        rate = round(self.rng.uniform(1 - skew, 1 + skew), 3) if skew else 1.0
        slot = Slot(nid, self.sm_class, rate)
        self.slots[nid] = slot
        self.checkers.disks[nid] = slot.disk
        if self.trace and skew:
            self._t(f"{nid} clock rate {rate}")
        return slot

    def _push(self, at: int, kind: int, payload) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    # --- the node lifecycle ---------------------------------------------------------------------
    def crash(self, slot: Slot, why: str) -> None:
        if slot.node is not None:
            # What the node decided since the checkers last looked (a leader's commit in an
            # advance() of this drain, say) happened, even though the crash loses it.
            self.checkers.on_node(slot.node)
        if slot.inflight is not None:
            self.driver.crash_inflight(slot)
        slot.node = None
        slot.paused_until = 0
        slot.stop_at = None
        slot.isolated = 0
        slot.sm = None
        slot.pending_reads.clear()
        self.checkers.on_crash(slot.id)
        if self.kv is not None:
            self.kv.on_crash(slot.id)
        self.stats.crashes += 1
        if self.trace:
            self._t(f"CRASH {slot.id} ({why})")

    def restart(self, slot: Slot) -> None:
        slot.incarnation += 1
        disk = slot.disk
        node = self.opts.node_class(
            self._node_config(slot.id),
            self._node_rng(slot),
            hard_state=disk.hs,
            snapshot=disk.snap,
            entries=list(disk.entries),
        )
        slot.node = node
        if disk.snap is not None:
            slot.sm = self.sm_class.decode(disk.snap.data)
            self.checkers.on_restore(slot.id, disk.snap.meta.index, slot.sm.chain)
        else:
            slot.sm = self.sm_class()
        self.checkers.on_restart(node, disk.hs)
        self.stats.restarts += 1
        self._touched[slot.id] = None
        if self.trace:
            self._t(
                f"RESTART {slot.id} (hs term={disk.hs.term} vote={disk.hs.vote or '-'} "
                f"commit={disk.hs.commit}, snapshot@{disk.offset}, log to {disk.last_index})"
            )

    def pick_crash_point(self, slot: Slot) -> int | None:
        p = self.mix.crash_ready
        if p and not self._healing and self.rng.random() < p:
            return self.rng.randrange(len(self.driver.stages))
        return None

    def pick_save_delay(self, slot: Slot, rd) -> int:
        """How long this Ready's save stays in flight (0: done at once)."""
        p = self.mix.save_inflight
        if p and self._started and rd.must_sync and self.rng.random() < p:
            self.stats.saves_inflight += 1
            return self.rng.randint(1, 3 * TICK)
        return 0

    def schedule_save(self, slot: Slot, delay: int, token: int) -> None:
        self._push(self.now + delay, _SAVE_EVENT, (slot.id, token))
        if self.trace:
            self._t(f"{slot.id} save in flight ({delay / TICK:.2f} ticks)")

    def pick_disk_failure(self, slot: Slot, rd) -> bool:
        p = self.mix.disk_fail
        if p and self._started and not self._healing and rd.must_sync and self.rng.random() < p:
            self.stats.disk_failures += 1
            return True
        return False

    def pick_torn_prefix(self, slot: Slot, rd) -> int | None:
        """How many of the save's entries a crash in its middle leaves on disk (None: none, and
        no snapshot either)."""
        if not self.mix.torn or (not rd.entries and rd.snapshot is None):
            return None
        k = self.rng.randint(0, len(rd.entries))
        self.stats.torn_writes += 1
        if self.trace:
            self._t(f"{slot.id} torn write: {k} of {len(rd.entries)} entries reach the disk")
        return k

    # --- driver callbacks -----------------------------------------------------------------------
    def send(self, m: Message) -> None:
        slot = self.slots.get(m.to)
        if slot is None:
            return  # an id nobody ever started
        sender = self.slots.get(m.frm)
        if sender is not None and sender.stop_at is not None:
            self.stats.lingered += 1
        first = True
        for at in self.network.route(m.frm, m.to, self.now):
            # a duplicate is a distinct copy, as two decodes of the same bytes are: the core
            # may change a message it steps (a forwarded request is readdressed in place)
            self._push(at, _DELIVER_EVENT, m if first else copy.deepcopy(m))
            first = False

    def after_advance(self, slot: Slot) -> None:
        every = self.mix.snapshot_every
        if not every:
            return
        sm = slot.sm
        if sm.applied - slot.disk.offset >= every and sm.applied > slot.node.snapshot_meta.index:
            keep = self.mix.snapshot_keep
            keep = self.rng.randint(0, keep) if keep else 0
            snap = slot.node.create_snapshot(sm.applied, sm.encode(), keep=keep)
            slot.disk.compact(snap)
            self.stats.snapshots += 1
            if self.trace:
                self._t(
                    f"{slot.id} snapshot@{snap.meta.index} ({len(snap.data)} bytes, log "
                    f"compacted, {keep} kept in memory)"
                )

    def check_memory_matches_disk(self, slot: Slot) -> None:
        node, disk = slot.node, slot.disk
        last = node.last_index
        if last != disk.last_index or node.term_at(last) != disk.term_at(last):
            raise Violation(
                "log_matching",
                f"{slot.id}: in-memory log ends at {last} (term {node.term_at(last)}) but its disk "
                f"at {disk.last_index} (term {disk.term_at(disk.last_index)}) with no Ready "
                "pending",
            )

    def on_first_apply(self, e) -> None:
        if e.kind == EntryKind.CONF:
            cc = ConfChange.decode(e.data)
            if cc.op == ConfOp.BOOTSTRAP:
                return
            self.stats.membership_changes += 1
            if cc.op == ConfOp.REMOVE:
                slot = self.slots.get(cc.node_id)
                if slot is not None and not slot.removed:
                    # an operator stops a removed master some time after the removal: until
                    # then it keeps running, ticking and sending
                    slot.removed = True
                    linger = self.rng.randint(0, LINGER_TICKS_MAX) * TICK
                    slot.stop_at = self.now + linger
                    self._to_stop.append(cc.node_id)
                    if self.trace:
                        self._t(f"{cc.node_id} removed: stops in {linger // TICK} tick(s)")
        elif self._healing and e.data and self._is_probe(e.data):
            self._heal_committed = True

    def _payload(self, raw: bytes) -> bytes:
        """A background write (``w<n>``, key "w") or liveness probe (``h<n>``, key "h"): the raw
        bytes, or in KV mode a store into the load bank (which the clients never read)."""
        return raw if self.kv is None else write_payload(LOAD_BANK, raw[:1].decode(), raw)

    def _is_probe(self, data: bytes) -> bool:
        if self.kv is None:
            return data[:1] == b"h"
        return any(c.bank == LOAD_BANK and c.key == "h" for c in decode_entry(data)[1])

    def serve_reads(self, slot: Slot) -> None:
        applied = slot.sm.applied
        keep = []
        for rs in slot.pending_reads:
            if rs.index <= applied:
                self.checkers.on_read_served(slot.id, rs.context, applied)
                self.stats.reads += 1
                if self.kv is not None:
                    self.kv.on_read_served(slot, rs.context)
            else:
                keep.append(rs)
        slot.pending_reads = keep

    # --- events -------------------------------------------------------------------------------
    def _live(self) -> list[Slot]:
        """Running nodes a client or an operator can reach now (not paused)."""
        now = self.now
        return [s for s in self.slots.values() if s.node is not None and s.paused_until <= now]

    def _leader(self) -> Slot | None:
        """The running, unpaused leader of the highest term."""
        best = None
        now = self.now
        for s in self.slots.values():
            n = s.node
            if (
                n is not None
                and s.paused_until <= now
                and n.role is Role.LEADER
                and (best is None or n.term > best.node.term)
            ):
                best = s
        return best

    def _tick(self) -> None:
        """One tick of simulated time: each running node ticks ``rate`` times on average (a
        paused node not at all); each leader's reach is checked (check-quorum)."""
        self.stats.ticks += 1
        now = self.now
        for s in self.slots.values():
            node = s.node
            if node is None or s.paused_until > now:
                continue
            s.phase += s.rate
            n = int(s.phase)
            s.phase -= n
            for _ in range(n):
                node.tick()
                if s.inflight is not None:
                    self.stats.stepped_while_saving += 1
                if node.role is Role.LEADER:
                    self._check_leader_reach(s)
                else:
                    s.isolated = 0
            if n:
                self._touched[s.id] = None
        self._push(now + TICK, _TICK_EVENT, None)
        if self.trace:
            self._quiet_ticks += 1

    def _check_leader_reach(self, s: Slot) -> None:
        """With check-quorum, a leader out of reach of a quorum of its voters (partitioned,
        voters crashed or paused) must step down within ``_stepdown_bound`` of its own ticks
        (two election timeouts, plus the longest a message can still arrive late)."""
        node = s.node
        if not node.cfg.check_quorum:
            return
        voters = node.membership.voters
        blocked = self.network.blocked
        now = self.now
        reach = 0
        for v in voters:
            if v == s.id:
                reach += 1
                continue
            o = self.slots.get(v)
            if o is None or o.node is None or o.paused_until > now:
                continue
            if (s.id, v) in blocked or (v, s.id) in blocked:
                continue
            reach += 1
        if reach * 2 > len(voters):
            s.isolated = 0
            return
        s.isolated += 1
        if s.isolated > self._stepdown_bound:
            raise Violation(
                "leader_steps_down",
                f"leader {s.id} (term {node.term}) has been out of reach of a quorum of voters "
                f"{sorted(voters)} for {s.isolated} of its ticks and still leads (check-quorum "
                f"bound {self._stepdown_bound})",
            )

    def _deliver(self, m: Message) -> None:
        slot = self.slots.get(m.to)
        if slot is None or slot.node is None:
            return
        if self.network.is_blocked(m.frm, m.to):
            return  # cut while in flight
        if slot.paused_until > self.now:
            self._push(slot.paused_until, _DELIVER_EVENT, m)  # read when the node resumes
            return
        if self.trace:
            self._t(f"deliver {fmt_msg(m)}")
        self.checkers.on_deliver(m)
        node = slot.node
        if slot.inflight is not None:
            self.stats.stepped_while_saving += 1
        before = node.commit_index
        node.step(m)
        if m.type in _LEADER_TYPES:
            self.checkers.on_follower_step(slot.id, m, before, node.commit_index)
        self._touched[slot.id] = None

    def _save_done(self, payload) -> None:
        nid, token = payload
        slot = self.slots[nid]
        if slot.paused_until > self.now:
            self._push(slot.paused_until, _SAVE_EVENT, payload)  # a paused process writes on
            return  # ... but completes nothing until it runs again
        if self.driver.resume(slot, token):
            if self.trace:
                self._t(f"{nid} save done")
            self._touched[nid] = None

    def step(self) -> None:
        self.stats.steps += 1
        if not self._healing and self.rng.random() < 0.05:
            self._action()
        else:
            at, _, kind, payload = heapq.heappop(self._queue)
            self.now = at
            if kind == _TICK_EVENT:
                self._tick()
            elif kind == _DELIVER_EVENT:
                self._deliver(payload)
            else:
                self._save_done(payload)
        if self.kv is not None:
            self.kv.poll()
        self._settle()

    def _settle(self) -> None:
        """Drain Readys of touched nodes, stop removed nodes, then check touched nodes."""
        while self._touched:
            touched = list(self._touched)
            self._touched.clear()
            for nid in touched:
                slot = self.slots[nid]
                if slot.node is not None:
                    self.driver.drain(slot)
            if self._to_stop:
                self._stop_removed()
            check = self.checkers.on_node
            for nid in touched:
                node = self.slots[nid].node
                if node is not None:
                    check(node)
                    if node.role is Role.LEADER:
                        self.checkers.on_leader_progress(node, self._term_of)

    def _term_of(self, nid: str) -> int:
        slot = self.slots[nid]
        node = slot.node
        return max(node.term if node is not None else 0, slot.disk.hs.term)

    def _stop_removed(self) -> None:
        """Stop the removed nodes whose lingering time is over."""
        now = self.now
        keep = []
        for nid in self._to_stop:
            slot = self.slots[nid]
            if slot.node is None or slot.stop_at is None:
                continue
            if slot.stop_at <= now:
                self.crash(slot, "removed from the cluster: stopped")
            else:
                keep.append(nid)
        self._to_stop = keep

    # --- actions ------------------------------------------------------------------------------
    def _action_weights(self) -> list[tuple[str, float]]:
        on = set(self.mix.kinds)
        w = [("propose", 10.0), ("read", 4.0)]
        if "partition" in on:
            w += [("partition", 2.0), ("heal-net", 2.0)]
        if "oneway" in on:
            w += [("oneway", 2.0), ("heal-net", 1.0)]
        if "crash" in on:
            w += [("crash", 2.0), ("restart", 3.0)]
        if "membership" in on:
            promote = 0.5 if self.config["auto_promote"] else 1.5
            w += [
                ("add-learner", 2.0),
                ("promote", promote),
                ("demote", 1.0),
                ("remove-follower", 1.0),
                ("remove-leader", 0.5),
            ]
        if "transfer" in on:
            w += [("transfer", 1.5), ("campaign", 0.5)]
        if "pause" in on:
            w += [("pause", 2.0)]
        return w

    def _action(self) -> None:
        names = [n for n, _ in self._weights]
        weights = [x for _, x in self._weights]
        name = self.rng.choices(names, weights)[0]
        getattr(self, "_do_" + name.replace("-", "_"))()

    def _do_propose(self) -> None:
        live = self._live()
        if not live:
            return
        # Most writes go to a node that believes it leads: the newest leader, or (a client
        # still attached to it) a deposed one on the minority side of a partition, whose
        # entries then sit uncommitted and divergent on its followers' disks.
        leaders = [s for s in live if s.node.role is Role.LEADER]
        r = self.rng.random()
        if leaders and r < 0.5:
            slot = self._leader()
        elif len(leaders) > 1 and r < 0.7:
            slot = self.rng.choice(leaders)
        else:
            slot = self.rng.choice(live)
        # a burst of writes now and then: longer logs, multi-entry appends, snapshots
        for _ in range(1 if self.rng.random() < 0.8 else self.rng.randint(2, 8)):
            self._write_seq += 1
            data = b"w%d" % self._write_seq
            self.stats.proposals += 1
            try:
                idx = slot.node.propose(self._payload(data))
            except RaftError as exc:
                idx = f"refused ({type(exc).__name__})"
            if self.trace:
                self._t(f"client propose {data.decode()} at {slot.id} -> {idx}")
        self._touched[slot.id] = None

    def _do_read(self) -> None:
        live = self._live()
        if not live:
            return
        slot = self.rng.choice(live)
        self._read_seq += 1
        ctx = b"r%d" % self._read_seq
        self.checkers.on_read_start(ctx)
        try:
            slot.node.read_index(ctx)
            what = f"started (must see commit {self.checkers.max_commit})"
        except RaftError as exc:
            what = f"refused ({type(exc).__name__})"
        self._touched[slot.id] = None
        if self.trace:
            self._t(f"client read {ctx.decode()} at {slot.id}: {what}")

    def _member_ids(self) -> list[str]:
        return [s.id for s in self.slots.values() if not s.removed]

    def _do_partition(self) -> None:
        ids = self._member_ids()
        if len(ids) < 2:
            return
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) // 2)
        leader = self._leader()
        if leader is not None and leader.id in ids and self.rng.random() < 0.5:
            # Jepsen's "isolate the leader": the leader and k-1 followers on the minority side,
            # where the writes its clients still send stay uncommitted and divergent
            k = max(k, min(2, len(ids) // 2))
            ids.remove(leader.id)
            ids.insert(0, leader.id)
        a, b = sorted(ids[:k]), sorted(ids[k:])
        self.network.partition(a, b)
        self.stats.partitions += 1
        if self.trace:
            self._t(f"PARTITION {a} | {b}")

    def _do_oneway(self) -> None:
        ids = self._member_ids()
        if len(ids) < 2:
            return
        frm, to = self.rng.sample(sorted(ids), 2)
        self.network.cut_one_way(frm, to)
        self.stats.partitions += 1
        if self.trace:
            self._t(f"CUT one way {frm} -> {to}")

    def _do_heal_net(self) -> None:
        if self.network.blocked:
            self.network.heal()
            if self.trace:
                self._t("HEAL network")

    def _do_pause(self) -> None:
        live = self._live()
        if not live:
            return
        leader = self._leader()
        slot = leader if leader is not None and self.rng.random() < 0.5 else self.rng.choice(live)
        ticks = self.rng.randint(3, self.mix.pause_max)
        slot.paused_until = self.now + ticks * TICK
        self.stats.pauses += 1
        if self.trace:
            self._t(f"PAUSE {slot.id} for {ticks} ticks")

    def _do_crash(self) -> None:
        live = self._live()
        if live:
            self.crash(self.rng.choice(live), "crash")

    def _do_restart(self) -> None:
        down = [s for s in self.slots.values() if s.node is None and not s.removed]
        if down:
            self.restart(self.rng.choice(down))

    def _conf_change(self, op: ConfOp, nid: str, address: str = "") -> bool:
        leader = self._leader()
        try:
            idx = leader.node.propose_conf_change(op, nid, address)
            ok = True
        except RaftError as exc:
            idx, ok = f"refused ({type(exc).__name__}: {exc})", False
        self._touched[leader.id] = None
        if self.trace:
            self._t(f"membership {op.value} {nid} at leader {leader.id} -> {idx}")
        return ok

    def _do_add_learner(self) -> None:
        leader = self._leader()
        if leader is None or len(self.slots) >= self.n_founders + 6:
            return
        nid = f"n{self._next_id}"
        if self._conf_change(ConfOp.ADD_LEARNER, nid, f"addr-{nid}"):
            self._next_id += 1
            slot = self._new_slot(nid)
            slot.node = self.opts.node_class(self._node_config(nid), self._node_rng(slot))
            self._touched[nid] = None
            if self.trace:
                self._t(f"START {nid} (fresh, joining)")

    def _do_promote(self) -> None:
        leader = self._leader()
        if leader is not None:
            learners = sorted(leader.node.membership.learners)
            if learners:
                self._conf_change(ConfOp.PROMOTE, self.rng.choice(learners))

    def _voters_removable(self, leader: Slot) -> list[str]:
        # keep at least three voters, so one crashed voter never stops the cluster for long
        voters = sorted(leader.node.membership.voters)
        return voters if len(voters) > 3 else []

    def _do_demote(self) -> None:
        leader = self._leader()
        if leader is not None:
            voters = [v for v in self._voters_removable(leader) if v != leader.id]
            if voters:
                self._conf_change(ConfOp.DEMOTE, self.rng.choice(voters))

    def _do_remove_follower(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        m = leader.node.membership
        cands = [v for v in self._voters_removable(leader) if v != leader.id]
        cands += sorted(m.learners)
        if cands:
            self._conf_change(ConfOp.REMOVE, self.rng.choice(cands))

    def _do_remove_leader(self) -> None:
        leader = self._leader()
        if leader is not None and leader.id in self._voters_removable(leader):
            self._conf_change(ConfOp.REMOVE, leader.id)

    def _do_transfer(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        others = [v for v in sorted(leader.node.membership.voters) if v != leader.id]
        if not others:
            return
        target = self.rng.choice(others)
        try:
            leader.node.transfer_leader(target)
            what = "requested"
        except RaftError as exc:
            what = f"refused ({type(exc).__name__})"
        self.stats.transfers += 1
        self._touched[leader.id] = None
        if self.trace:
            self._t(f"transfer leadership {leader.id} -> {target}: {what}")

    def _do_campaign(self) -> None:
        live = [s for s in self._live() if s.node.role is not Role.LEADER]
        if live:
            slot = self.rng.choice(live)
            slot.node.campaign()
            self._touched[slot.id] = None
            if self.trace:
                self._t(f"force campaign at {slot.id}")

    # --- the run ------------------------------------------------------------------------------
    def _heal(self) -> None:
        """Remove every fault and restart every node, then demand progress (liveness)."""
        self._healing = True
        self.network.heal()
        self.network.faults = NetFaults()
        if self.trace:
            self._t("=== HEAL: no more faults; every node up; a write must commit ===")
        for s in self.slots.values():
            s.paused_until = 0
            # clocks back in step: with pre-vote off, a node with a stale log whose clock runs
            # 1.5 times as fast as the others' times out first every time and its vote requests
            # (a higher term) reset their timers, so no election ever succeeds (the randomized
            # timeouts of §5.2 assume clocks that agree within their 2x range)
            s.rate = 1.0
            if s.inflight is not None:
                s.inflight.crash_before = None  # drawn before healing: no more crashes now
            if s.node is None and not s.removed:
                self.restart(s)
        self._settle()
        start = self.stats.ticks
        next_probe = start
        probes = 0
        while not self._heal_committed:
            ticks = self.stats.ticks - start
            if ticks > self.opts.heal_ticks:
                leader = self._leader()
                raise Violation(
                    "liveness",
                    f"no write committed within {self.opts.heal_ticks} ticks after healing "
                    f"(leader: {leader.id if leader else 'none'}; {probes} probes)",
                )
            if self.stats.ticks >= next_probe:
                next_probe = self.stats.ticks + 5
                probes += 1
                self._probe(probes)
            self.step()
        self._await_catch_up()
        if self.config["auto_promote"]:
            self._await_promotions()

    def _await_catch_up(self) -> None:
        """Every member (voters and learners, as the leader's configuration lists them) must
        commit and apply up to the leader's commit index of the moment the heal write
        committed, within ``heal_ticks`` and with no more writes: a follower stuck behind (a
        snapshot transfer that never completes, a log that never converges) fails here."""
        leader = self._leader()
        target = leader.node.commit_index if leader is not None else self.checkers.max_commit
        start = self.stats.ticks
        while True:
            leader = self._leader()
            behind = ["no leader"]
            if leader is not None:
                behind = []
                for nid in sorted(leader.node.membership.members):
                    slot = self.slots.get(nid)
                    if slot is None:
                        continue
                    node = slot.node
                    if node is None or node.commit_index < target or slot.sm.applied < target:
                        behind.append(
                            f"{nid} (commit {node.commit_index}, applied {slot.sm.applied})"
                            if node is not None
                            else f"{nid} (down)"
                        )
                if not behind:
                    return
            if self.stats.ticks - start > self.opts.heal_ticks:
                raise Violation(
                    "liveness",
                    f"members not caught up to commit {target} within {self.opts.heal_ticks} "
                    f"ticks after the heal write: {', '.join(behind)}",
                )
            self.step()

    def _await_promotions(self) -> None:
        """With auto-promotion on, every running learner (not deliberately demoted) must become a
        voter within ``heal_ticks`` of the heal write's commit, with no more writes: a learner
        that caught up while another change was pending must not wait for the next entry."""
        start = self.stats.ticks
        while True:
            leader = self._leader()
            waiting = []
            if leader is not None:
                m = leader.node.membership
                waiting = sorted(
                    nid
                    for nid in m.learners - m.demoted
                    if nid in self.slots and self.slots[nid].node is not None
                )
                if not waiting and leader.node.committed_membership == m:
                    return
            if self.stats.ticks - start > self.opts.heal_ticks:
                raise Violation(
                    "liveness",
                    f"learners {waiting} not promoted within {self.opts.heal_ticks} ticks after "
                    f"the heal write (leader: {leader.id if leader else 'none'})",
                )
            self.step()

    def _probe(self, k: int) -> None:
        leader = self._leader()
        live = self._live()
        if not live:
            return
        slot = leader or self.rng.choice(live)
        data = b"h%d" % k
        try:
            idx = slot.node.propose(self._payload(data))
        except RaftError as exc:
            idx = f"refused ({type(exc).__name__})"
        self._touched[slot.id] = None
        if self.trace:
            self._t(f"liveness probe {data.decode()} at {slot.id} -> {idx}")

    def run(self) -> None:
        """Run the seed; raises Violation on the first broken invariant."""
        self._start()
        for _ in range(self.max_steps):
            self.step()
        self._heal()
        st = self.stats
        st.elections = len(self.checkers.leaders)
        st.commits = self.checkers.max_commit
        st.faults = dict(self.network.stats)
        if self.kv is not None:
            self._check_kv_history()

    def _check_kv_history(self) -> None:
        """Feed the clients' history to the Wing-Gong search: one Violation if it fails."""
        kv = self.kv
        history = kv.finish()
        st = self.stats
        st.kv_ops = sum(1 for op in history if op.ret is not None)
        st.kv_unknown = len(history) - st.kv_ops
        st.kv_local_reads = kv.local_reads
        result = check_linearizable(history)
        st.lin_states = result.explored
        if self.trace:
            self._t(
                f"linearizability: {len(history)} ops ({st.kv_unknown} unanswered) on "
                f"{len(kv.keys)} keys, {result.explored} states explored: "
                f"{'ok' if result.ok else 'NOT linearizable'}"
            )
        if not result.ok:
            raise Violation("linearizable", result.describe())
