"""The core's Ready says which messages may leave before its save (``early_types``) and whether
it is commit-only; the runtime and the simulator only honour that (issue 19).

Each test drives a real cluster to the situation and checks the Ready the core hands out.
"""

from __future__ import annotations

from saltext_raft.core import MsgType
from saltext_raft.core import Role
from tests.unit.core.cluster import Cluster


def _elected():
    c = Cluster()
    c.elect("a")
    c.stabilize()
    assert c.nodes["a"].role is Role.LEADER
    return c


def test_a_leaders_appends_leave_before_its_save_once_its_vote_is_saved():
    c = _elected()
    leader = c.nodes["a"]
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and not rd.commit_only
    now, later = rd.split()
    assert {m.type for m in now} == {MsgType.APPEND}
    assert not later
    assert now == [m for m in rd.messages if m.type is MsgType.APPEND]


def test_a_followers_acknowledgements_wait_for_the_save():
    c = _elected()
    c.nodes["a"].propose(b"x")
    c.process("a")
    append = next(m for m in c.net if m.to == "b" and m.type is MsgType.APPEND)
    c.net.remove(append)
    follower = c.nodes["b"]
    follower.step(append)
    rd = follower.ready()
    assert rd.entries and not rd.commit_only and not rd.early_types
    now, later = rd.split()
    assert now == [] and [m.type for m in later] == [MsgType.APPEND_RESP]


def test_votes_and_a_new_term_wait_for_the_save_even_on_the_new_leader():
    c = Cluster(pre_vote=False)
    candidate = c.nodes["b"]
    candidate.campaign()
    rd = candidate.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == "b"
    assert not rd.early_types and not rd.commit_only
    assert rd.split()[0] == []
    assert {m.type for m in rd.messages} == {MsgType.VOTE}


def test_a_commit_index_alone_is_commit_only_and_everything_may_leave():
    c2 = _elected()
    lead2 = c2.nodes["a"]
    lead2.propose(b"x")
    c2.process("a")
    for m in [m for m in c2.net if m.type is MsgType.APPEND]:
        c2.net.remove(m)
        c2.nodes[m.to].step(m)
        c2.process(m.to)
    ack = next(m for m in c2.net if m.type is MsgType.APPEND_RESP)
    c2.net.remove(ack)
    lead2.step(ack)
    rd = lead2.ready()
    assert rd.hard_state is not None and not rd.entries and rd.snapshot is None
    assert rd.commit_only and rd.committed_entries
    assert rd.split()[1] == []
