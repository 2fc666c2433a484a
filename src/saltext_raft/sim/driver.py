"""The simulated driver: carries out one node's Ready, in the order the core's contract sets.

Lives here: ``Driver`` (persist -> send -> restore/apply -> advance, with optional crash points
between the stages) and the stage names. The real driver in ``saltext_raft.runtime`` does the
same over Salt's cache and sockets; this one writes to the sim's ``Disk`` and ``Network``.

A variant that breaks the contract is one flag away: ``send_before_persist=True`` sends the
Ready's messages before anything reaches disk, which the tests use to show that the checkers
notice (a vote or an acknowledgement that a crash then takes back).

``runtime_refinements=True`` drives Readys the way ``saltext_raft.runtime`` does, honouring
what the core's Ready allows (docs/architecture.md, "The runtime"): the messages it lets leave
before the save (``Ready.early_types``: a leader's appends and heartbeats when term and vote
are already on disk) go first; a ``commit_only`` Ready is sent and applied at once and its hard
state saved afterwards (a crash may lose that save). Which messages may leave early is decided
in the core only (``RaftNode._mark_early_sends``); the simulator never re-derives it.

Group commit: with the ``group-commit`` fault kind the save of a Ready (its PERSIST stage: the
snapshot, the entries and the hard state) stays *in flight* for a while, as the runtime's save
in its storage thread does, and the node keeps being stepped and ticked meanwhile; the rest of
the Ready's stages run when the save completes (``resume``). A crash while a save is in flight,
or a crash point inside PERSIST, may leave a torn write (a prefix of the entries); a disk write
that fails (``disk`` fault kind) stops the node as the runtime's ``_fatal`` does.

Every message is checked when it leaves (``Checkers.on_send``): a granted vote, an append
acknowledgement and a complete snapshot acknowledgement must be backed by what is on disk.
"""

from __future__ import annotations

from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import MsgType
from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.model import DiskFailure

PERSIST = "persist"  # snapshot + entries
PERSIST_HS = "persist-hs"  # hard state (a crash between the two persists is allowed)
SEND = "send"
SEND_EARLY = "send-early"  # what the Ready lets leave before the save (a leader's appends)
APPLY = "apply"
ADVANCE = "advance"

CONTRACT = (PERSIST, PERSIST_HS, SEND, APPLY, ADVANCE)
SEND_BEFORE_PERSIST = (SEND, PERSIST, PERSIST_HS, APPLY, ADVANCE)
EARLY_SEND = (SEND_EARLY, PERSIST, PERSIST_HS, SEND, APPLY, ADVANCE)
COMMIT_ONLY_BACKGROUND = (SEND, APPLY, ADVANCE, PERSIST_HS)


_NO_CLAIM = object()


def _recipient(m) -> str:
    return m.to


class Crashed(Exception):
    """The node crashed in the middle of handling a Ready."""


class InFlight:
    """A Ready whose save has not completed: the stages still to run, from ``k`` on."""

    __slots__ = ("rd", "stages", "k", "messages", "claims", "crash_before", "token")

    def __init__(self, rd, stages, k, messages, claims, crash_before, token):
        self.rd = rd
        self.stages = stages
        self.k = k
        self.messages = messages
        self.claims = claims
        self.crash_before = crash_before
        self.token = token


def _ack_claims(node, messages) -> dict:
    """For each append acknowledgement: the term of the entry it vouches for, as the node's log
    holds it when the Ready is taken (what the Ready's save writes, or what is already saved)."""
    claims = {}
    for m in messages:
        if m.type is MsgType.APPEND_RESP and not m.reject and m.index:
            claims[id(m)] = node.term_at(m.index)
    return claims


def _known_commit(slot) -> int:
    """The highest index ``slot``'s node knows is committed: its persisted commit index, or
    the live node's own if that is higher."""
    live = slot.node.commit_index if slot.node is not None else 0
    return max(slot.disk.hs.commit, live)


