"""One seeded simulation run: a cluster of ``RaftNode``s on a simulated clock and network.

Lives here: ``SimOptions``, ``Slot`` (one node id: its live ``RaftNode`` or None while
crashed, its disk, its state machine) and ``Simulation`` (the event loop, node crash and
restart, the client workload, the check-quorum reach check). Must not live here: fault
injection (``faults``), the heal phase and its liveness checks (``heal``), invariants
(``checkers``), the Ready contract (``driver``); nothing here may import Salt, asyncio or
sockets. ``Faults`` and ``Heal`` drive the simulation through its public methods (``live``,
``leader``, ``touch``, ``note``, ``crash``, ``restart``, ``start_fresh``, ``settle``, ``step``).

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
from saltext_raft.sim.faults import FaultMix
from saltext_raft.sim.faults import Faults
from saltext_raft.sim.heal import Heal
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
        self._write_seq = 0
        self._read_seq = 0
        self.started = False  # the founding Readys are saved without faults
        self.healing = False
        self.heal_committed = False
        self._quiet_ticks = 0
        self.faults = Faults(self)
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
    def note(self, text: str) -> None:
        if self._quiet_ticks:
            n, self._quiet_ticks = self._quiet_ticks, 0
            self.trace(f"{'':>9} ... {n} tick(s)")
        self.trace(f"{self.now / TICK:9.2f} {text}")

    def touch(self, nid: str) -> None:
        """``nid`` has work: drain its Readys and check it at the end of this step."""
        self._touched[nid] = None

    def trace_ready(self, slot: Slot, rd) -> None:
        if self.trace:
            self.note(fmt_ready(slot.id, rd))

    # --- setup --------------------------------------------------------------------------------
    def _node_config(self, nid: str) -> Config:
        return Config(id=nid, **self.config)

    def _node_rng(self, slot: Slot) -> random.Random:
        return random.Random(f"{self.seed}/{slot.id}/{slot.incarnation}")

    def _start(self) -> None:
        founders = {f"n{i}": f"addr-n{i}" for i in range(1, self.n_founders + 1)}
        if self.trace:
            self.note(
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
        self.started = True
        self._push(TICK, _TICK_EVENT, None)

    def _new_slot(self, nid: str) -> Slot:
        skew = self.mix.clock_skew
        rate = round(self.rng.uniform(1 - skew, 1 + skew), 3) if skew else 1.0
        slot = Slot(nid, self.sm_class, rate)
        self.slots[nid] = slot
        self.checkers.disks[nid] = slot.disk
        if self.trace and skew:
            self.note(f"{nid} clock rate {rate}")
        return slot

    def start_fresh(self, nid: str) -> None:
        """Start a new, empty node (a master joining after its ADD_LEARNER was proposed)."""
        slot = self._new_slot(nid)
        slot.node = self.opts.node_class(self._node_config(nid), self._node_rng(slot))
        self.touch(nid)
        if self.trace:
            self.note(f"START {nid} (fresh, joining)")

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
            self.note(f"CRASH {slot.id} ({why})")

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
            self.note(
                f"RESTART {slot.id} (hs term={disk.hs.term} vote={disk.hs.vote or '-'} "
                f"commit={disk.hs.commit}, snapshot@{disk.offset}, log to {disk.last_index})"
            )

    def schedule_save(self, slot: Slot, delay: int, token: int) -> None:
        self._push(self.now + delay, _SAVE_EVENT, (slot.id, token))
        if self.trace:
            self.note(f"{slot.id} save in flight ({delay / TICK:.2f} ticks)")

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
                self.note(
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
                        self.note(f"{cc.node_id} removed: stops in {linger // TICK} tick(s)")
        elif self.healing and e.data and self._is_probe(e.data):
            self.heal_committed = True

    def payload(self, raw: bytes) -> bytes:
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
    def live(self) -> list[Slot]:
        """Running nodes a client or an operator can reach now (not paused)."""
        now = self.now
        return [s for s in self.slots.values() if s.node is not None and s.paused_until <= now]

    def leader(self) -> Slot | None:
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
            self.note(f"deliver {fmt_msg(m)}")
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
                self.note(f"{nid} save done")
            self._touched[nid] = None

    def step(self) -> None:
        self.stats.steps += 1
        if not self.healing and self.rng.random() < 0.05:
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
        self.settle()

    def settle(self) -> None:
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
        return [("propose", 10.0), ("read", 4.0), *self.faults.action_weights()]

    def _action(self) -> None:
        names = [n for n, _ in self._weights]
        weights = [x for _, x in self._weights]
        name = self.rng.choices(names, weights)[0]
        if name == "propose":
            self._do_propose()
        elif name == "read":
            self._do_read()
        else:
            self.faults.act(name)

    def _do_propose(self) -> None:
        live = self.live()
        if not live:
            return
        # Most writes go to a node that believes it leads: the newest leader, or (a client
        # still attached to it) a deposed one on the minority side of a partition, whose
        # entries then sit uncommitted and divergent on its followers' disks.
        leaders = [s for s in live if s.node.role is Role.LEADER]
        r = self.rng.random()
        if leaders and r < 0.5:
            slot = self.leader()
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
                idx = slot.node.propose(self.payload(data))
            except RaftError as exc:
                idx = f"refused ({type(exc).__name__})"
            if self.trace:
                self.note(f"client propose {data.decode()} at {slot.id} -> {idx}")
        self._touched[slot.id] = None

    def _do_read(self) -> None:
        live = self.live()
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
            self.note(f"client read {ctx.decode()} at {slot.id}: {what}")

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> None:
        """Run the seed; raises Violation on the first broken invariant."""
        self._start()
        for _ in range(self.max_steps):
            self.step()
        Heal(self).run()
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
            self.note(
                f"linearizability: {len(history)} ops ({st.kv_unknown} unanswered) on "
                f"{len(kv.keys)} keys, {result.explored} states explored: "
                f"{'ok' if result.ok else 'NOT linearizable'}"
            )
        if not result.ok:
            raise Violation("linearizable", result.describe())
