"""The simulated driver: carries out one node's Ready, in the order the core's contract sets.

Lives here: ``Driver`` (persist -> send -> restore/apply -> advance, with optional crash points
between the stages) and the stage names. The real driver in ``saltext_raft.runtime`` does the
same over Salt's cache and sockets; this one writes to the sim's ``Disk`` and ``Network``.

A variant that breaks the contract is one flag away: ``send_before_persist=True`` sends the
Ready's messages before anything reaches disk, which the tests use to show that the checkers
notice (a vote or an acknowledgement that a crash then takes back).

``runtime_refinements=True`` drives Readys the way ``saltext_raft.runtime`` does, so the
simulator checks the two refinements of the contract it makes (docs/architecture.md, "The
runtime"): a leader whose Ready keeps term and vote sends its appends and heartbeats before
its own save; a Ready whose only durable change is the commit index is sent and applied at
once and its hard state saved afterwards (a crash may lose that save).
"""

from __future__ import annotations

from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import Role
from saltext_raft.sim.checkers import Violation

PERSIST = "persist"  # snapshot + entries
PERSIST_HS = "persist-hs"  # hard state (a crash between the two persists is allowed)
SEND = "send"
SEND_EARLY = "send-early"  # a leader's appends and heartbeats, before its own save
APPLY = "apply"
ADVANCE = "advance"

CONTRACT = (PERSIST, PERSIST_HS, SEND, APPLY, ADVANCE)
SEND_BEFORE_PERSIST = (SEND, PERSIST, PERSIST_HS, APPLY, ADVANCE)
LEADER_EARLY_SEND = (SEND_EARLY, PERSIST, PERSIST_HS, SEND, APPLY, ADVANCE)
COMMIT_ONLY_BACKGROUND = (SEND, APPLY, ADVANCE, PERSIST_HS)
_EARLY_TYPES = frozenset({MsgType.APPEND, MsgType.HEARTBEAT})


def _recipient(m) -> str:
    return m.to


class Crashed(Exception):
    """The node crashed in the middle of handling a Ready."""


class Driver:
    """Handles Readys for the simulator ``sim`` (which owns disks, network and checkers)."""

    def __init__(self, sim, send_before_persist: bool = False, runtime_refinements: bool = False):
        self.sim = sim
        self.stages = SEND_BEFORE_PERSIST if send_before_persist else CONTRACT
        self.runtime_refinements = runtime_refinements and not send_before_persist

    def stages_for(self, slot, rd) -> tuple[str, ...]:
        if not self.runtime_refinements:
            return self.stages
        hs, saved = rd.hard_state, slot.disk.hs
        same_vote = hs is None or (hs.term, hs.vote) == (saved.term, saved.vote)
        if not same_vote:
            return CONTRACT
        if not rd.entries and rd.snapshot is None:
            return COMMIT_ONLY_BACKGROUND
        if slot.node.role is Role.LEADER:
            return LEADER_EARLY_SEND
        return CONTRACT

    def drain(self, slot) -> None:
        """Handle Readys until the node has none (or crashes)."""
        sim = self.sim
        while slot.node is not None and slot.node.has_ready():
            crash_before = sim.pick_crash_point(slot)
            try:
                self.handle(slot, crash_before)
            except Crashed:
                return
        node = slot.node
        if node is not None:
            sim.check_memory_matches_disk(slot)

    def handle(self, slot, crash_before: int | None = None) -> None:
        sim = self.sim
        node = slot.node
        rd = node.ready()
        sim.trace_ready(slot, rd)
        stages = self.stages_for(slot, rd)
        messages = sorted(rd.messages, key=_recipient)
        for k, stage in enumerate(stages):
            if crash_before == k:
                sim.crash(slot, f"before {stage}")
                raise Crashed
            if stage == PERSIST:
                self.persist(slot, rd)
            elif stage == PERSIST_HS:
                if rd.hard_state is not None:
                    sim.checkers.on_persist_hard_state(slot.id, slot.disk.hs, rd.hard_state)
                    slot.disk.hs = rd.hard_state
            elif stage == SEND_EARLY:
                early = [m for m in messages if m.type in _EARLY_TYPES]
                messages = [m for m in messages if m.type not in _EARLY_TYPES]
                for m in early:
                    sim.send(m)
            elif stage == SEND:
                # sorted by recipient (stable): the core may build messages by iterating a
                # frozenset of voters, whose order depends on PYTHONHASHSEED
                for m in messages:
                    sim.send(m)
            elif stage == APPLY:
                self.apply(slot, rd)
            else:
                node.advance(rd)
                sim.after_advance(slot)

    def persist(self, slot, rd) -> None:
        disk = slot.disk
        if rd.snapshot is not None:
            disk.install_snapshot(rd.snapshot)
        if rd.entries:
            off = disk.offset
            ents = [e for e in rd.entries if e.index > off]
            if ents:
                prev_term = disk.append(ents)
                self.sim.checkers.on_persist_entries(slot.id, ents, prev_term)

    def apply(self, slot, rd) -> None:
        sim = self.sim
        checkers = sim.checkers
        if rd.snapshot is not None:
            sm = sim.sm_class.decode(rd.snapshot.data)
            meta = rd.snapshot.meta
            if sm.applied != meta.index:
                raise Violation(
                    "state_machine_safety",
                    f"{slot.id} got a snapshot for index {meta.index} holding state at "
                    f"{sm.applied}",
                )
            checkers.on_restore(slot.id, meta.index, sm.chain)
            slot.sm = sm
        sm = slot.sm
        kv = sim.kv
        for e in rd.committed_entries:
            checkers.on_apply_order(slot.id, sm.applied, e)
            sm.apply(e)
            if checkers.on_apply(slot.id, e, sm.chain):
                sim.on_first_apply(e)
            if kv is not None and e.kind == EntryKind.NORMAL and e.data:
                kv.on_applied(slot, e)
        for rs in rd.read_states:
            checkers.on_read_state(slot.id, rs)
            slot.pending_reads.append(rs)
        if slot.pending_reads:
            sim.serve_reads(slot)