class Driver:
    """Handles Readys for the simulator ``sim`` (which owns disks, network and checkers)."""

    def __init__(self, sim, send_before_persist: bool = False, runtime_refinements: bool = False):
        self.sim = sim
        self.stages = SEND_BEFORE_PERSIST if send_before_persist else CONTRACT
        self.runtime_refinements = runtime_refinements and not send_before_persist
        self._tokens = 0

    def stages_for(self, rd) -> tuple[str, ...]:
        """The stages for ``rd``: the contract's order, or (runtime refinements) the order the
        core's Ready allows — early messages before the save, a commit-only Ready's hard state
        after apply. The decision is the Ready's (``RaftNode.ready``), never re-derived here."""
        if not self.runtime_refinements:
            return self.stages
        if rd.commit_only:
            return COMMIT_ONLY_BACKGROUND
        if rd.early_types:
            return EARLY_SEND
        return CONTRACT

    def drain(self, slot) -> None:
        """Handle Readys until the node has none, crashes, or waits for a save in flight."""
        sim = self.sim
        while slot.node is not None and slot.inflight is None and slot.node.has_ready():
            try:
                self.handle(slot, may_crash=True)
            except Crashed:
                return
        node = slot.node
        if node is not None and slot.inflight is None:
            sim.check_memory_matches_disk(slot)

    def handle(self, slot, may_crash: bool = False) -> None:
        sim = self.sim
        node = slot.node
        rd = node.ready()
        sim.trace_ready(slot, rd)
        stages = self.stages_for(rd)
        # sorted by recipient (stable): the core may build messages by iterating a frozenset
        # of voters, whose order depends on PYTHONHASHSEED
        messages = sorted(rd.messages, key=_recipient)
        claims = _ack_claims(node, messages)
        # The crash point is drawn among this Ready's own stages (an early-send Ready has six,
        # a commit-only one four), so every stage of every kind of Ready can be crashed before.
        crash_before = sim.faults.pick_crash_point(slot, len(stages)) if may_crash else None
        self._run(slot, InFlight(rd, stages, 0, messages, claims, crash_before, 0))

    def resume(self, slot, token: int) -> bool:
        """The save in flight with ``token`` completed: run the rest of its Ready. False if that
        save is no longer in flight (the node crashed meanwhile)."""
        st = slot.inflight
        if st is None or st.token != token or slot.node is None:
            return False
        slot.inflight = None
        try:
            self._run(slot, st, resumed=True)
        except Crashed:
            pass
        return True

    def crash_inflight(self, slot) -> None:
        """The node crashes while a save is in flight: the write may be torn."""
        st = slot.inflight
        slot.inflight = None
        if st is not None and st.k < len(st.stages) and st.stages[st.k] == PERSIST:
            self._torn_write(slot, st.rd)

    def _run(self, slot, st: InFlight, resumed: bool = False) -> None:
        sim = self.sim
        node = slot.node
        rd, stages, messages = st.rd, st.stages, st.messages
        k = st.k
        while k < len(stages):
            stage = stages[k]
            if st.crash_before == k and not resumed:
                if stage == PERSIST:
                    self._torn_write(slot, rd)
                sim.crash(slot, f"before {stage}")
                raise Crashed
            if stage == PERSIST:
                if not resumed:
                    delay = sim.faults.pick_save_delay(slot, rd)
                    if delay:
                        self._tokens += 1
                        st.k, st.messages, st.token = k, messages, self._tokens
                        slot.inflight = st
                        sim.schedule_save(slot, delay, st.token)
                        return
                resumed = False
                try:
                    self.persist(slot, rd)
                except DiskFailure as exc:
                    sim.crash(slot, f"disk write failed: {exc}; node stopped")
                    raise Crashed from None
            elif stage == PERSIST_HS:
                if rd.hard_state is not None:
                    sim.checkers.on_persist_hard_state(slot.id, slot.disk.hs, rd.hard_state)
                    slot.disk.hs = rd.hard_state
            elif stage == SEND_EARLY:
                early, messages = rd.split(messages)
                for m in early:
                    self._send(slot, m, st.claims)
            elif stage == SEND:
                for m in messages:
                    self._send(slot, m, st.claims)
            elif stage == APPLY:
                self.apply(slot, rd)
            else:
                node.advance(rd)
                sim.after_advance(slot)
            k += 1

    def _send(self, slot, m, claims) -> None:
        sim = self.sim
        sim.checkers.on_send(slot.id, m, slot.disk, claims.get(id(m), _NO_CLAIM))
        sim.send(m)

    def _torn_write(self, slot, rd) -> None:
        """A crash in the middle of the save: the snapshot (written first) may be there, and a
        prefix of the entries; never the hard state (written last)."""
        k = self.sim.faults.pick_torn_prefix(slot, rd)
        if k is None:
            return
        disk = slot.disk
        if rd.snapshot is not None:
            disk.install_snapshot(rd.snapshot)
            self.sim.checkers.on_disk_truncated(slot.id, disk.truncated, _known_commit(slot))
        self._write_entries(slot, rd.entries[:k])

    def persist(self, slot, rd) -> None:
        disk = slot.disk
        fail = self.sim.faults.pick_disk_failure(slot, rd)
        if fail:
            self._torn_write(slot, rd)
            raise DiskFailure(f"{slot.id}: write of {len(rd.entries)} entries raised")
        if rd.snapshot is not None:
            disk.install_snapshot(rd.snapshot)
            self.sim.checkers.on_disk_truncated(slot.id, disk.truncated, _known_commit(slot))
        self._write_entries(slot, rd.entries)

    def _write_entries(self, slot, entries) -> None:
        if not entries:
            return
        disk = slot.disk
        off = disk.offset
        ents = [e for e in entries if e.index > off]
        if ents:
            prev_term = disk.append(ents)
            checkers = self.sim.checkers
            checkers.on_disk_truncated(slot.id, disk.truncated, _known_commit(slot))
            checkers.on_persist_entries(slot.id, ents, prev_term)

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
