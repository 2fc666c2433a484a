"""Log replication, both sides, and InstallSnapshot: how entries get from a leader to a follower.

Lives here: ``Replication``, the part of the Raft node that appends and replicates entries
(§5.3): a follower's handling of AppendEntries (consistency check, truncation on conflict, the
commit rule of Salt core defect 3) and of snapshot chunks; a leader's appends, heartbeats and
their acknowledgements, per-follower flow control (``progress.py``), commitment (§5.4.2) and
chunked InstallSnapshot (§7).

It is a mixin of ``RaftNode`` (``node.py``), not an object of its own: replication reads and
writes the node's term, role, log, progress and outbound messages under the same single-threaded
step, and an object holding all of those would be the node again. What it uses of the node: the
attributes ``id``, ``cfg``, ``term``, ``role``, ``log``, ``progress``, ``snapshot``,
``membership``, ``lead_transferee``, ``_incoming_snapshot``, ``_pending_snapshot``,
``_confs`` and the methods ``_send``, ``_note_appended``, ``_rollback_conf``,
``_set_membership``, ``_departing``, ``_on_commit_advanced``, ``_ack_read_round``,
``_maybe_auto_promote`` and ``_recheck_promotion``.

Must not live here: elections and roles, membership changes, reads, the Ready batch
(``node.py``); the per-follower state machine itself (``progress.py``); the log (``log.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from saltext_raft.core import quorum
from saltext_raft.core.progress import Progress
from saltext_raft.core.progress import ProgressState
from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import Role
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotChunk

SNAPSHOT_WINDOW = 4  # InstallSnapshot chunks in flight per follower


class Replication:
    """Replication and InstallSnapshot for ``RaftNode`` (see the module docstring)."""

    # --- follower side of replication -----------------------------------------------------------
    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message(MsgType.APPEND_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        if log.match_term(m.index, m.log_term):
            entries = m.entries
            last_new = m.index + len(entries)
            if entries:
                ci = log.find_conflict(entries)
                if ci:
                    k = ci - entries[0].index
                    new = entries[k:]
                    if ci <= log.last_index:
                        log.truncate_and_append(new)
                        self._rollback_conf(ci)
                    else:
                        log.append(new)
                    self._note_appended(new)
            # commit no further than what this append proves we share with the leader
            log.commit_to(min(m.commit, last_new))
            self._send(Message(MsgType.APPEND_RESP, m.frm, self.id, self.term, index=last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index), m.log_term)
        self._send(
            Message(
                MsgType.APPEND_RESP,
                m.frm,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_snapshot_chunk(self, m: Message) -> None:
        c = m.snapshot
        if c is None:
            return
        meta = c.meta
        ack = Message(MsgType.SNAPSHOT_RESP, m.frm, self.id, self.term, log_term=meta.index)
        if meta.index <= self.log.committed or self.log.match_term(meta.index, meta.term):
            # we already have everything the snapshot covers
            self.log.commit_to(meta.index)
            self._incoming_snapshot = None
            ack.index = c.total
            ack.commit = meta.index
            self._send(ack)
            return
        inc = self._incoming_snapshot
        if inc is None or inc[0] != meta or inc[1] != c.total:
            if c.offset != 0:
                ack.reject = True  # we hold no transfer for this snapshot: start again
                self._send(ack)
                return
            inc = self._incoming_snapshot = (meta, c.total, bytearray())
        buf = inc[2]
        if c.offset == len(buf):
            buf += c.data
        if len(buf) > c.total:
            self._incoming_snapshot = None
            ack.reject = True
            self._send(ack)
            return
        if len(buf) == c.total and (c.done or c.offset + len(c.data) >= c.total):
            self._incoming_snapshot = None
            self._restore(Snapshot(meta, bytes(buf)))
            ack.index = c.total
            ack.commit = meta.index
        else:
            ack.index = len(buf)
        self._send(ack)

    def _restore(self, snap: Snapshot) -> None:
        meta = snap.meta
        self.log.reset_to(meta.index, meta.term)
        self._pending_snapshot = snap
        self.snapshot = snap
        self._confs.reset(meta.index, meta.membership)
        self._set_membership(meta.membership)

    # --- leader side of replication -----------------------------------------------------------
    def _append_local(self, datas: Sequence[bytes], kind: int = EntryKind.NORMAL) -> int:
        term = self.term
        idx = self.log.last_index
        ents = []
        for d in datas:
            idx += 1
            ents.append(Entry(term, idx, kind, d))
        self.log.append(ents)
        if kind == EntryKind.CONF:
            self._note_appended(ents)
        return idx

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            if prev < log.offset:
                self._start_snapshot(to, pr)
                return True
            # next is beyond our log (should not happen); probe from the end
            pr.next = log.last_index + 1
            prev = log.last_index
            prev_term = log.last_term
        ents = (
            log.slice(pr.next, log.last_index + 1, self.cfg.max_msg_bytes)
            if pr.next <= log.last_index
            else []
        )
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MsgType.APPEND,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev,
                entries=ents,
                commit=log.committed,
            )
        )
        pr.sent_commit = log.committed
        if ents:
            pr.sent_entries(ents[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _bcast_append(self) -> None:
        for nid in self.progress:
            if nid != self.id:
                self._send_append(nid, send_if_empty=False)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for nid, pr in self.progress.items():
            if nid == self.id:
                continue
            self._send(
                Message(
                    MsgType.HEARTBEAT,
                    nid,
                    self.id,
                    self.term,
                    commit=min(pr.match, committed),
                    context=ctx,
                )
            )

    def _handle_append_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        # An ack equal to match while probing also proves where the logs match (e.g. right
        # after a snapshot install): switch to streaming instead of waiting for a heartbeat.
        if pr.maybe_update(m.index) or (pr.state is ProgressState.PROBE and m.index == pr.match):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.snap_index:
                pr.become_probe()
                pr.become_replicate()
            if self._maybe_commit():
                self._on_commit_advanced()
                if self.role is not Role.LEADER:
                    return
            elif was_paused:
                self._send_append(m.frm)
            # what remains is streamed by the next ready(), window permitting
            if m.frm == self.lead_transferee and pr.match == self.log.last_index:
                self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id, self.term))
            self._maybe_auto_promote(m.frm, pr)
        elif was_paused and not pr.is_paused():
            self._send_append(m.frm)

    def _handle_heartbeat_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.frm not in self.membership.members and not self._departing(m.frm):
            # a removed node that has its removal entry and knows it committed: done with it
            del self.progress[m.frm]
            return
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.is_paused():
            # The window is full and its acknowledgements may all have been lost: free one
            # slot per heartbeat so one append goes out and its answer resynchronizes us.
            pr.inflight.popleft()
        if pr.state is ProgressState.SNAPSHOT:
            # resend from the last acknowledged byte if the transfer made no progress
            if pr.snap_acked == pr.snap_acked_at_heartbeat:
                pr.snap_offset = pr.snap_acked
                self._send_snapshot_chunks(m.frm, pr)
            pr.snap_acked_at_heartbeat = pr.snap_acked
        elif pr.match < self.log.last_index:
            self._send_append(m.frm)
        if m.context and m.frm in self.membership.voters:
            self._ack_read_round(m.frm, m.context)
        # Whatever held a caught-up learner back (a pending change, a leadership transfer) may
        # be over without any event of its own: a heartbeat round checks again.
        self._recheck_promotion(m.frm, pr)

    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        match = {nid: pr.match for nid, pr in self.progress.items()}
        match[self.id] = self.log.stable if self.id in voters else 0
        mci = quorum.committed_index(voters, match)
        # §5.4.2: only entries of the current term are committed by counting replicas
        if mci > self.log.committed and self.log.term_at(mci) == self.term:
            self.log.commit_to(mci)
            return True
        return False

    # --- InstallSnapshot ----------------------------------------------------------------------
    def _start_snapshot(self, to: str, pr: Progress) -> None:
        if self.snapshot is None:
            raise RaftError("log is compacted but no snapshot is available")
        pr.become_snapshot(self.snapshot.meta.index)
        self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: str, pr: Progress) -> None:
        snap = self.snapshot
        if snap is None or snap.meta.index != pr.snap_index:
            pr.become_probe()
            return
        data = snap.data
        total = len(data)
        size = self.cfg.snapshot_chunk_bytes
        window_end = pr.snap_acked + SNAPSHOT_WINDOW * size
        # an empty snapshot still takes one (empty, final) chunk
        first = total == 0
        while first or (pr.snap_offset < total and pr.snap_offset < window_end):
            first = False
            off = pr.snap_offset
            chunk = data[off : off + size]
            chunk_msg = SnapshotChunk(snap.meta, off, chunk, off + len(chunk) >= total, total)
            self._send(Message(MsgType.SNAPSHOT, to, self.id, self.term, snapshot=chunk_msg))
            pr.snap_offset = off + len(chunk)

    def _handle_snapshot_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if pr.state is not ProgressState.SNAPSHOT or m.log_term != pr.snap_index:
            return  # stale
        if m.reject:
            pr.snap_offset = pr.snap_acked = 0
            self._send_snapshot_chunks(m.frm, pr)
            return
        if m.commit == pr.snap_index:
            # The follower says it holds the log up to the snapshot's index. Only this says so:
            # a byte count cannot, because the leader may have taken a newer snapshot (of
            # another size) since this transfer started; 579b614 compared the acknowledged
            # bytes with the size of the *current* snapshot, counted a partial transfer as
            # installed and had the follower commit its own divergent entries
            # (tests/unit/core/test_snapshot_transfer.py).
            pr.match = max(pr.match, pr.snap_index)
            pr.become_probe()
            self._send_append(m.frm)
            return
        if m.index > pr.snap_acked:
            pr.snap_acked = m.index
            self._send_snapshot_chunks(m.frm, pr)
