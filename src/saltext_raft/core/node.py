"""The Raft state machine: one node's roles, elections, replication, membership and reads.

Lives here: ``RaftNode`` — construction and restart, roles and elections, ticks, the message
dispatch, client requests (proposals, membership changes, leader transfer, ReadIndex, snapshots
of the state machine) and the Ready batch (including which messages may leave before the save).
Its parts in their own files: log replication and InstallSnapshot (``replication.py``, a mixin
of this class), the ReadIndex rounds (``readindex.py``), the membership-change arithmetic and
configuration history (``confchange.py``), per-follower flow control (``progress.py``), quorum
arithmetic (``quorum.py``), the in-memory log (``log.py``).
Must not live here: I/O of any kind, clocks, Salt (``tests/unit/test_layering.py``).

Theory of operation
-------------------
``RaftNode`` does no I/O. Its inputs are ``tick()`` (time), ``step(message)`` (the network) and
the client calls (``propose``, ``propose_conf_change``, ``read_index``, ``transfer_leader``,
``create_snapshot``). Its output is a ``Ready`` batch: what to persist, what to send, what to
apply. The driver persists, then sends, then applies, then calls ``advance(ready)``
(see ``types.Ready``). Sending only ever queues a message inside the node; nothing leaves
until the driver takes a Ready, so nothing that depends on unpersisted state can be sent early.

Rules that differ from a naive Raft, each with its reason:
- Pre-vote (thesis §9.6) and check-quorum (§6.2) are on by default. A node that heard from a
  live leader within an election timeout ignores vote requests (leader lease, §4.2.3) unless
  the candidate campaigns on a leader transfer. A pre-vote with a lower term is answered with
  a rejection carrying our term, so a node left behind in term cannot stall pre-vote forever.
  A pre-candidate forgets its leader, so pre-candidates do not refuse each other.
- A new leader appends an empty entry (§8): earlier entries then commit without a client write,
  and no membership change is accepted until that entry commits (the 2015 single-server change
  fix: a leader changes membership only after committing an entry of its own term).
- Entries commit by counting replicas only in the leader's current term (§5.4.2), only among
  voters, and the leader counts its own copy only once it is on stable storage.
- A follower commits at most up to the last entry of the append it just accepted, never to its
  own last index (Salt core defect 3).
- Membership is single-server change (thesis §4.1): a node uses the latest configuration in its
  log, committed or not; a configuration entry that is truncated rolls back to the previous
  one; at most one change is uncommitted at a time.
- A leader removed from the voters keeps leading until the change commits (it no longer counts
  itself), then hands leadership to the most up-to-date voter with TimeoutNow and steps down.
- A removal leaves a tombstone (``Membership.removed``), and the leader keeps replicating to the
  removed node until it has stored its removal and learnt that it committed (never counting
  it toward a quorum), so a removed node knows it was removed.
- A forwarded proposal carries the proposer's term and is appended only in that term; a node
  that is not the leader drops forwarded requests (no relay), and a leader drops those of a
  node that is not a member (a removed node). See ``propose_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence

from saltext_raft.core import quorum
from saltext_raft.core.confchange import ConfHistory
from saltext_raft.core.confchange import changed_membership
from saltext_raft.core.config import Config
from saltext_raft.core.log import RaftLog
from saltext_raft.core.progress import Progress
from saltext_raft.core.readindex import ReadIndex
from saltext_raft.core.replication import Replication
from saltext_raft.core.types import NONE
from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import NotLeader
from saltext_raft.core.types import ProposalDropped
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import ReadState
from saltext_raft.core.types import Ready
from saltext_raft.core.types import Role
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.core.types import SoftState

_NO_HARD_STATE = HardState()
CAMPAIGN_TRANSFER = b"transfer"

_RESPONSE_TYPES = frozenset(
    {
        MsgType.APPEND_RESP,
        MsgType.HEARTBEAT_RESP,
        MsgType.VOTE_RESP,
        MsgType.PRE_VOTE_RESP,
        MsgType.SNAPSHOT_RESP,
    }
)
# Messages a client forwards through a follower: they carry term 0 and skip term checks.
_FORWARDED_TYPES = frozenset({MsgType.PROPOSE, MsgType.READ_INDEX, MsgType.TRANSFER_LEADER})
#: What a leader sends before its own save when its term and vote are already on disk: it
#: replicates while it writes its own log (thesis §10.2.1). Safe because its own copy counts
#: toward commit only once stable (``_maybe_commit`` counts ``log.stable``).
LEADER_EARLY_TYPES = frozenset({MsgType.APPEND, MsgType.HEARTBEAT})
_ALL_TYPES = frozenset(MsgType)


class RaftNode(Replication):
    # ------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------
    def __init__(
        self,
        config: Config,
        rng,
        *,
        hard_state: HardState = _NO_HARD_STATE,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        applied: int | None = None,
    ):
        """Restart a node from what storage holds (or a fresh joining node with nothing).

        ``rng`` is any object with ``randrange`` (a seeded ``random.Random`` in tests).
        ``applied`` is how far the application's state machine already is (default: the
        snapshot index; everything committed after it is handed out again).
        """
        self.cfg = config.validate()
        self.id = config.id
        self._rng = rng
        meta = snapshot.meta if snapshot is not None else SnapshotMeta()
        if entries and entries[0].index != meta.index + 1:
            raise RaftError(
                f"stored entries start at {entries[0].index} but the snapshot ends at {meta.index}"
            )
        self.log = RaftLog(meta.index, meta.term, entries, hard_state.commit)
        self.snapshot = snapshot
        self.applied_index = meta.index if applied is None else max(meta.index, applied)
        self._pending_snapshot: Snapshot | None = None
        self.term = hard_state.term
        self.vote = hard_state.vote
        self._persisted_hs = HardState(hard_state.term, hard_state.vote, self.log.committed)
        # the configurations of the snapshot and of every CONF entry in the log
        self._confs = ConfHistory(meta.index, meta.membership)
        for e in entries:
            if e.kind == EntryKind.CONF:
                self._confs.push(e)
        self.membership = self._confs.latest
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads = ReadIndex()  # the leader's ReadIndex requests and rounds
        self.pending_conf_index = 0
        self.lead_transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = self.cfg.election_ticks
        self._incoming_snapshot: tuple[SnapshotMeta, int, bytearray] | None = None
        self._outstanding: Ready | None = None
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._counters = {"elections": 0, "dropped": 0}
        self._become_follower(self.term, NONE)

    @classmethod
    def bootstrap(cls, config: Config, rng, voters: dict[str, str]) -> RaftNode:
        """A founding node of a new cluster (etcd's "initial cluster").

        Every founding node writes the same entry 1 (term 1): a CONF entry carrying the founding
        voters. Identical (index, term, data) on every founder keeps log matching intact; a
        node that joins later receives it from the leader like any other entry.
        """
        if config.id not in voters:
            raise RaftError(
                f"bootstrap: {config.id} is not among the founding voters {sorted(voters)}"
            )
        founding = Membership(
            voters=frozenset(voters),
            addresses=tuple(sorted((k, v) for k, v in voters.items() if v)),
        )
        data = ConfChange(ConfOp.BOOTSTRAP, NONE, result=founding).encode()
        node = cls(config, rng)
        node.log.append([Entry(1, 1, EntryKind.CONF, data)])
        node._confs.push(node.log.entry(1))
        node.membership = founding
        node.term = 1
        node.log.commit_to(1)
        node._become_follower(1, NONE)
        return node

    # ------------------------------------------------------------------------------------------
    # observation
    # ------------------------------------------------------------------------------------------
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def first_index(self) -> int:
        return self.log.first_index

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def term_at(self, index: int) -> int | None:
        return self.log.term_at(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        return self.log.slice(lo, hi)

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self.snapshot.meta if self.snapshot is not None else SnapshotMeta()

    def membership_at(self, index: int) -> tuple[int, Membership]:
        """The configuration in force at ``index`` and the index of the entry that set it."""
        return self._confs.at(index)

    @property
    def committed_membership(self) -> Membership:
        return self.membership_at(self.log.committed)[1]

    @property
    def is_voter(self) -> bool:
        return self.id in self.membership.voters

    def status(self) -> dict:
        conf_index, committed = self.membership_at(self.log.committed)
        out = {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit_index": self.log.committed,
            "applied_index": self.applied_index,
            "first_index": self.log.first_index,
            "last_index": self.log.last_index,
            "snapshot_index": self.snapshot_meta.index,
            "membership": self.membership.to_dict(),
            "membership_index": self._confs.latest_index,
            "committed_membership": committed.to_dict(),
            "committed_membership_index": conf_index,
            "pending_conf_index": self.pending_conf_index,
            "lead_transferee": self.lead_transferee,
            "elections": self._counters["elections"],
        }
        if self.role is Role.LEADER:
            out["progress"] = {
                nid: dict(pr.to_dict(), learner=nid in self.membership.learners)
                for nid, pr in self.progress.items()
                if nid != self.id
            }
        return out

    # ------------------------------------------------------------------------------------------
    # membership bookkeeping
    # ------------------------------------------------------------------------------------------
    def _rollback_conf(self, from_index: int) -> None:
        """Entries from ``from_index`` on were truncated: forget the configurations they set."""
        if self._confs.rollback(from_index):
            self._set_membership(self._confs.latest)

    def _note_appended(self, entries: Sequence[Entry]) -> None:
        confs = [e for e in entries if e.kind == EntryKind.CONF]
        for e in confs:
            self._confs.push(e)
        if confs:
            self._set_membership(self._confs.latest)

    def _set_membership(self, membership: Membership) -> None:
        previous, self.membership = self.membership, membership
        if self.role is not Role.LEADER:
            return
        last = self.log.last_index
        for nid in sorted(membership.members):  # sorted: same message order in every run
            if nid not in self.progress or (nid not in previous.members and nid != self.id):
                # A node added back while still departing may have been rebuilt empty: what it
                # acknowledged before its removal proves nothing now.
                self.progress[nid] = Progress(last + 1, self.cfg.max_inflight)
        for nid in list(self.progress):
            if nid != self.id and nid not in membership.members and not self._departing(nid):
                del self.progress[nid]
        if self.lead_transferee and self.lead_transferee not in membership.voters:
            self.lead_transferee = NONE

    def _departing(self, nid: str) -> bool:
        """True while ``nid``, removed (tombstoned) while we lead, has not yet stored its removal
        entry and learnt that it committed. The leader keeps replicating to it until then,
        so that a removed node knows (and keeps on disk) that it was removed: it then stays out
        instead of asking to join again on its next start (its tombstone, ``Membership.removed``).
        Later configuration entries do not end this (a dead master is usually removed and then
        replaced: it must still learn its removal when it comes back). It never counts toward
        any quorum (those count voters only)."""
        removed = self.membership.removed_at(nid)
        if not removed:
            return False
        pr = self.progress.get(nid)
        return pr is None or pr.match < removed or self.log.committed < removed

    # ------------------------------------------------------------------------------------------
    # role changes
    # ------------------------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = self.cfg.election_ticks + self._rng.randrange(
            self.cfg.election_ticks
        )
        self.lead_transferee = NONE
        self._votes = {}
        self.progress = {}
        self._reads.reset()

    def _become_follower(self, term: int, leader: str) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Pre-vote does not change term or vote; forgetting the leader lets pre-candidates
        # grant each other's pre-votes instead of all waiting on a dead leader's lease.
        self._votes = {}
        self.leader = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index
        for nid in sorted(self.membership.members | {self.id}):  # deterministic order
            self.progress[nid] = Progress(last + 1, self.cfg.max_inflight)
        me = self.progress[self.id]
        me.match = self.log.stable
        me.become_replicate()
        me.recent_active = True
        # §8: an empty entry of our own term; until it commits, no membership change
        # (pending_conf_index) and no ReadIndex (reads wait in _reads).
        self._append_local([b""])
        self.pending_conf_index = self.log.last_index
        self._counters["elections"] += 1

    # ------------------------------------------------------------------------------------------
    # time
    # ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self._randomized_timeout and self.is_voter:
            self.election_elapsed = 0
            self.campaign()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = {nid for nid, pr in self.progress.items() if pr.recent_active}
                active.add(self.id)
                if not quorum.has_quorum(self.membership.voters, active):
                    self._become_follower(self.term, NONE)
                    return
                for nid, pr in self.progress.items():
                    pr.recent_active = nid == self.id
            self.lead_transferee = NONE  # a transfer must finish within an election timeout
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(b"")

    # ------------------------------------------------------------------------------------------
    # elections
    # ------------------------------------------------------------------------------------------
    def campaign(self, transfer: bool = False) -> None:
        """Start an election now (a pre-vote first, unless campaigning on a leader transfer)."""
        if not self.is_voter or self.role is Role.LEADER:
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            self._solicit_votes(MsgType.PRE_VOTE, self.term + 1, b"")
        else:
            self._become_candidate()
            self._solicit_votes(MsgType.VOTE, self.term, CAMPAIGN_TRANSFER if transfer else b"")

    def _solicit_votes(self, vote_type: MsgType, vote_term: int, ctx: bytes) -> None:
        self._votes[self.id] = True
        if self._poll_votes():
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for nid in sorted(self.membership.voters):
            if nid != self.id:
                self._send(
                    Message(
                        vote_type,
                        nid,
                        self.id,
                        vote_term,
                        log_term=last_term,
                        index=last_index,
                        context=ctx,
                    )
                )

    def _poll_votes(self) -> bool:
        """Act on the votes so far. Returns True if the election is decided."""
        res = quorum.vote_result(self.membership.voters, self._votes)
        if res is quorum.VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._become_candidate()
                self._solicit_votes(MsgType.VOTE, self.term, b"")
            else:
                self._become_leader()
                self._bcast_append()
            return True
        if res is quorum.VoteResult.LOST:
            self._become_follower(self.term, NONE)
            return True
        return False

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        resp_type = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Reply with the term of the request: a granted pre-vote is for the future term.
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    # ------------------------------------------------------------------------------------------
    # input: messages
    # ------------------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Feed one message from the network (or a forwarded client request)."""
        if m.to != self.id or m.frm == self.id:
            self._counters["dropped"] += 1
            return
        if m.type in _FORWARDED_TYPES and m.term == 0:
            pass  # client requests forwarded by a follower: not subject to term rules
        elif m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader != NONE
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    return  # §4.2.3: we heard from a live leader recently
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term; a granted one carries the future term
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MsgType.APPEND,
                MsgType.HEARTBEAT,
            ):
                # A stale leader (e.g. just healed from a partition) learns our term and steps
                # down; without this it could keep a lease-holding cluster from electing.
                self._send(Message(MsgType.APPEND_RESP, m.frm, self.id, self.term))
            elif m.type is MsgType.PRE_VOTE:
                # Tell a pre-candidate with a lower term about ours, or it could ask forever.
                self._send(Message(MsgType.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return  # everything else from an older term is stale: ignore it

        t = m.type
        if t is MsgType.VOTE or t is MsgType.PRE_VOTE:
            self._handle_vote_request(m)
            return
        if self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APPEND:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.frm
            self.log.commit_to(m.commit)
            self._send(
                Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context)
            )
        elif t is MsgType.SNAPSHOT:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot_chunk(m)
        elif t is MsgType.TIMEOUT_NOW:
            if self.is_voter:
                self.campaign(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))
        elif t in _FORWARDED_TYPES:
            # Sent to us while we led (or by a node that still thinks so). Not relayed: a relayed
            # request would claim another sender (an authenticated transport drops it), and a
            # proposal is tagged with the term it was sent in, which no other leader accepts.
            # The proposer re-sends once it sees that term end (runtime), a read is retried.
            self._counters["dropped"] += 1
        # responses to a leadership we no longer hold are stale: ignore them

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            # a leader exists in our term (the term check made them equal)
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
        elif (t is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MsgType.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            if t is MsgType.PRE_VOTE_RESP and not m.reject and m.term != self.term + 1:
                return  # a grant from an earlier pre-vote round
            self._votes[m.frm] = not m.reject
            self._poll_votes()
        elif t in _FORWARDED_TYPES:
            self._counters["dropped"] += 1

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t in _FORWARDED_TYPES and m.frm not in self.membership.members:
            # A removed node keeps its last leader (it never campaigns): it may not write into,
            # read from or move the leadership of the cluster it left (issue 18, M3).
            self._counters["dropped"] += 1
            return
        if t is MsgType.APPEND_RESP:
            self._handle_append_resp(m)
        elif t is MsgType.HEARTBEAT_RESP:
            self._handle_heartbeat_resp(m)
        elif t is MsgType.SNAPSHOT_RESP:
            self._handle_snapshot_resp(m)
        elif t is MsgType.PROPOSE:
            if self.lead_transferee or (m.log_term and m.log_term != self.term):
                # A proposal sent in another term is never appended in this one: its proposer
                # may already treat it as dead and re-send it (see propose_batch).
                self._counters["dropped"] += 1
                return
            datas = [e.data for e in m.entries if e.kind == EntryKind.NORMAL]
            if datas:
                self._append_local(datas)  # replicated by the next ready() (_flush_coalesced)
        elif t is MsgType.READ_INDEX:
            self._queue_read(m.frm, m.context)
        elif t is MsgType.TRANSFER_LEADER:
            target = m.context.decode(errors="replace")
            try:
                self.transfer_leader(target)
            except RaftError:
                self._counters["dropped"] += 1

    def _on_commit_advanced(self) -> None:
        committed = self.log.committed
        if self.log.term_at(committed) == self.term:
            self._reads.own_term_committed()
        if self.id not in self.membership.voters and self._confs.latest_index <= committed:
            self._step_down_removed()
        if self.role is Role.LEADER and self.membership.learners:
            # A learner that caught up while a membership change was pending (often its own
            # ADD_LEARNER entry) was not promoted then; its index may never move again.
            for nid in sorted(self.membership.learners):
                pr = self.progress.get(nid)
                if pr is not None:
                    self._recheck_promotion(nid, pr)

    def _step_down_removed(self) -> None:
        """We are no longer a voter and that is committed: hand over and step down."""
        best, best_match = NONE, -1
        for nid in sorted(self.membership.voters):
            pr = self.progress.get(nid)
            if pr is not None and pr.match > best_match:
                best, best_match = nid, pr.match
        term = self.term
        self._become_follower(term, NONE)
        if best and best_match == self.log.last_index:
            self._send(Message(MsgType.TIMEOUT_NOW, best, self.id, term))

    # ------------------------------------------------------------------------------------------
    # input: client requests
    # ------------------------------------------------------------------------------------------
    def propose(self, data: bytes) -> int | None:
        """Propose one entry. Leader: returns its index. Follower: forwards it, returns None."""
        return self.propose_batch([data])

    def propose_batch(self, datas: Sequence[bytes]) -> int | None:
        """Propose several entries at once. Leader: returns the index of the last one.

        Either way the entries can only ever be appended in the current term (a follower's
        forwarded proposal carries it; the leader drops one from another term). Hence, by log
        matching and leader completeness (§5.3, §5.4): once this node has applied an entry of a
        later term, a proposal of this term that it has not applied will never commit, and the
        caller may propose it again without risk of applying it twice.
        """
        if self.role is Role.LEADER:
            if self.lead_transferee:
                raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
            # Replicated by the next ready() (_flush_coalesced): one append per follower per
            # Ready, however many batches (local or forwarded) arrived since the last one.
            return self._append_local(datas)
        if self.leader == NONE:
            raise NotLeader(NONE)
        ents = tuple(Entry(0, 0, EntryKind.NORMAL, d) for d in datas)
        self._msgs.append(
            Message(MsgType.PROPOSE, self.leader, self.id, 0, log_term=self.term, entries=ents)
        )
        return None

    def propose_conf_change(self, op: ConfOp, node_id: str, address: str = "") -> int:
        """Propose a single-server membership change. Leader only. Returns the entry index."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped(
                f"a membership change is pending "
                f"(entry {self.pending_conf_index} not yet committed)"
            )
        op = ConfOp(op)
        result = changed_membership(self.membership, op, node_id, address, self.log.last_index + 1)
        data = ConfChange(op, node_id, address, result).encode()
        idx = self._append_local([data], EntryKind.CONF)
        self.pending_conf_index = idx
        self._bcast_append()
        return idx

    def _recheck_promotion(self, nid: str, pr: Progress) -> None:
        """Auto-promotion checked when no acknowledgement moved: when the commit index moves
        (a pending change may just have committed) and at each heartbeat round. Before
        2026-11-27 it was checked only when a learner's acknowledged index moved, so a learner
        that caught up while a change was pending stayed a learner on an idle cluster (the
        simulator's post-heal promotion check and the mutant promotes-only-when-acks-move keep
        it that way)."""
        self._maybe_auto_promote(nid, pr)

    def _maybe_auto_promote(self, nid: str, pr: Progress) -> None:
        if (
            self.cfg.auto_promote
            and nid in self.membership.learners
            and nid not in self.membership.demoted
            and pr.match + self.cfg.promote_lag >= self.log.last_index
            and self.pending_conf_index <= self.log.committed
            and not self.lead_transferee
        ):
            self.propose_conf_change(ConfOp.PROMOTE, nid)

    def transfer_leader(self, target: str) -> None:
        """Hand leadership to ``target``: it catches up, then is told to campaign at once."""
        if self.role is not Role.LEADER:
            if self.leader == NONE:
                raise NotLeader(NONE)
            self._msgs.append(
                Message(MsgType.TRANSFER_LEADER, self.leader, self.id, 0, context=target.encode())
            )
            return
        if target == self.id:
            return
        if target not in self.membership.voters:
            raise ProposalDropped(f"{target} is not a voter")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self._send(Message(MsgType.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; the answer is a ReadState in a later Ready."""
        if self.role is Role.LEADER:
            self._queue_read(self.id, context)
            return
        if self.leader == NONE:
            raise NotLeader(NONE)
        self._msgs.append(Message(MsgType.READ_INDEX, self.leader, self.id, 0, context=context))

    def _queue_read(self, requester: str, context: bytes) -> None:
        own_term_committed = self.log.term_at(self.log.committed) == self.term
        self._reads.add((requester, context), own_term_committed)

    def _start_read_round(self) -> None:
        requests = self._reads.take_batch()
        if self.membership.voters == {self.id}:
            self._release_reads(self.log.committed, requests)
            return
        round_id = self._reads.start_round(self.log.committed, requests, self.id)
        self._bcast_heartbeat(str(round_id).encode())

    def _ack_read_round(self, voter: str, ctx: bytes) -> None:
        for index, requests in self._reads.ack(voter, ctx, self.membership.voters):
            self._release_reads(index, requests)

    def _release_reads(self, index: int, requests: list[tuple[str, bytes]]) -> None:
        for requester, ctx in requests:
            if requester == self.id:
                self._read_states.append(ReadState(index, ctx))
            else:
                self._send(
                    Message(
                        MsgType.READ_INDEX_RESP,
                        requester,
                        self.id,
                        self.term,
                        index=index,
                        context=ctx,
                    )
                )

    def create_snapshot(self, index: int, data: bytes, keep: int = 0) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (<= applied) and compact the log.

        ``keep`` entries before ``index`` stay in memory so slightly slow followers can still be
        served entries instead of the whole snapshot. The caller stores the snapshot durably.
        """
        if index > self.applied_index:
            raise RaftError(f"cannot snapshot at {index}: only {self.applied_index} is applied")
        if index <= self.snapshot_meta.index:
            raise RaftError(f"snapshot at {index} is not newer than {self.snapshot_meta.index}")
        term = self.log.term_at(index)
        if term is None:
            raise RaftError(f"entry {index} is not in the log")
        _, membership = self.membership_at(index)
        snap = Snapshot(SnapshotMeta(index, term, membership), data)
        self.snapshot = snap
        self.log.compact(max(self.log.offset, index - keep))
        self._confs.compact(self.log.offset)
        return snap

    # ------------------------------------------------------------------------------------------
    # output
    # ------------------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _flush_coalesced(self) -> None:
        """Work deferred to the next Ready so that it is done once per batch, not per message."""
        if self.role is not Role.LEADER:
            return
        if self._reads.batch:
            self._start_read_round()
        log = self.log
        committed = log.committed
        last = log.last_index
        for nid, pr in self.progress.items():
            if nid == self.id:
                continue
            # New entries (every proposal batch since the last Ready) and what a full window
            # held back: as few appends as the window and max_msg_bytes allow.
            while pr.next <= last and self._send_append(nid, send_if_empty=False):
                pass
            if pr.sent_commit < committed:
                self._send_append(nid, send_if_empty=True)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        if self._msgs or self._read_states or self._pending_snapshot is not None:
            return True
        log = self.log
        if log.last_index > max(log.stable, log.offset):
            return True
        if self._hard_state() != self._persisted_hs or self._soft_state() != self._prev_soft:
            return True
        if self.applied_index < min(log.committed, log.last_index):
            return True
        if self.role is Role.LEADER:
            if self._reads.batch:
                return True
            committed = log.committed
            last = log.last_index
            for nid, pr in self.progress.items():
                if (
                    nid != self.id
                    and (pr.sent_commit < committed or pr.next <= last)
                    and not pr.is_paused()
                ):
                    return True
        return False

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RaftError("ready() called again before advance() of the previous Ready")
        self._flush_coalesced()
        log = self.log
        rd = Ready()
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hs = self._hard_state()
        if hs != self._persisted_hs:
            rd.hard_state = hs
        rd.snapshot = self._pending_snapshot
        rd.entries = log.unstable()
        lo = (
            self._pending_snapshot.meta.index
            if self._pending_snapshot is not None
            else self.applied_index
        )
        hi = min(log.committed, log.last_index)
        if hi > lo and lo >= log.offset:
            rd.committed_entries = log.slice(lo + 1, hi + 1, self.cfg.max_apply_bytes)
        rd.messages, self._msgs = self._msgs, []
        rd.read_states, self._read_states = self._read_states, []
        self._mark_early_sends(rd)
        self._outstanding = rd
        return rd

    def _mark_early_sends(self, rd: Ready) -> None:
        """Say which of ``rd``'s messages may leave before its save, and whether it is
        commit-only (see ``Ready``). The one home of this rule: the runtime and the simulator
        honour it and neither re-derives it (etcd keeps it in its core too: msgsAfterAppend)."""
        hs, saved = rd.hard_state, self._persisted_hs
        if hs is not None and (hs.term, hs.vote) != (saved.term, saved.vote):
            return  # a new term or a vote: every message waits for the save
        if not rd.entries and rd.snapshot is None:
            rd.commit_only = True
            rd.early_types = _ALL_TYPES
        elif self.role is Role.LEADER:
            rd.early_types = LEADER_EARLY_TYPES

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        if rd is not self._outstanding:
            raise RaftError("advance() called with a Ready that is not the outstanding one")
        self._outstanding = None
        log = self.log
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.snapshot is not None:
            log.stable = max(log.stable, rd.snapshot.meta.index)
            self.applied_index = max(self.applied_index, rd.snapshot.meta.index)
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            # Entries may have been truncated while the Ready was being persisted. If the last
            # one still matches, log matching says all of them do; otherwise keep the stable
            # index the truncation set (the next Ready persists the new suffix again).
            if log.term_at(last.index) == last.term:
                log.stable = max(log.stable, last.index)
        if rd.committed_entries:
            self.applied_index = max(self.applied_index, rd.committed_entries[-1].index)
        if self.role is Role.LEADER:
            me = self.progress.get(self.id)
            if me is not None:
                me.match = log.stable
            if self._maybe_commit():
                self._on_commit_advanced()
