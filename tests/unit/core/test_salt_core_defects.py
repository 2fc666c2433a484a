"""Regression tests, one per defect of Salt 3008's core Raft that applies to a core.

The defect list is in ../shared/SALT-NOTES.md ("Its defects"); each test names the defect it
prevents and fails on a core that has it. Defects 9-11 (storage rewrite, no authentication,
gate never closing) belong to storage, transport and the Salt gate and are tested there.
"""

import random

from saltext_raft.core import Config
from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core import ProposalDropped
from saltext_raft.core import RaftNode
from saltext_raft.core import Role
from tests.unit.core.cluster import PAPER_TIMING
from tests.unit.core.cluster import Cluster


def test_defect_1_learner_acks_never_count_toward_commit():
    c = Cluster(ids=("a", "b", "c"), auto_promote=False)
    leader = c.elect("a")
    for nid in ("d", "e"):
        c.add_fresh(nid)
        leader.propose_conf_change(ConfOp.ADD_LEARNER, nid)
        c.stabilize()
    # the two voters b and c are cut off; only learners d and e receive the entry
    c.dropped = {("a", "b"), ("a", "c")}
    idx = leader.propose(b"v")
    c.stabilize()
    assert c.nodes["d"].last_index >= idx and c.nodes["e"].last_index >= idx
    assert leader.commit_index < idx, "a learner's ack counted toward the commit quorum"


def test_defect_2_full_cluster_restart_commits_without_a_client_write():
    c = Cluster()
    leader = c.elect("a")
    leader.propose(b"before")
    c.stabilize()
    committed = leader.commit_index
    for nid in "abc":
        c.crash(nid)
    for nid in "abc":
        c.restart(nid)
        # the commit index was persisted: the restarted node knows it and re-applies at once
        assert c.nodes[nid].commit_index == committed
        assert c.applied[nid] == [b"before"]
    for _ in range(40):
        c.tick()
        c.stabilize()
        if c.leaders():
            break
    (new,) = c.leaders()
    c.stabilize()
    # the new leader's empty entry commits by itself, so the cluster is ready with no write
    assert new.commit_index == new.last_index > committed
    assert new.term_at(new.commit_index) == new.term


def test_defect_3_follower_commits_only_what_the_append_proves():
    b = RaftNode(Config("b", **PAPER_TIMING), random.Random(1))
    b.step(
        Message(
            MsgType.APPEND,
            "b",
            "a",
            1,
            index=0,
            log_term=0,
            entries=[Entry(1, 1, 0, b"x")],
            commit=0,
        )
    )
    b.advance(b.ready())
    # b holds stale entries 2..4 of term 1 that the leader of term 2 does not have
    b.log.append([Entry(1, i, 0, b"stale") for i in (2, 3, 4)])
    b.log.stable = 4
    # an append (prev = 1) from the term-2 leader with commit 4 and no entries
    b.step(Message(MsgType.APPEND, "b", "a", 2, index=1, log_term=1, entries=[], commit=4))
    assert b.commit_index == 1, "follower advanced commit over entries the leader never sent"


def test_defect_4_membership_after_restart_comes_from_the_log_not_static_peers():
    c = Cluster()
    leader = c.elect("a")
    c.add_fresh("d")
    leader.propose_conf_change(ConfOp.ADD_LEARNER, "d", "addr-d")
    c.stabilize()
    c.tick("a", 2)
    c.stabilize()
    leader.propose_conf_change(ConfOp.REMOVE, "b")
    c.stabilize()
    c.crash("c")
    c.restart("c")  # restart passes no peer list at all: only what storage holds
    assert c.nodes["c"].membership.voters == {"a", "c", "d"}
    assert c.nodes["c"].membership.address_of("d") == "addr-d"


def test_defect_5a_only_one_membership_change_in_flight():
    c = Cluster(auto_promote=False)
    leader = c.elect("a")
    c.dropped = {("a", "b"), ("a", "c")}  # nothing commits
    leader.propose_conf_change(ConfOp.ADD_LEARNER, "d")
    for op, nid in ((ConfOp.ADD_LEARNER, "e"), (ConfOp.REMOVE, "b"), (ConfOp.PROMOTE, "d")):
        try:
            leader.propose_conf_change(op, nid)
        except ProposalDropped:
            continue
        raise AssertionError(f"second membership change {op} {nid} accepted while one is pending")


