"""force_new_cluster: the entry and hard state that make one node the only voter after a
permanent loss of quorum, keeping its whole log."""

from __future__ import annotations

import random

import pytest

from saltext_raft.core import ConfChange
from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.core import HardState
from saltext_raft.core import Membership
from saltext_raft.core import RaftError
from saltext_raft.core import RaftNode
from saltext_raft.core import Role
from saltext_raft.core import SnapshotMeta
from saltext_raft.core.recovery import force_new_cluster
from saltext_raft.runtime import default_core_config

ADDRS = {"n1": "10.0.0.1:4606", "n2": "10.0.0.2:4606", "n3": "10.0.0.3:4606", "n4": "h4:1"}


def conf(term, index, op, voters, learners=(), node="", address=""):
    members = set(voters) | set(learners)
    result = Membership(
        voters=frozenset(voters),
        learners=frozenset(learners),
        addresses=tuple(sorted((n, ADDRS[n]) for n in members)),
    )
    return Entry(term, index, EntryKind.CONF, ConfChange(op, node, address, result).encode())


def three_voters_and_a_learner():
    """n1's log: bootstrap of n1-n3, writes, n4 added as learner; commit stops at 4 of 6."""
    return [
        conf(1, 1, ConfOp.BOOTSTRAP, {"n1", "n2", "n3"}),
        Entry(2, 2, data=b"a"),
        Entry(2, 3, data=b"b"),
        conf(2, 4, ConfOp.ADD_LEARNER, {"n1", "n2", "n3"}, {"n4"}, "n4", ADDRS["n4"]),
        Entry(3, 5, data=b"c"),
        Entry(3, 6, data=b"d"),
    ]


def test_the_node_becomes_the_only_voter_and_its_whole_log_counts_as_committed():
    entries = three_voters_and_a_learner()
    rec = force_new_cluster("n1", HardState(3, "n2", 4), None, entries)
    assert rec.entry.index == 7 and rec.entry.kind == EntryKind.CONF
    assert rec.entry.term == 4  # one past the highest term seen
    cc = ConfChange.decode(rec.entry.data)
    assert cc.op is ConfOp.FORCE_NEW_CLUSTER and cc.node_id == "n1"
    assert cc.result == rec.membership
    assert rec.membership.voters == {"n1"} and not rec.membership.learners  # n4 dropped too
    assert rec.membership.address_of("n1") == ADDRS["n1"]  # kept from the log
    assert rec.previous.voters == {"n1", "n2", "n3"} and rec.previous.learners == {"n4"}
    assert rec.hard_state == HardState(4, "n1", 7)
    assert (rec.previous_commit, rec.uncommitted) == (4, 2)
    summary = rec.summary()
    assert summary["entries_committed_by_recovery"] == 2 and summary["commit_index"] == 7
    assert summary["membership"]["voters"] == ["n1"]


def test_a_restarted_node_elects_itself_and_applies_every_entry():
    entries = three_voters_and_a_learner()
    rec = force_new_cluster("n1", HardState(3, "n2", 4), None, entries)
    node = RaftNode(
        default_core_config("n1"),
        random.Random(1),
        hard_state=rec.hard_state,
        entries=[*entries, rec.entry],
    )
    assert node.membership.voters == {"n1"} and node.commit_index == 7
    applied = []
    for _ in range(200):  # bounded: a lone voter wins its first election
        node.tick()
        while node.has_ready():
            rd = node.ready()
            applied.extend(e.index for e in rd.committed_entries)
            node.advance(rd)
        if node.role is Role.LEADER and node.commit_index > 7:
            break
    assert node.role is Role.LEADER and node.term > rec.hard_state.term
    assert applied[:7] == [1, 2, 3, 4, 5, 6, 7]  # the entries past the old commit index too
    assert node.commit_index == 8  # the new leader's empty entry committed on its own vote


def test_an_explicit_address_replaces_the_recorded_one():
    rec = force_new_cluster(
        "n1", HardState(3, "n1", 6), None, three_voters_and_a_learner(), "new:9"
    )
    assert rec.membership.addresses == (("n1", "new:9"),)


def test_a_learner_can_be_the_survivor():
    rec = force_new_cluster("n4", HardState(3, "n1", 6), None, three_voters_and_a_learner())
    assert rec.membership.voters == {"n4"} and rec.membership.address_of("n4") == ADDRS["n4"]


def test_a_compacted_log_takes_the_membership_from_the_snapshot():
    meta = SnapshotMeta(
        10, 5, Membership(voters=frozenset({"n1", "n2", "n3"}), addresses=(("n1", "a:1"),))
    )
    rec = force_new_cluster("n1", HardState(5, "", 10), meta, [])
    assert rec.entry.index == 11 and rec.entry.term == 6
    assert rec.previous == meta.membership and rec.uncommitted == 0
    with_tail = force_new_cluster("n1", HardState(5, "", 10), meta, [Entry(5, 11, data=b"x")])
    assert with_tail.entry.index == 12 and with_tail.uncommitted == 1


def test_the_term_is_above_the_last_entry_even_if_the_hard_state_lags():
    entries = three_voters_and_a_learner()
    assert force_new_cluster("n1", HardState(1, "", 1), None, entries).entry.term == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hard_state": HardState()}, "holds no log and no snapshot"),
        ({"entries": [Entry(1, 1, data=b"x")]}, "no address for n1"),
        (
            {"hard_state": HardState(2, "", 9), "entries": three_voters_and_a_learner()},
            "commit index 9 is beyond the last stored entry 6",
        ),
        (
            {"snapshot": SnapshotMeta(3, 1), "entries": [Entry(1, 5, data=b"x")]},
            "start at 5 but the snapshot ends at 3",
        ),
        ({"node_id": ""}, "a node id is required"),
    ],
)
def test_refuses_with_a_reason(kwargs, message):
    args = {"node_id": "n1", "hard_state": HardState(), "snapshot": None, "entries": []}
    args.update(kwargs)
    with pytest.raises(RaftError, match=message):
        force_new_cluster(**args)


def test_nodes_removed_before_the_recovery_stay_removed():
    """A tombstone (issue 18, M3) survives force_new_cluster: a master removed before the loss
    of quorum may still not add itself back by JOIN afterwards."""
    removed = Membership(
        voters=frozenset({"n1", "n2", "n3"}),
        addresses=tuple(sorted((n, ADDRS[n]) for n in ("n1", "n2", "n3"))),
        removed=(("n4", 5),),
    )
    entries = [
        conf(1, 1, ConfOp.BOOTSTRAP, {"n1", "n2", "n3", "n4"}),
        Entry(1, 5, EntryKind.CONF, ConfChange(ConfOp.REMOVE, "n4", "", removed).encode()),
    ]
    entries = [entries[0], *(Entry(1, i, data=b"x") for i in (2, 3, 4)), entries[1]]
    rec = force_new_cluster("n1", HardState(1, "n1", 5), None, entries)
    assert rec.membership.voters == {"n1"} and rec.membership.removed_at("n4") == 5
