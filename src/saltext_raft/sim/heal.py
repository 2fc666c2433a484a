"""The heal phase of a seeded run: every fault removed, then progress demanded (liveness).

Lives here: ``Heal``, which ends a run's faults (network healed, pauses and clock skew over,
every crashed member restarted, no crash pending in a save in flight) and then requires, each
within ``SimOptions.heal_ticks``: a new write commits (probes are proposed every 5 ticks until
one does), every member catches up to the leader's commit index of that moment, and with
auto-promotion on every running learner is promoted. A bound that is not met is a ``liveness``
violation.

Must not live here: the faults themselves (``faults``), the event loop (``cluster``), safety
invariants (``checkers``).
"""

from __future__ import annotations

from saltext_raft.core.types import RaftError
from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.network import NetFaults


class Heal:
    """The heal phase of one ``Simulation`` (which it drives through its public methods)."""

    def __init__(self, sim):
        self.sim = sim

    def run(self) -> None:
        """Remove every fault and restart every node, then demand progress (liveness)."""
        self.sim.healing = True
        self.sim.network.heal()
        self.sim.network.faults = NetFaults()
        if self.sim.trace:
            self.sim.note("=== HEAL: no more faults; every node up; a write must commit ===")
        for s in self.sim.slots.values():
            s.paused_until = 0
            # clocks back in step: with pre-vote off, a node with a stale log whose clock runs
            # 1.5 times as fast as the others' times out first every time and its vote requests
            # (a higher term) reset their timers, so no election ever succeeds (the randomized
            # timeouts of §5.2 assume clocks that agree within their 2x range)
            s.rate = 1.0
            if s.inflight is not None:
                s.inflight.crash_before = None  # drawn before healing: no more crashes now
            if s.node is None and not s.removed:
                self.sim.restart(s)
        self.sim.settle()
        start = self.sim.stats.ticks
        next_probe = start
        probes = 0
        while not self.sim.heal_committed:
            ticks = self.sim.stats.ticks - start
            if ticks > self.sim.opts.heal_ticks:
                leader = self.sim.leader()
                raise Violation(
                    "liveness",
                    f"no write committed within {self.sim.opts.heal_ticks} ticks after healing "
                    f"(leader: {leader.id if leader else 'none'}; {probes} probes)",
                )
            if self.sim.stats.ticks >= next_probe:
                next_probe = self.sim.stats.ticks + 5
                probes += 1
                self._probe(probes)
            self.sim.step()
        self.await_catch_up()
        if self.sim.config["auto_promote"]:
            self._await_promotions()

    def await_catch_up(self) -> None:
        """Every member (voters and learners, as the leader's configuration lists them) must
        commit and apply up to the leader's commit index of the moment the heal write
        committed, within ``heal_ticks`` and with no more writes: a follower stuck behind (a
        snapshot transfer that never completes, a log that never converges) fails here."""
        leader = self.sim.leader()
        target = leader.node.commit_index if leader is not None else self.sim.checkers.max_commit
        start = self.sim.stats.ticks
        while True:
            leader = self.sim.leader()
            behind = ["no leader"]
            if leader is not None:
                behind = []
                for nid in sorted(leader.node.membership.members):
                    slot = self.sim.slots.get(nid)
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
            if self.sim.stats.ticks - start > self.sim.opts.heal_ticks:
                raise Violation(
                    "liveness",
                    f"members not caught up to commit {target} within {self.sim.opts.heal_ticks} "
                    f"ticks after the heal write: {', '.join(behind)}",
                )
            self.sim.step()

    def _await_promotions(self) -> None:
        """With auto-promotion on, every running learner (not deliberately demoted) must become a
        voter within ``heal_ticks`` of the heal write's commit, with no more writes: a learner
        that caught up while another change was pending must not wait for the next entry."""
        start = self.sim.stats.ticks
        while True:
            leader = self.sim.leader()
            waiting = []
            if leader is not None:
                m = leader.node.membership
                waiting = sorted(
                    nid
                    for nid in m.learners - m.demoted
                    if nid in self.sim.slots and self.sim.slots[nid].node is not None
                )
                if not waiting and leader.node.committed_membership == m:
                    return
            if self.sim.stats.ticks - start > self.sim.opts.heal_ticks:
                raise Violation(
                    "liveness",
                    f"learners {waiting} not promoted within {self.sim.opts.heal_ticks} ticks "
                    f"after the heal write (leader: {leader.id if leader else 'none'})",
                )
            self.sim.step()

    def _probe(self, k: int) -> None:
        leader = self.sim.leader()
        live = self.sim.live()
        if not live:
            return
        slot = leader or self.sim.rng.choice(live)
        data = b"h%d" % k
        try:
            idx = slot.node.propose(self.sim.payload(data))
        except RaftError as exc:
            idx = f"refused ({type(exc).__name__})"
        self.sim.touch(slot.id)
        if self.sim.trace:
            self.sim.note(f"liveness probe {data.decode()} at {slot.id} -> {idx}")
