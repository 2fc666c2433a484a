"""The mutation suite: planted bugs the simulator must catch within a seed budget.

Lives here: ``Mutant`` (one planted bug: which methods it replaces and with what, and the
simulator options it runs under), ``MUTANTS`` (the standing list), ``planted`` (applies a
mutant in this process by replacing methods on ``RaftNode`` or the simulator's ``Driver``, and
restores them afterwards). Running seeds until a mutant is caught is ``hunt``'s. The command
line is
``python -m saltext_raft sim --mutants`` (``__main__``); ``nox -s mutants`` runs the whole
budget, CI a short form.

Must not live here: invariants (``checkers``), fault injection (``cluster``, ``driver``). A
mutant only plants a bug; if the simulator stops catching one, a checker stopped looking or
the fault model stopped producing the situation that exposes it.

The replacements reach into core internals on purpose (they re-create what a plausible wrong
edit of ``core/`` would look like); when the core's internals change, update them with it.
The early-send mutants change the core's decision of which messages may leave before the save
(``RaftNode._mark_early_sends``); they run with ``runtime_refinements``, the simulator's mode
that honours that decision as ``runtime/driver.py`` does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core import quorum
from saltext_raft.core.node import RaftNode
from saltext_raft.core.progress import ProgressState
from saltext_raft.core.types import NONE
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import Role

#: Seeds each mutant may take before it counts as not caught.
BUDGET = 500


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what is wrong, in one sentence
    #: (owner class, attribute, factory): factory(original) returns the replacement
    patches: tuple
    options: dict = field(default_factory=dict)  # SimOptions fields for this mutant


@contextlib.contextmanager
def planted(mutant: Mutant):
    """Replace the mutant's methods for the duration of the block, then restore them."""
    saved = []
    try:
        for owner, attr, factory in mutant.patches:
            had = attr in owner.__dict__
            orig = getattr(owner, attr)
            saved.append((owner, attr, had, owner.__dict__.get(attr)))
            setattr(owner, attr, factory(orig))
        yield
    finally:
        for owner, attr, had, value in reversed(saved):
            if had:
                setattr(owner, attr, value)
            else:
                delattr(owner, attr)


# --- the planted bugs -----------------------------------------------------------------------------
def _learner_acks_count(_orig):
    def _maybe_commit(self) -> bool:
        members = self.membership.voters | self.membership.learners
        match = {nid: pr.match for nid, pr in self.progress.items()}
        match[self.id] = self.log.stable if self.id in members else 0
        mci = quorum.committed_index(members, match)
        if mci > self.log.committed and self.log.term_at(mci) == self.term:
            self.log.commit_to(mci)
            return True
        return False

    return _maybe_commit


def _commit_earlier_term(_orig):
    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        match = {nid: pr.match for nid, pr in self.progress.items()}
        match[self.id] = self.log.stable if self.id in voters else 0
        mci = quorum.committed_index(voters, match)
        if mci > self.log.committed:  # the §5.4.2 term check is missing
            self.log.commit_to(mci)
            return True
        return False

    return _maybe_commit


def _leader_counts_unsaved(_orig):
    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        match = {nid: pr.match for nid, pr in self.progress.items()}
        # its own last index, saved or not (the core counts log.stable)
        match[self.id] = self.log.last_index if self.id in voters else 0
        mci = quorum.committed_index(voters, match)
        if mci > self.log.committed and self.log.term_at(mci) == self.term:
            self.log.commit_to(mci)
            return True
        return False

    return _maybe_commit


def _vote_without_log_check(_orig):
    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        resp_type = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        if can_vote:  # the candidate's log is not compared with ours (§5.4.1)
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    return _handle_vote_request


def _vote_not_persisted(_orig):
    def _hard_state(self) -> HardState:
        return HardState(self.term, NONE, self.log.committed)  # the vote is left out

    return _hard_state


def _no_truncation(_orig):
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
                    # keeps its own conflicting entries, appends only what lies beyond them
                    new = [e for e in entries[ci - entries[0].index :] if e.index > log.last_index]
                    if new:
                        log.append(new)
                        self._note_appended(new)
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

    return _handle_append


def _follower_commits_own_last(orig):
    def _handle_append(self, m: Message) -> None:
        orig(self, m)
        if self.log.match_term(m.index, m.log_term):
            # min(leader commit, own last index) instead of the append's last new entry
            self.log.commit_to(min(m.commit, self.log.last_index))

    return _handle_append


def _stale_append_accepted(orig):
    def step(self, m: Message) -> None:
        if m.type is MsgType.APPEND and 0 < m.term < self.term and m.to == self.id:
            if self.role is Role.FOLLOWER:
                self.election_elapsed = 0
                self._handle_append(m)  # the term check is skipped
                return
        orig(self, m)

    return step


def _read_without_round(_orig):
    def _start_read_round(self) -> None:
        requests = self._reads.take_batch()
        self._release_reads(self.log.committed, requests)  # no heartbeat quorum first

    return _start_read_round


def _read_before_own_commit(_orig):
    def _queue_read(self, requester: str, context: bytes) -> None:
        self._reads.add((requester, context), True)  # even before an own-term commit

    return _queue_read


def _two_pending_changes(orig):
    def propose_conf_change(self, op, node_id: str, address: str = "") -> int:
        saved = self.pending_conf_index
        self.pending_conf_index = 0  # the "one change at a time" check sees nothing pending
        try:
            return orig(self, op, node_id, address)
        finally:
            if self.pending_conf_index == 0:
                self.pending_conf_index = saved

    return propose_conf_change


