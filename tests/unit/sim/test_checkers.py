"""Each invariant checker catches a hand-made violation, and accepts the matching good history.

The histories are fabricated: fake node views (``View``) and fake disks, fed to ``Checkers``
the way the simulator feeds them, so a checker that stops looking is caught here even when
the core is correct and the simulator runs clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

import pytest

from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import ReadState
from saltext_raft.core.types import Role
from saltext_raft.sim.checkers import Checkers
from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.model import Disk
from saltext_raft.sim.model import StateMachine

VOTERS3 = Membership(voters=frozenset({"a", "b", "c"}))


@dataclass
class View:
    """What the checkers read from a node; ``log`` maps index -> term."""

    id: str
    role: Role = Role.FOLLOWER
    term: int = 1
    commit_index: int = 0
    log: dict = field(default_factory=dict)
    first_index: int = 1
    membership: Membership = VOTERS3

    @property
    def last_index(self) -> int:
        return max(self.log, default=self.first_index - 1)

    def term_at(self, i: int):
        return self.log.get(i)


def leader(nid="a", term=2, log=None, commit=0, membership=VOTERS3):
    return View(nid, Role.LEADER, term, commit, dict(log or {1: 1}), membership=membership)


def disk_with(*terms) -> Disk:
    d = Disk()
    d.append([Entry(t, i + 1) for i, t in enumerate(terms)])
    return d


def grant(c: Checkers, frm: str, to: str, term: int) -> None:
    c.on_deliver(Message(MsgType.VOTE_RESP, to=to, frm=frm, term=term))


def elected(c: Checkers, nid: str, term: int, *voters: str) -> None:
    for v in voters:
        grant(c, v, nid, term)


def raises(invariant: str):
    return pytest.raises(Violation, match=rf"^{invariant}:")


# --- election safety ------------------------------------------------------------------------
def test_election_safety_two_leaders_in_one_term():
    c = Checkers()
    elected(c, "a", 2, "b")
    elected(c, "b", 2, "c")
    c.on_node(leader("a", 2))
    with raises("election_safety"):
        c.on_node(leader("b", 2))


def test_election_safety_allows_one_leader_per_term():
    c = Checkers()
    elected(c, "a", 2, "b")
    elected(c, "b", 3, "c")
    c.on_node(leader("a", 2))
    c.on_node(leader("b", 3))
    c.on_node(leader("a", 2))  # a stale leader of an older term is still that term's leader
    assert c.leaders == {2: "a", 3: "b"}


# --- votes: learners never count, a leader is a voter -------------------------------------------
def test_vote_quorum_rejects_learner_votes():
    m = Membership(voters=frozenset({"a", "b", "c"}), learners=frozenset({"d", "e"}))
    c = Checkers()
    elected(c, "a", 2, "d", "e")  # two learners granted: not a quorum of voters
    with raises("vote_quorum"):
        c.on_node(leader("a", 2, membership=m))


def test_learner_never_leads():
    m = Membership(voters=frozenset({"b", "c"}), learners=frozenset({"a"}))
    c = Checkers()
    elected(c, "a", 2, "b", "c")
    with raises("learner_never_leads"):
        c.on_node(leader("a", 2, membership=m))


# --- leader append-only -----------------------------------------------------------------------
def test_leader_append_only_catches_overwrite():
    c = Checkers()
    elected(c, "a", 2, "b")
    c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 2}))
    with raises("leader_append_only"):
        c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 1}))


def test_leader_append_only_catches_truncation():
    c = Checkers()
    elected(c, "a", 2, "b")
    c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 2}))
    with raises("leader_append_only"):
        c.on_node(leader("a", 2, {1: 1, 2: 2}))


def test_leader_append_only_allows_appends_and_a_new_term():
    c = Checkers()
    elected(c, "a", 2, "b")
    elected(c, "a", 4, "b")
    c.on_node(leader("a", 2, {1: 1, 2: 2}))
    c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 2}))
    c.on_node(leader("a", 4, {1: 1, 2: 2, 3: 4}))  # a new term may start from another log


# --- log matching -----------------------------------------------------------------------------
def test_log_matching_same_index_and_term_different_data():
    c = Checkers()
    c.on_persist_entries("a", [Entry(2, 5, data=b"x")], 1)
    with raises("log_matching"):
        c.on_persist_entries("b", [Entry(2, 5, data=b"y")], 1)


def test_log_matching_same_entry_different_history():
    c = Checkers()
    c.on_persist_entries("a", [Entry(2, 5, data=b"x")], 1)
    with raises("log_matching"):
        c.on_persist_entries("b", [Entry(2, 5, data=b"x")], 2)  # predecessor of another term


def test_log_matching_accepts_identical_entries():
    c = Checkers()
    c.on_persist_entries("a", [Entry(1, 4), Entry(2, 5, data=b"x")], 1)
    c.on_persist_entries("b", [Entry(2, 5, data=b"x")], 1)


def test_disk_suffix_replacement_reports_predecessor_term():
    d = disk_with(1, 1, 2, 2)
    prev = d.append([Entry(3, 3, EntryKind.CONF, b"{}")])
    assert prev == 1 and d.last_index == 3 and d.conf_indices == [3]


# --- leader completeness and committed agreement -------------------------------------------------
def test_leader_completeness_new_leader_lacks_committed_entry():
    c = Checkers()
    c.on_node(View("b", commit_index=3, log={1: 1, 2: 1, 3: 1}))
    elected(c, "a", 2, "c")
    with raises("leader_completeness"):
        c.on_node(leader("a", 2, {1: 1, 2: 1}))


def test_leader_completeness_entry_of_other_term_at_committed_index():
    c = Checkers()
    c.on_node(View("b", commit_index=3, log={1: 1, 2: 1, 3: 1}))
    elected(c, "a", 3, "c")
    with raises("leader_completeness"):
        c.on_node(leader("a", 3, {1: 1, 2: 1, 3: 2}))


def test_committed_agreement_two_nodes_disagree():
    c = Checkers()
    c.on_node(View("a", commit_index=2, log={1: 1, 2: 1}))
    with raises("committed_agreement"):
        c.on_node(View("b", commit_index=2, log={1: 1, 2: 2}))


# --- commit index -----------------------------------------------------------------------------
def test_commit_never_decreases_in_memory():
    c = Checkers()
    c.on_node(View("a", commit_index=3, log={1: 1, 2: 1, 3: 1}))
    with raises("commit_monotonic"):
        c.on_node(View("a", commit_index=2, log={1: 1, 2: 1, 3: 1}))


def test_commit_never_decreases_on_disk():
    c = Checkers()
    with raises("commit_monotonic"):
        c.on_persist_hard_state("a", HardState(2, "a", 5), HardState(2, "a", 4))


def test_restart_starts_from_persisted_commit():
    c = Checkers()
    c.on_node(View("a", commit_index=5, log=dict.fromkeys(range(1, 6), 1)))
    c.on_crash("a")
    # the in-memory commit of the old incarnation may be lost; the persisted one may not
    c.on_restart(View("a", commit_index=4, log=dict.fromkeys(range(1, 6), 1)), HardState(1, "", 4))
    with raises("commit_monotonic"):
        c.on_restart(View("a", commit_index=3, log={1: 1}), HardState(1, "", 4))


def test_hard_state_vote_changes_within_a_term():
    c = Checkers()
    with raises("hard_state"):
        c.on_persist_hard_state("a", HardState(3, "b", 0), HardState(3, "c", 0))


def test_leader_commits_only_current_term_entries():
    c = Checkers()
    elected(c, "a", 3, "b")
    c.on_node(leader("a", 3, {1: 1, 2: 2, 3: 3}, commit=1))
    with raises("leader_commit_term"):
        c.on_node(leader("a", 3, {1: 1, 2: 2, 3: 3}, commit=2))


def test_commit_durable_needs_a_majority_of_voters_on_disk():
    disks = {"a": disk_with(1, 2), "b": disk_with(1), "c": disk_with(1), "d": disk_with(1, 2)}
    m = Membership(voters=frozenset({"a", "b", "c"}), learners=frozenset({"d"}))
    c = Checkers(disks)
    elected(c, "a", 2, "b")
    c.on_node(leader("a", 2, {1: 1, 2: 2}, commit=1, membership=m))
    with raises("commit_durable"):  # only a and the learner d hold entry 2
        c.on_node(leader("a", 2, {1: 1, 2: 2}, commit=2, membership=m))
    disks["b"].append([Entry(2, 2)])
    c.on_node(leader("a", 2, {1: 1, 2: 2}, commit=2, membership=m))


# --- state machines ---------------------------------------------------------------------------
def _apply(c: Checkers, nid: str, sm: StateMachine, entry: Entry) -> None:
    c.on_apply_order(nid, sm.applied, entry)
    sm.apply(entry)
    c.on_apply(nid, entry, sm.chain)


def test_state_machine_safety_different_entries_at_one_index():
    c = Checkers()
    a, b = StateMachine(), StateMachine()
    _apply(c, "a", a, Entry(1, 1, data=b"x"))
    with raises("state_machine_safety"):
        _apply(c, "b", b, Entry(1, 1, data=b"y"))


def test_state_machine_safety_different_history_same_last_entry():
    c = Checkers()
    a, b = StateMachine(), StateMachine()
    _apply(c, "a", a, Entry(1, 1, data=b"x"))
    _apply(c, "a", a, Entry(1, 2, data=b"z"))
    b.apply(Entry(1, 1, data=b"other"))  # b's first apply is not reported: history diverged
    with raises("state_machine_safety"):
        c.on_apply("b", Entry(1, 2, data=b"z"), (b.apply(Entry(1, 2, data=b"z")), b.chain)[1])


def test_state_machine_safety_apply_out_of_order():
    c = Checkers()
    with raises("state_machine_safety"):
        c.on_apply_order("a", 3, Entry(1, 5))


def test_state_machine_safety_snapshot_contents():
    c = Checkers()
    a = StateMachine()
    _apply(c, "a", a, Entry(1, 1, data=b"x"))
    good = StateMachine.decode(a.encode())
    c.on_restore("b", 1, good.chain)
    with raises("state_machine_safety"):
        c.on_restore("b", 1, good.chain ^ 1)


# --- single pending membership change ----------------------------------------------------------
def test_single_pending_conf_two_uncommitted_changes():
    d = Disk()
    d.append([Entry(1, 1, EntryKind.CONF), Entry(2, 2), Entry(2, 3, EntryKind.CONF)])
    c = Checkers({"a": d})
    elected(c, "a", 2, "b")
    c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 2}, commit=1))  # one pending: fine
    d.append([Entry(2, 4, EntryKind.CONF)])
    with raises("single_pending_conf"):
        c.on_node(leader("a", 2, {1: 1, 2: 2, 3: 2, 4: 2}, commit=1))


# --- ReadIndex --------------------------------------------------------------------------------
def test_read_index_below_commit_at_read_start():
    c = Checkers()
    c.on_node(View("b", commit_index=4, log=dict.fromkeys(range(1, 5), 1)))
    c.on_read_start(b"r1")
    with raises("read_linearizable"):
        c.on_read_state("a", ReadState(3, b"r1"))


def test_read_served_before_applying_earlier_writes():
    c = Checkers()
    c.on_node(View("b", commit_index=4, log=dict.fromkeys(range(1, 5), 1)))
    c.on_read_start(b"r1")
    c.on_read_state("a", ReadState(4, b"r1"))
    c.on_read_served("a", b"r1", 4)
    with raises("read_linearizable"):
        c.on_read_served("a", b"r1", 3)


# --- durable when sent ----------------------------------------------------------------------
def test_durable_when_sent_vote_grant_needs_the_vote_on_disk():
    c = Checkers()
    d = Disk()
    d.hs = HardState(term=3, vote="")
    vote = Message(MsgType.VOTE_RESP, to="b", frm="a", term=3)
    with raises("durable_when_sent"):
        c.on_send("a", vote, d, None)
    d.hs = HardState(term=3, vote="c")  # a vote for someone else is no better
    with raises("durable_when_sent"):
        c.on_send("a", vote, d, None)
    d.hs = HardState(term=3, vote="b")
    c.on_send("a", vote, d, None)
    d.hs = HardState(term=4, vote="")  # a later term on disk: no second vote in term 3 possible
    c.on_send("a", vote, d, None)
    c.on_send("a", Message(MsgType.VOTE_RESP, "b", "a", 3, reject=True), Disk(), None)


def test_durable_when_sent_append_ack_needs_the_entry_on_disk():
    c = Checkers()
    ack = Message(MsgType.APPEND_RESP, to="b", frm="a", term=2, index=3)
    with raises("durable_when_sent"):
        c.on_send("a", ack, disk_with(1, 1), 2)  # index 3 not written yet
    with raises("durable_when_sent"):
        c.on_send("a", ack, disk_with(1, 1, 1), 2)  # index 3 holds an older term's entry
    c.on_send("a", ack, disk_with(1, 1, 2), 2)
    c.on_send("a", Message(MsgType.APPEND_RESP, "b", "a", 2, index=3, reject=True), Disk(), 2)


def test_durable_when_sent_complete_snapshot_ack_needs_the_snapshot_on_disk():
    c = Checkers()
    ack = Message(MsgType.SNAPSHOT_RESP, to="b", frm="a", term=2, log_term=5, index=40, commit=5)
    with raises("durable_when_sent"):
        c.on_send("a", ack, disk_with(1, 1), None)
    c.on_send("a", ack, disk_with(1, 1, 2, 2, 2), None)
    partial = Message(MsgType.SNAPSHOT_RESP, to="b", frm="a", term=2, log_term=5, index=16)
    c.on_send("a", partial, Disk(), None)  # a byte count promises nothing


# --- committed kept -------------------------------------------------------------------------
def test_committed_kept_a_node_never_drops_an_entry_it_knows_is_committed():
    c = Checkers()
    c.on_node(View("a", commit_index=2, log={1: 1, 2: 1}))
    d = disk_with(1, 1, 1)
    d.append([Entry(2, 3)])  # uncommitted entry 3 replaced: fine
    c.on_disk_truncated("b", d.truncated, 2)
    assert [e.index for e in d.truncated] == [3]
    d.append([Entry(2, 2)])  # committed entry 2 (term 1) replaced, and b knew it
    with raises("committed_kept"):
        c.on_disk_truncated("b", d.truncated, 2)


def test_committed_kept_allows_an_older_leader_to_overwrite_a_copy_its_node_never_saw_committed():
    """sim-long seed 11492: entry 9 (term 2) was committed in term 5 without node b; a leader
    of term 4 (legitimately elected before term 5) overwrote b's copy. b never knew 9 was
    committed (its commit index was 8) and b's term was below 5, so this is Raft, not a bug."""
    c = Checkers()
    c.on_node(View("a", commit_index=2, log={1: 1, 2: 1}))
    d = disk_with(1, 1, 1)
    d.append([Entry(2, 2)])
    c.on_disk_truncated("b", d.truncated, 1)