def test_defect_5b_configuration_rolls_back_when_its_entry_is_truncated():
    c = Cluster(auto_promote=False)
    leader = c.elect("a")
    c.stabilize()
    b = c.nodes["b"]
    c.dropped = {("a", "c"), ("b", "a")}  # b receives the change, nobody acknowledges it
    leader.propose_conf_change(ConfOp.ADD_LEARNER, "d")
    c.stabilize()
    conf_idx = leader.pending_conf_index
    assert "d" in b.membership.learners
    # a leader of a later term overwrites b's entry at conf_idx with a normal entry
    b.step(
        Message(
            MsgType.APPEND,
            "b",
            "c",
            b.term + 1,
            index=conf_idx - 1,
            log_term=b.term_at(conf_idx - 1),
            entries=[Entry(b.term + 1, conf_idx, 0, b"other")],
            commit=conf_idx - 1,
        )
    )
    assert "d" not in b.membership.members
    assert b.membership.voters == {"a", "b", "c"}


def test_defect_6a_stale_replies_from_older_terms_are_ignored():
    c = Cluster()
    leader = c.elect("a")
    old_term = leader.term
    c.crash("a")
    c.restart("a")
    a = c.nodes["a"]
    a.campaign(transfer=True)  # b and c still heed a's lease: campaign as on a transfer
    c.stabilize()
    assert a.role is Role.LEADER and a.term > old_term, a.status()
    # a vote grant and an append ack from the old term must not change anything
    before = a.status()
    a.step(Message(MsgType.APPEND_RESP, "a", "b", old_term, index=10**6))
    a.step(Message(MsgType.VOTE_RESP, "a", "b", old_term))
    after = a.status()
    assert before["progress"]["b"]["match"] == after["progress"]["b"]["match"]
    assert before["commit_index"] == after["commit_index"]


def test_defect_6b_stepped_down_candidate_restarts_its_timer_and_uses_pre_vote():
    c = Cluster(election_ticks=10)
    c.elect("a")
    b = c.nodes["b"]
    b._become_candidate()
    b.election_elapsed = 9
    term = b.term
    b.step(
        Message(
            MsgType.APPEND, "b", "a", term, index=b.last_index, log_term=b.log.last_term, commit=0
        )
    )
    assert b.role is Role.FOLLOWER and b.election_elapsed == 0
    for _ in range(9):
        b.tick()
    assert b.role is Role.FOLLOWER, "stepped-down candidate's old timer started an election"
    for _ in range(2 * 10):  # the randomized timeout is below two election timeouts
        if b.role is not Role.FOLLOWER:
            break
        b.tick()
    assert b.role is Role.PRE_CANDIDATE and b.term == term


def test_defect_7_leader_sends_install_snapshot_to_a_follower_behind_compaction():
    c = Cluster()
    leader = c.elect("a")
    c.crash("c")
    for i in range(5):
        leader.propose(b"%d" % i)
    c.stabilize()
    leader.create_snapshot(leader.applied_index, b"state")
    c.restart("c")
    c.sent.clear()
    c.tick("a", 1)
    c.stabilize()
    assert any(m.type is MsgType.SNAPSHOT and m.to == "c" for m in c.sent)
    assert c.disks["c"].snapshot is not None


def test_defect_8_appends_do_not_resend_acknowledged_entries_and_cost_is_flat():
    c = Cluster()
    leader = c.elect("a")
    c.stabilize()
    for i in range(300):
        leader.propose(b"%d" % i)
        c.stabilize()
    c.sent.clear()
    leader.propose(b"last")
    c.stabilize()
    appends = [m for m in c.sent if m.type is MsgType.APPEND and m.entries]
    # exactly one new entry per follower, not the unacknowledged tail or the whole log
    assert sorted(len(m.entries) for m in appends) == [1, 1]