def _snapshot_ack_inflated(_orig):
    # The core before issue 17: a byte count compared with the size of the leader's *current*
    # snapshot, which may be a newer, smaller one than the transfer in flight.
    def _handle_snapshot_resp(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if pr.state is not ProgressState.SNAPSHOT or m.log_term != pr.snap_index:
            return
        if m.reject:
            pr.snap_offset = pr.snap_acked = 0
            self._send_snapshot_chunks(m.frm, pr)
            return
        total = len(self.snapshot.data) if self.snapshot is not None else 0
        if m.index >= total:
            pr.match = max(pr.match, pr.snap_index)
            pr.become_probe()
            self._send_append(m.frm)
            return
        if m.index > pr.snap_acked:
            pr.snap_acked = m.index
            self._send_snapshot_chunks(m.frm, pr)

    return _handle_snapshot_resp


def _no_check_quorum_step_down(_orig):
    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                # the quorum of recently active voters is no longer checked
                for nid, pr in self.progress.items():
                    pr.recent_active = nid == self.id
            self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(b"")

    return _tick_heartbeat


def _promote_only_on_ack(_orig):
    def _recheck_promotion(self, nid, pr) -> None:
        pass

    return _recheck_promotion


def _early_also(types):
    def factory(orig):
        def _mark_early_sends(self, rd) -> None:
            orig(self, rd)
            if not rd.commit_only:  # the Ready's save has something to protect
                rd.early_types = rd.early_types | types

        return _mark_early_sends

    return factory


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "learner-acks-count",
        "learners' acknowledgements count toward the commit quorum (Salt core defect 1)",
        ((RaftNode, "_maybe_commit", _learner_acks_count),),
    ),
    Mutant(
        "commit-earlier-term-by-counting",
        "a leader commits an earlier term's entry because a majority stores it (Figure 8)",
        ((RaftNode, "_maybe_commit", _commit_earlier_term),),
    ),
    Mutant(
        "vote-without-log-check",
        "a vote is granted without comparing the candidate's log (§5.4.1)",
        ((RaftNode, "_handle_vote_request", _vote_without_log_check),),
    ),
    Mutant(
        "vote-not-persisted",
        "the hard state is saved without the vote",
        ((RaftNode, "_hard_state", _vote_not_persisted),),
    ),
    Mutant(
        "vote-reply-before-persist",
        "the core's Ready lets vote replies leave before its hard state is saved",
        ((RaftNode, "_mark_early_sends", _early_also(frozenset({MsgType.VOTE_RESP}))),),
        # the drivers honour the Ready's split: the simulator does in the runtime's order
        {"runtime_refinements": True},
    ),
    Mutant(
        "ack-before-persist",
        "the core's Ready lets append acknowledgements leave before its entries are saved",
        ((RaftNode, "_mark_early_sends", _early_also(frozenset({MsgType.APPEND_RESP}))),),
        {"runtime_refinements": True},
    ),
    Mutant(
        "no-truncation-on-conflict",
        "a follower keeps its conflicting entries instead of truncating them (§5.3)",
        ((RaftNode, "_handle_append", _no_truncation),),
    ),
    Mutant(
        "follower-commits-own-last-index",
        "a follower commits up to min(leader commit, its own last index) instead of the last "
        "entry the append covered (Salt core defect 3)",
        ((RaftNode, "_handle_append", _follower_commits_own_last),),
    ),
    Mutant(
        "stale-term-append-accepted",
        "a follower accepts an append from a leader of an older term",
        ((RaftNode, "step", _stale_append_accepted),),
    ),
    Mutant(
        "read-index-without-heartbeat-round",
        "a leader answers ReadIndex from its commit index without the heartbeat round (§6.4)",
        ((RaftNode, "_start_read_round", _read_without_round),),
    ),
    Mutant(
        "read-index-before-own-term-commit",
        "a new leader answers ReadIndex before an entry of its own term commits (§6.4)",
        ((RaftNode, "_queue_read", _read_before_own_commit),),
    ),
    Mutant(
        "two-pending-conf-changes",
        "a membership change is accepted while another is uncommitted (thesis §4.1)",
        ((RaftNode, "propose_conf_change", _two_pending_changes),),
    ),
    Mutant(
        "snapshot-ack-inflated",
        "a leader completes a snapshot transfer when the acknowledged byte count reaches the "
        "size of its current snapshot, not of the one being sent (issue 17)",
        ((RaftNode, "_handle_snapshot_resp", _snapshot_ack_inflated),),
    ),
    Mutant(
        "leader-counts-unsaved-entries",
        "a leader counts its own entries toward commit before they are saved (thesis §10.2.1)",
        ((RaftNode, "_maybe_commit", _leader_counts_unsaved),),
        # the runtime's leader sends its appends before its own save: only then can the
        # acknowledgements beat the save
        {"runtime_refinements": True},
    ),
    Mutant(
        "no-check-quorum-step-down",
        "a leader that lost contact with a quorum never steps down (check-quorum, §6.2)",
        ((RaftNode, "_tick_heartbeat", _no_check_quorum_step_down),),
    ),
    Mutant(
        "promotes-only-when-acks-move",
        "auto-promotion checked only when a learner's acknowledged index moves",
        ((RaftNode, "_recheck_promotion", _promote_only_on_ack),),
    ),
)

BY_NAME = {m.name: m for m in MUTANTS}
