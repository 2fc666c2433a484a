"""Invariant checkers for the simulator: Raft's safety properties, checked incrementally.

Lives here: ``Violation`` and ``Checkers``. The simulator feeds ``Checkers`` what happened
(entries persisted, hard states written, node states after a step, entries applied, votes
delivered, reads) and a checker raises ``Violation`` the moment a property breaks. Nothing
here drives nodes or the network, and no check rescans a whole log: every check costs O(1) or
O(new entries), so all of them run after every simulator step.

Checked (Raft paper Figure 3 and thesis §3, §4, §6.4):

- election_safety: at most one leader per term, over the whole history.
- leader_append_only: a leader never overwrites or deletes entries of its log in its term.
- log_matching: two logs with an entry of the same index and term hold the same entry, and
  the same entry before it; by induction the logs are identical up to that index. Checked on
  every entry written to a disk, plus memory/disk agreement after each Ready.
- leader_completeness: an entry committed (any node's reported commit index) is in the log of
  every leader of a later term (checked when a leader appears and when commit advances).
- committed_agreement: every node that reports an index as committed has the same term there.
- state_machine_safety: no two nodes apply different entries at an index (running CRC chain,
  also over snapshots restored).
- commit_monotonic: a node's commit index never decreases, in memory or on disk; a restarted
  node starts from at least its persisted commit.
- hard_state: the persisted term never decreases and the vote never changes within a term.
- commit_durable: when a leader advances its commit index, a majority of its voters have that
  entry on disk (§5.4 with the persist-before-send rule).
- leader_commit_term: a leader only moves its commit index to an entry of its own term
  (§5.4.2: earlier-term entries are committed only indirectly).
- single_pending_conf: a leader's log never holds more than one CONF entry above the highest
  index known committed cluster-wide (thesis §4.1). Not "above the leader's own commit index":
  a new leader may inherit a committed change it does not yet know is committed, followed by
  the next one, which is correct.
- learner_never_leads / vote_quorum: a leader is a voter in its own configuration, and the
  granted votes delivered to it come from a majority of its voters (learners never count).
- read_linearizable: a ReadIndex result is at least the highest commit index observed when the
  read began, and the node serves it only after applying that far.
- durable_when_sent: checked when a message leaves its node, against that node's disk: a
  granted vote is in the persisted hard state (or a later term is); an append acknowledgement's
  index is on disk with the term the node's log had when the Ready was taken (or under the disk
  snapshot); a complete snapshot acknowledgement (``commit`` set) is under the disk's snapshot
  or in its log. Acknowledgements of a term older than the one on disk are stale and skipped.
- committed_kept: no disk ever drops an entry its node knows is committed (at or below the
  larger of its in-memory and its persisted commit index), by a suffix replacement or a
  snapshot install. A copy of a committed entry on a node that has not learned the commit may
  be overwritten by a leader of an older term (that node has not seen the newer term either):
  Raft keeps committed entries in every future leader's log (leader_completeness), not on
  every disk; an earlier version of this check said "every disk" and reported that as a
  violation (sim-long, seed 11492).
- follower_commit_rule: after an append, a follower's commit index is at most
  max(its previous commit, min(leader commit, index of the append's last entry)) (Figure 2,
  AppendEntries step 5); after a heartbeat at most max(previous, the heartbeat's commit).
- match_index_true: a leader's match index for a follower (or learner) is a fact about that
  follower's disk: whenever it rises, the follower's disk holds the leader's entry there (or a
  snapshot covering it), unless the follower has moved to a later term meanwhile (a newer
  leader may legitimately overwrite uncommitted entries it had acknowledged): its term is
  later, or its log ends in an entry of a later term (a torn save can keep a newer leader's
  entries and lose the hard state that came with them).
- leader_steps_down (checked by the simulator, which knows the network): with check-quorum on,
  a leader that cannot reach a quorum of its voters steps down within a bounded number of its
  own ticks.
"""

from __future__ import annotations

import bisect

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import ReadState
from saltext_raft.core.types import Role


