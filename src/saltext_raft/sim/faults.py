"""Fault injection for one seeded run: which faults a seed uses, and injecting them.

Lives here: ``FAULT_KINDS``, ``FaultMix`` (which fault kinds a seed uses, and how hard) and
``Faults``: the fault actions the event loop draws (partitions, one-way cuts, pauses, crashes
and restarts, membership changes, leader transfers, forced campaigns) and the faults drawn
while a Ready is handled (a crash point between its stages, a save left in flight, a failing
disk write, a torn write). Every choice comes from the simulation's RNG, in the order the
simulation makes its draws, so a seed replays exactly.

Must not live here: the event loop, the client workload and the heal phase (``cluster``), how
a Ready's stages run (``driver``), the network's own faults (``network``: loss, duplication,
reordering, delays), invariants (``checkers``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import Role
from saltext_raft.sim.network import TICK
from saltext_raft.sim.network import NetFaults

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


class Faults:
    """The fault injector of one ``Simulation`` (which it drives through its public methods)."""

    def __init__(self, sim):
        self.sim = sim
        self._next_id = sim.n_founders + 1  # the id of the next node added as a learner

    def action_weights(self) -> list[tuple[str, float]]:
        """The fault actions this seed's mix allows, with their weights, in a fixed order."""
        on = set(self.sim.mix.kinds)
        w = []
        if "partition" in on:
            w += [("partition", 2.0), ("heal-net", 2.0)]
        if "oneway" in on:
            w += [("oneway", 2.0), ("heal-net", 1.0)]
        if "crash" in on:
            w += [("crash", 2.0), ("restart", 3.0)]
        if "membership" in on:
            promote = 0.5 if self.sim.config["auto_promote"] else 1.5
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

    def act(self, name: str) -> None:
        getattr(self, "_do_" + name.replace("-", "_"))()

    # --- faults drawn while a Ready is handled ---------------------------------------------------
    def pick_crash_point(self, slot, stages: int) -> int | None:
        """Crash before stage k (of ``stages``) of the Ready being handled, or not (None)."""
        p = self.sim.mix.crash_ready
        if p and not self.sim.healing and self.sim.rng.random() < p:
            return self.sim.rng.randrange(stages)
        return None

    def pick_save_delay(self, slot, rd) -> int:
        """How long this Ready's save stays in flight (0: done at once)."""
        p = self.sim.mix.save_inflight
        if p and self.sim.started and rd.must_sync and self.sim.rng.random() < p:
            self.sim.stats.saves_inflight += 1
            return self.sim.rng.randint(1, 3 * TICK)
        return 0

    def pick_disk_failure(self, slot, rd) -> bool:
        p = self.sim.mix.disk_fail
        if (
            p
            and self.sim.started
            and not self.sim.healing
            and rd.must_sync
            and self.sim.rng.random() < p
        ):
            self.sim.stats.disk_failures += 1
            return True
        return False

    def pick_torn_prefix(self, slot, rd) -> int | None:
        """How many of the save's entries a crash in its middle leaves on disk (None: none, and
        no snapshot either)."""
        if not self.sim.mix.torn or (not rd.entries and rd.snapshot is None):
            return None
        k = self.sim.rng.randint(0, len(rd.entries))
        self.sim.stats.torn_writes += 1
        if self.sim.trace:
            self.sim.note(f"{slot.id} torn write: {k} of {len(rd.entries)} entries reach the disk")
        return k

    # --- fault actions --------------------------------------------------------------------------
    def _member_ids(self) -> list[str]:
        return [s.id for s in self.sim.slots.values() if not s.removed]

    def _do_partition(self) -> None:
        ids = self._member_ids()
        if len(ids) < 2:
            return
        self.sim.rng.shuffle(ids)
        k = self.sim.rng.randint(1, len(ids) // 2)
        leader = self.sim.leader()
        if leader is not None and leader.id in ids and self.sim.rng.random() < 0.5:
            # Jepsen's "isolate the leader": the leader and k-1 followers on the minority side,
            # where the writes its clients still send stay uncommitted and divergent
            k = max(k, min(2, len(ids) // 2))
            ids.remove(leader.id)
            ids.insert(0, leader.id)
        a, b = sorted(ids[:k]), sorted(ids[k:])
        self.sim.network.partition(a, b)
        self.sim.stats.partitions += 1
        if self.sim.trace:
            self.sim.note(f"PARTITION {a} | {b}")

    def _do_oneway(self) -> None:
        ids = self._member_ids()
        if len(ids) < 2:
            return
        frm, to = self.sim.rng.sample(sorted(ids), 2)
        self.sim.network.cut_one_way(frm, to)
        self.sim.stats.partitions += 1
        if self.sim.trace:
            self.sim.note(f"CUT one way {frm} -> {to}")

    def _do_heal_net(self) -> None:
        if self.sim.network.blocked:
            self.sim.network.heal()
            if self.sim.trace:
                self.sim.note("HEAL network")

    def _do_pause(self) -> None:
        live = self.sim.live()
        if not live:
            return
        leader = self.sim.leader()
        slot = (
            leader
            if leader is not None and self.sim.rng.random() < 0.5
            else self.sim.rng.choice(live)
        )
        ticks = self.sim.rng.randint(3, self.sim.mix.pause_max)
        slot.paused_until = self.sim.now + ticks * TICK
        self.sim.stats.pauses += 1
        if self.sim.trace:
            self.sim.note(f"PAUSE {slot.id} for {ticks} ticks")

    def _do_crash(self) -> None:
        live = self.sim.live()
        if live:
            self.sim.crash(self.sim.rng.choice(live), "crash")

    def _do_restart(self) -> None:
        down = [s for s in self.sim.slots.values() if s.node is None and not s.removed]
        if down:
            self.sim.restart(self.sim.rng.choice(down))

    def _conf_change(self, op: ConfOp, nid: str, address: str = "") -> bool:
        leader = self.sim.leader()
        try:
            idx = leader.node.propose_conf_change(op, nid, address)
            ok = True
        except RaftError as exc:
            idx, ok = f"refused ({type(exc).__name__}: {exc})", False
        self.sim.touch(leader.id)
        if self.sim.trace:
            self.sim.note(f"membership {op.value} {nid} at leader {leader.id} -> {idx}")
        return ok

    def _do_add_learner(self) -> None:
        leader = self.sim.leader()
        if leader is None or len(self.sim.slots) >= self.sim.n_founders + 6:
            return
        nid = f"n{self._next_id}"
        if self._conf_change(ConfOp.ADD_LEARNER, nid, f"addr-{nid}"):
            self._next_id += 1
            self.sim.start_fresh(nid)

    def _do_promote(self) -> None:
        leader = self.sim.leader()
        if leader is not None:
            learners = sorted(leader.node.membership.learners)
            if learners:
                self._conf_change(ConfOp.PROMOTE, self.sim.rng.choice(learners))

    def _voters_removable(self, leader) -> list[str]:
        # keep at least three voters, so one crashed voter never stops the cluster for long
        voters = sorted(leader.node.membership.voters)
        return voters if len(voters) > 3 else []

    def _do_demote(self) -> None:
        leader = self.sim.leader()
        if leader is not None:
            voters = [v for v in self._voters_removable(leader) if v != leader.id]
            if voters:
                self._conf_change(ConfOp.DEMOTE, self.sim.rng.choice(voters))

    def _do_remove_follower(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        m = leader.node.membership
        cands = [v for v in self._voters_removable(leader) if v != leader.id]
        cands += sorted(m.learners)
        if cands:
            self._conf_change(ConfOp.REMOVE, self.sim.rng.choice(cands))

    def _do_remove_leader(self) -> None:
        leader = self.sim.leader()
        if leader is not None and leader.id in self._voters_removable(leader):
            self._conf_change(ConfOp.REMOVE, leader.id)

    def _do_transfer(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return
        others = [v for v in sorted(leader.node.membership.voters) if v != leader.id]
        if not others:
            return
        target = self.sim.rng.choice(others)
        try:
            leader.node.transfer_leader(target)
            what = "requested"
        except RaftError as exc:
            what = f"refused ({type(exc).__name__})"
        self.sim.stats.transfers += 1
        self.sim.touch(leader.id)
        if self.sim.trace:
            self.sim.note(f"transfer leadership {leader.id} -> {target}: {what}")

    def _do_campaign(self) -> None:
        live = [s for s in self.sim.live() if s.node.role is not Role.LEADER]
        if live:
            slot = self.sim.rng.choice(live)
            slot.node.campaign()
            self.sim.touch(slot.id)
            if self.sim.trace:
                self.sim.note(f"force campaign at {slot.id}")
