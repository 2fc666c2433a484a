"""An in-memory cluster for core tests: nodes wired together with a hand-driven network.

Each node's "disk" is modelled (hard state, log, snapshot) so tests can crash and restart a
node and lose exactly what was not persisted. Nothing here is clever: tests drive delivery
explicitly so each step is visible.
"""

from __future__ import annotations

import random

from saltext_raft.core import Config
from saltext_raft.core import EntryKind
from saltext_raft.core import HardState
from saltext_raft.core import Message
from saltext_raft.core import RaftNode
from saltext_raft.core import Role

#: The timing the core's own tests are written in (a heartbeat every tick, elections after 10-19
#: ticks): pinned here so that the product's defaults (``core.config``, 12/2) can move freely.
PAPER_TIMING = {"election_ticks": 10, "heartbeat_ticks": 1}


class Disk:
    def __init__(self):
        self.hs = HardState()
        self.snapshot = None
        self.entries = []

    def persist(self, rd):
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.meta.index if self.snapshot else 0
            del self.entries[max(0, first - base - 1) :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hs = rd.hard_state


class Cluster:
    def __init__(self, ids=("a", "b", "c"), seed=0, learners=(), **cfg):
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.nodes: dict[str, RaftNode] = {}
        self.disks: dict[str, Disk] = {}
        self.applied: dict[str, list] = {}
        self.net: list[Message] = []
        self.sent: list[Message] = []
        self.dropped: set[tuple[str, str]] = set()  # (from, to) links that lose messages
        self.read_states: dict[str, list] = {}
        # index -> (term, data) of the first entry any node applied there: a node applying a
        # different entry at an index is a safety violation (State Machine Safety, §5.4.3)
        self.applied_at: dict[int, tuple[int, bytes]] = {}
        self.divergences: list[str] = []
        voters = {i: f"addr-{i}" for i in ids}
        for i in ids:
            self.disks[i] = Disk()
            self.nodes[i] = RaftNode.bootstrap(
                self.config(i), random.Random(self.rng.random()), voters
            )
            self.applied[i] = []
            self.read_states[i] = []
        for i in learners:
            self.add_fresh(i)
        self.process()

    def config(self, nid):
        return Config(nid, **{**PAPER_TIMING, **self.cfg})

    def add_fresh(self, nid):
        self.disks[nid] = Disk()
        self.nodes[nid] = RaftNode(self.config(nid), random.Random(self.rng.random()))
        self.applied[nid] = []
        self.read_states[nid] = []

    # --- driving ----------------------------------------------------------------------------
    def process(self, nid=None):
        """Run the Ready loop (persist, send, apply, advance) until no node has work."""
        ids = [nid] if nid else list(self.nodes)
        busy = True
        while busy:
            busy = False
            for i in ids:
                n = self.nodes.get(i)
                if n is None or not n.has_ready():
                    continue
                busy = True
                rd = n.ready()
                self.disks[i].persist(rd)
                for m in rd.messages:
                    self.sent.append(m)
                    if (m.frm, m.to) not in self.dropped:
                        self.net.append(m)
                if rd.snapshot is not None:
                    self.applied[i] = [("snapshot", rd.snapshot.meta.index)]
                for e in rd.committed_entries:
                    first = self.applied_at.setdefault(e.index, (e.term, e.data))
                    if first != (e.term, e.data):
                        self.divergences.append(
                            f"{i} applied {e.term}/{e.data!r} at {e.index}; first was {first}"
                        )
                    if e.kind == EntryKind.NORMAL and e.data:
                        self.applied[i].append(e.data)
                self.read_states[i].extend(rd.read_states)
                n.advance(rd)

    def deliver(self, filt=None, limit=None):
        """Deliver queued messages (those matching ``filt``); returns how many."""
        count = 0
        while self.net and (limit is None or count < limit):
            keep, todo = [], []
            for m in self.net:
                (todo if filt is None or filt(m) else keep).append(m)
            if not todo:
                break
            self.net = keep
            for m in todo:
                n = self.nodes.get(m.to)
                if n is not None:
                    n.step(m)
                    count += 1
            self.process()
        return count

    def stabilize(self, rounds=50):
        for _ in range(rounds):
            self.process()
            if not self.net:
                return
            self.deliver()
        self.process()

    def tick(self, nid=None, n=1):
        for _ in range(n):
            for i in [nid] if nid else list(self.nodes):
                if i in self.nodes:
                    self.nodes[i].tick()
        self.process()

    def elect(self, nid):
        self.nodes[nid].campaign()
        self.process()
        self.stabilize()
        assert self.nodes[nid].role is Role.LEADER, self.nodes[nid].status()
        return self.nodes[nid]

    def crash(self, nid):
        """Lose everything not persisted."""
        del self.nodes[nid]
        self.net = [m for m in self.net if m.to != nid]

    def restart(self, nid):
        d = self.disks[nid]
        self.nodes[nid] = RaftNode(
            self.config(nid),
            random.Random(self.rng.random()),
            hard_state=d.hs,
            snapshot=d.snapshot,
            entries=list(d.entries),
        )
        self.applied[nid] = [("snapshot", d.snapshot.meta.index)] if d.snapshot else []
        self.process(nid)

    def leaders(self):
        return [n for n in self.nodes.values() if n.role is Role.LEADER]