def test_disk_rewriting_the_same_entries_drops_nothing():
    d = disk_with(1, 1, 1)
    assert d.append([Entry(1, 2), Entry(1, 3), Entry(2, 4)]) == 1  # only entry 4 is written
    assert d.truncated == [] and d.last_index == 4


# --- follower commit rule -------------------------------------------------------------------
def test_follower_commit_rule_bounds_commit_by_the_appends_last_entry():
    c = Checkers()
    app = Message(MsgType.APPEND, "b", "a", 2, log_term=1, index=3, entries=[Entry(2, 4)], commit=9)
    c.on_follower_step("b", app, 2, 4)
    with raises("follower_commit_rule"):
        c.on_follower_step("b", app, 2, 5)  # its own entry 5 was never shown to match
    hb = Message(MsgType.HEARTBEAT, "b", "a", 2, commit=4)
    c.on_follower_step("b", hb, 2, 4)
    with raises("follower_commit_rule"):
        c.on_follower_step("b", hb, 2, 5)
    c.on_follower_step("b", Message(MsgType.APPEND_RESP, "a", "b", 2, index=5), 2, 5)  # leader


# --- match index true -----------------------------------------------------------------------
@dataclass
class _Pr:
    match: int


def test_match_index_true_a_leaders_match_index_is_on_the_followers_disk():
    b_disk = disk_with(1, 2)
    c = Checkers({"b": b_disk})
    lead = leader("a", 2, {1: 1, 2: 2, 3: 2})
    lead.progress = {"a": _Pr(3), "b": _Pr(2)}
    c.on_leader_progress(lead, lambda nid: 2)
    lead.progress["b"] = _Pr(3)  # b never wrote entry 3 (an inflated acknowledgement)
    with raises("match_index_true"):
        c.on_leader_progress(lead, lambda nid: 2)