class Violation(Exception):
    """A safety property failed. ``invariant`` is one of the names in the module docstring."""

    def __init__(self, invariant: str, detail: str):
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


def majority(n: int) -> int:
    return n // 2 + 1


class Checkers:
    """All invariant checks over one simulated history.

    ``disks`` maps node id -> object with ``term_at(index)`` and ``conf_indices`` (the sim's
    ``Disk``); the commit-durability and pending-change checks read it. Node "views" passed in
    need: ``id role term commit_index first_index last_index term_at(i) membership``.
    """

    def __init__(self, disks: dict | None = None):
        self.disks = disks if disks is not None else {}
        #: term -> leader id, for every term that had a leader
        self.leaders: dict[int, str] = {}
        # node id -> [term, last_index, last_term] of its log while leader of that term
        self._tail: dict[str, list] = {}
        # (index, term) -> (kind, data, prev_term): every entry ever written to any disk
        self._entries: dict[tuple[int, int], tuple] = {}
        #: committed_terms[i] = term of committed entry i (None if unknown: compacted)
        self.committed_terms: list[int | None] = [0]
        # node id -> last observed commit index of its current incarnation
        self._commit: dict[str, int] = {}
        #: applied[i] = (term, kind, data, chain) of the entry applied at index i
        self.applied: list[tuple | None] = [(0, 0, b"", 0)]
        # read context -> highest commit index observed when the read began
        self._reads: dict[bytes, int] = {}
        # (candidate, term) -> ids whose granted vote was delivered to the candidate
        self._votes: dict[tuple[str, int], set[str]] = {}
        # (leader, term, follower) -> the follower's match index when last checked
        self._match: dict[tuple[str, int, str], int] = {}

    @property
    def max_commit(self) -> int:
        return len(self.committed_terms) - 1

    # --- disk ---------------------------------------------------------------------------------
    def on_persist_entries(self, nid: str, entries: list[Entry], prev_term: int | None) -> None:
        """``entries`` were written in a row to ``nid``'s disk, after an entry of ``prev_term``."""
        known = self._entries
        prev = prev_term
        for e in entries:
            key = (e.index, e.term)
            val = (int(e.kind), e.data, prev)
            old = known.get(key)
            if old is None:
                known[key] = val
            elif old != val:
                raise Violation(
                    "log_matching",
                    f"{nid} wrote entry index={e.index} term={e.term} kind={e.kind} "
                    f"data={e.data!r} "
                    f"after term {prev}; another log has kind={old[0]} data={old[1]!r} after term "
                    f"{old[2]}",
                )
            prev = e.term

    def on_persist_hard_state(self, nid: str, old: HardState, new: HardState) -> None:
        if new.term < old.term:
            raise Violation("hard_state", f"{nid} persisted term {new.term} after {old.term}")
        if new.term == old.term and old.vote and new.vote != old.vote:
            raise Violation(
                "hard_state", f"{nid} changed its vote in term {new.term}: {old.vote} -> {new.vote}"
            )
        if new.commit < old.commit:
            raise Violation(
                "commit_monotonic", f"{nid} persisted commit {new.commit} after {old.commit}"
            )

    # --- node state after a step ----------------------------------------------------------------
    def on_restart(self, view, hs: HardState) -> None:
        c = view.commit_index
        if c < hs.commit:
            raise Violation(
                "commit_monotonic", f"{view.id} restarted with commit {c} < persisted {hs.commit}"
            )
        self._commit[view.id] = c
        self._tail.pop(view.id, None)

    def on_crash(self, nid: str) -> None:
        self._commit.pop(nid, None)
        self._tail.pop(nid, None)

    def on_node(self, view) -> None:
        """Check one live node after a step that touched it."""
        nid = view.id
        c = view.commit_index
        prev = self._commit.get(nid)
        if prev is not None and c < prev:
            raise Violation("commit_monotonic", f"{nid} commit went from {prev} to {c}")
        self._commit[nid] = c
        is_leader = view.role == Role.LEADER
        if c > (prev or 0):
            # a node seen for the first time has no previous commit to have advanced from
            self._check_new_commit(view, prev or 0, c, is_leader and prev is not None)
        if is_leader:
            self._check_leader(view)

    def _check_new_commit(self, view, prev: int, c: int, is_leader: bool) -> None:
        nid = view.id
        terms = self.committed_terms
        top = len(terms) - 1
        first = view.first_index
        # agreement with what others reported committed (only the newly committed range)
        for i in range(max(prev + 1, first), min(c, top) + 1):
            t = view.term_at(i)
            if t is not None and terms[i] is not None and t != terms[i]:
                raise Violation(
                    "committed_agreement",
                    f"{nid} reports index {i} committed with term {t}, others with term {terms[i]}",
                )
        if c > top:
            for i in range(top + 1, c + 1):
                terms.append(view.term_at(i) if i >= first - 1 else None)
            # leaders of this or later terms must already hold the new committed entries
            # (checked for live leaders by the simulator through on_node; here: tails)
        if is_leader:
            t = view.term_at(c)
            if t is not None and t != view.term:
                raise Violation(
                    "leader_commit_term",
                    f"leader {nid} of term {view.term} advanced commit to {c}, an entry of term {t}"
                    " (§5.4.2: only current-term entries commit by counting replicas)",
                )
            self._check_durable(view, c, t)

    def _check_durable(self, view, c: int, t: int | None) -> None:
        if t is None or not self.disks:
            return
        voters = view.membership.voters
        have = 0
        for v in voters:
            d = self.disks.get(v)
            if d is None:
                continue
            dt = d.term_at(c)
            if dt == t or (dt is None and c <= d.offset):
                have += 1
        if have < majority(len(voters)):
            raise Violation(
                "commit_durable",
                f"leader {view.id} (term {view.term}) committed index {c} (term {t}) but only "
                f"{have} of voters {sorted(voters)} have it on disk",
            )

    def _check_leader(self, view) -> None:
        nid, term = view.id, view.term
        owner = self.leaders.get(term)
        if owner is None:
            self.leaders[term] = nid
        elif owner != nid:
            raise Violation("election_safety", f"two leaders in term {term}: {owner} and {nid}")
        last = view.last_index
        tail = self._tail.get(nid)
        if tail is None or tail[0] != term:
            self._new_leader(view)
        else:
            t_last, t_term = tail[1], tail[2]
            if last < t_last:
                raise Violation(
                    "leader_append_only",
                    f"leader {nid} (term {term}) log shrank from {t_last} to {last}",
                )
            if t_last >= view.first_index and view.term_at(t_last) != t_term:
                raise Violation(
                    "leader_append_only",
                    f"leader {nid} (term {term}) overwrote index {t_last}: term {t_term} -> "
                    f"{view.term_at(t_last)}",
                )
        self._tail[nid] = [term, last, view.term_at(last)]
        self._check_completeness(view)
        self._check_pending_conf(view)

    def on_leader_progress(self, view, term_of) -> None:
        """Check each follower's match index of leader ``view`` that rose since last time.
        ``term_of(nid)`` is the follower's current term (memory if running, else disk)."""
        progress = getattr(view, "progress", None)
        if not progress:
            return
        nid, term = view.id, view.term
        seen = self._match
        for fid, pr in progress.items():
            if fid == nid:
                continue
            match = pr.match
            key = (nid, term, fid)
            if match <= seen.get(key, 0):
                continue
            seen[key] = match
            disk = self.disks.get(fid)
            if disk is None or match <= disk.offset:
                continue
            # Moved to a later term meanwhile: its current term says so, or its log does. A
            # save that failed part-way keeps the entries a newer leader sent and loses the
            # hard state that went with them, so after a restart the term alone can lag the
            # log (KV seed 2400872: entry 58 of term 4 on disk, hard state still term 3).
            if max(term_of(fid), disk.term_at(disk.last_index) or 0) > term:
                continue
            have = disk.term_at(match)
            want = view.term_at(match)
            if have is not None and (want is None or have == want):
                continue
            raise Violation(
                "match_index_true",
                f"leader {nid} (term {term}) holds match index {match} for {fid}, whose disk "
                f"has {'term ' + str(have) if have is not None else 'nothing'} there (leader: "
                f"term {want}; follower's disk: snapshot at {disk.offset}, log to "
                f"{disk.last_index})",
            )

    def _new_leader(self, view) -> None:
        nid, term = view.id, view.term
        voters = view.membership.voters
        if nid not in voters:
            raise Violation(
                "learner_never_leads",
                f"{nid} became leader of term {term} but is not a voter in {sorted(voters)}",
            )
        granted = self._votes.get((nid, term), set()) | {nid}
        n = len(granted & voters)
        if n < majority(len(voters)):
            raise Violation(
                "vote_quorum",
                f"{nid} became leader of term {term} with votes from {sorted(granted)}: only {n} "
                f"of voters {sorted(voters)}",
            )

    def _check_completeness(self, view) -> None:
        top = len(self.committed_terms) - 1
        t = self.committed_terms[top]
        if t is None or top < view.first_index or t > view.term:
            return  # compacted into the leader's snapshot, or committed in a later term
        if top > view.last_index or view.term_at(top) != t:
            raise Violation(
                "leader_completeness",
                f"leader {view.id} of term {view.term} lacks committed index {top} (term {t}); "
                f"its log ends at {view.last_index}, term there {view.term_at(top)}",
            )

    def _check_pending_conf(self, view) -> None:
        d = self.disks.get(view.id)
        if d is None:
            return
        conf = d.conf_indices
        pending = len(conf) - bisect.bisect_right(conf, self.max_commit)
        if pending > 1:
            raise Violation(
                "single_pending_conf",
                f"leader {view.id} (term {view.term}) has {pending} uncommitted CONF entries at "
                f"{conf[-pending:]} (highest commit known: {self.max_commit})",
            )

    # --- state machines -------------------------------------------------------------------------
    def on_apply(self, nid: str, entry: Entry, chain: int) -> bool:
        """``nid`` applied ``entry``; its chain hash is now ``chain``. True if first apply there."""
        applied = self.applied
        i = entry.index
        if i < len(applied):
            old = applied[i]
            if old is not None and old[3] != chain:
                raise Violation(
                    "state_machine_safety",
                    f"{nid} applied index {i} term {entry.term} data {entry.data!r}; another node "
                    f"applied term {old[0]} data {old[2]!r} there (or a different history before "
                    "it)",
                )
            if old is None:
                applied[i] = (entry.term, int(entry.kind), entry.data, chain)
            return False
        while len(applied) < i:
            applied.append(None)  # only after a snapshot restore skipped ahead
        applied.append((entry.term, int(entry.kind), entry.data, chain))
        return True

    def on_restore(self, nid: str, index: int, chain: int) -> None:
        """``nid`` restored its state machine from a snapshot at ``index``."""
        applied = self.applied
        if index < len(applied) and applied[index] is not None:
            if applied[index][3] != chain:
                raise Violation(
                    "state_machine_safety",
                    f"{nid} restored a snapshot at {index} whose contents differ from what was "
                    "applied there",
                )
            return
        raise Violation(
            "state_machine_safety",
            f"{nid} restored a snapshot at {index}, beyond anything any node applied",
        )

    def on_apply_order(self, nid: str, applied: int, entry: Entry) -> None:
        if entry.index != applied + 1:
            raise Violation(
                "state_machine_safety",
                f"{nid} was handed entry {entry.index} to apply after applying {applied}",
            )

    # --- votes and reads ----------------------------------------------------------------------
    def on_deliver(self, msg: Message) -> None:
        if msg.type == MsgType.VOTE_RESP and not msg.reject:
            self._votes.setdefault((msg.to, msg.term), set()).add(msg.frm)

    def on_send(self, nid: str, m: Message, disk, claim) -> None:
        """``m`` leaves ``nid`` now; ``disk`` is its disk; ``claim`` the term of the entry an
        append acknowledgement vouches for (None: compacted from memory when its Ready was
        taken, then it must at least be on disk)."""
        t = m.type
        if t is MsgType.VOTE_RESP:
            if m.reject:
                return
            hs = disk.hs
            if hs.term > m.term or (hs.term == m.term and hs.vote == m.to):
                return
            raise Violation(
                "durable_when_sent",
                f"{nid} grants its term-{m.term} vote to {m.to} but its disk holds term "
                f"{hs.term} vote {hs.vote or '-'}",
            )
        if t is MsgType.APPEND_RESP or t is MsgType.SNAPSHOT_RESP:
            if disk.hs.term > m.term:
                # Written in an older term, sent after the node moved on (it was stepped while
                # a save was in flight) and may have truncated what it acknowledged: stale.
                # The old leader cannot commit with it: a quorum elected the newer leader, and
                # this node was not in it (it held the entry then, and would have refused).
                return
        if t is MsgType.APPEND_RESP:
            if m.reject or not m.index or m.index <= disk.offset:
                return  # a rejection, an answer to a stale leader, or under the disk snapshot
            have = disk.term_at(m.index)
            if have is not None and (have == claim or claim is None):
                return
            raise Violation(
                "durable_when_sent",
                f"{nid} acknowledges index {m.index} (term {claim}) to {m.to} but its disk "
                f"holds {'term ' + str(have) if have is not None else 'nothing'} there (log "
                f"ends at {disk.last_index})",
            )
        if t is MsgType.SNAPSHOT_RESP and m.commit and not m.reject:
            if m.commit <= disk.offset or disk.term_at(m.commit) is not None:
                return
            raise Violation(
                "durable_when_sent",
                f"{nid} acknowledges the whole snapshot at {m.commit} to {m.to} but its disk has "
                f"a snapshot at {disk.offset} and a log to {disk.last_index}",
            )

    def on_disk_truncated(self, nid: str, removed, known_commit: int) -> None:
        """A write on ``nid``'s disk dropped ``removed`` (entries it did not write back);
        ``known_commit`` is the highest index ``nid`` knows is committed."""
        if not removed:
            return
        terms = self.committed_terms
        top = len(terms) - 1
        for e in removed:
            if e.index <= min(top, known_commit) and terms[e.index] == e.term:
                raise Violation(
                    "committed_kept",
                    f"{nid}'s disk dropped entry {e.index} (term {e.term}), which it knew was "
                    f"committed (its commit index: {known_commit})",
                )

    def on_follower_step(self, nid: str, m: Message, before: int, after: int) -> None:
        """Stepping leader message ``m`` moved ``nid``'s commit index ``before`` -> ``after``."""
        if after <= before:
            return
        t = m.type
        if t is MsgType.APPEND:
            bound = min(m.commit, m.index + len(m.entries))
        elif t is MsgType.HEARTBEAT:
            bound = m.commit
        elif t is MsgType.SNAPSHOT and m.snapshot is not None:
            bound = m.snapshot.meta.index
        else:
            return  # only a leader's messages move a follower's commit index
        if after > bound:
            raise Violation(
                "follower_commit_rule",
                f"{nid} moved its commit index {before} -> {after} on {t.name} from {m.frm} "
                f"(prev={m.index}, {len(m.entries)} entries, leader commit {m.commit}): at most "
                f"{max(before, bound)} is allowed",
            )

    def on_read_start(self, context: bytes) -> None:
        self._reads[context] = self.max_commit

    def on_read_state(self, nid: str, rs: ReadState) -> None:
        need = self._reads.get(rs.context)
        if need is not None and rs.index < need:
            raise Violation(
                "read_linearizable",
                f"{nid} got read index {rs.index} for {rs.context!r}, but index {need} was "
                "committed before the read began",
            )

    def on_read_served(self, nid: str, context: bytes, applied: int) -> None:
        need = self._reads.get(context)
        if need is not None and applied < need:
            raise Violation(
                "read_linearizable",
                f"{nid} served read {context!r} at applied index {applied}, missing writes up to "
                f"{need} committed before the read began",
            )