def test_match_index_true_ignores_a_follower_in_a_later_term():
    b_disk = disk_with(1, 3)  # a newer leader overwrote entry 2
    c = Checkers({"b": b_disk})
    lead = leader("a", 2, {1: 1, 2: 2})
    lead.progress = {"a": _Pr(2), "b": _Pr(2)}
    c.on_leader_progress(lead, lambda nid: 3)


def test_match_index_true_ignores_a_follower_whose_log_is_in_a_later_term():
    """KV seed 2400872: a term-3 follower acknowledged entry 3; a term-4 leader then made it
    replace entry 3 with its own, and the save failed after the entry reached the disk but
    before the hard state (term 4) did. Restarted, its term is 3 again, but its log shows it
    left term 3: the late acknowledgement reaching the term-3 leader is stale, not a lie."""
    b_disk = disk_with(1, 2, 4)  # entry 3 is term 4's: a term-4 leader wrote it
    c = Checkers({"b": b_disk})
    lead = leader("a", 2, {1: 1, 2: 2, 3: 2})
    lead.progress = {"a": _Pr(3), "b": _Pr(3)}
    c.on_leader_progress(lead, lambda nid: 2)  # b's hard state still says term 2


def test_match_index_true_still_catches_an_inflated_ack_below_a_later_term_entry():
    """The exemption needs a later term on the follower's disk, not merely a different one:
    a term-2 entry the leader never sent, at the acknowledged index, is still a lie."""
    b_disk = disk_with(1, 1, 1)
    c = Checkers({"b": b_disk})
    lead = leader("a", 2, {1: 1, 2: 2, 3: 2})
    lead.progress = {"a": _Pr(3), "b": _Pr(3)}
    with raises("match_index_true"):
        c.on_leader_progress(lead, lambda nid: 2)


def test_durable_when_sent_skips_an_ack_of_a_term_the_node_has_left():
    """Stepped while a save was in flight, a follower acknowledged index 3 of term 2, then a
    term-3 leader made it truncate index 3; the ack leaves after that save: stale, not a lie
    the term-2 leader could commit with."""
    c = Checkers()
    d = disk_with(1, 1)
    d.hs = HardState(term=3)
    c.on_send("a", Message(MsgType.APPEND_RESP, to="b", frm="a", term=2, index=3), d, None)
    d.hs = HardState(term=2)
    with raises("durable_when_sent"):
        c.on_send("a", Message(MsgType.APPEND_RESP, to="b", frm="a", term=2, index=3), d, None)
