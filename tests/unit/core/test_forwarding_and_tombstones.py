"""Core rules behind issue 17 part 3 (forwarded proposals are bound to the term they were sent
in; no relay by a node that is not the leader) and issue 18 M3 (removed ids are tombstoned)."""

from __future__ import annotations

import pytest

from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core.types import MAX_TOMBSTONES
from saltext_raft.core.types import Membership
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.transport import codec
from tests.unit.core.cluster import Cluster


def _propose(to: str, frm: str, tag: int, data: bytes) -> Message:
    return Message(MsgType.PROPOSE, to, frm, 0, log_term=tag, entries=(Entry(0, 0, 0, data),))


def test_a_forwarded_proposal_carries_the_term_it_was_sent_in():
    c = Cluster()
    leader = c.elect("a")
    c.nodes["b"].propose(b"p")
    sent = [m for m in c.nodes["b"].ready().messages if m.type is MsgType.PROPOSE]
    assert [(m.to, m.log_term) for m in sent] == [("a", leader.term)]


@pytest.mark.parametrize("tag,appended", [("same", True), ("older", False), ("untagged", True)])
def test_a_leader_appends_a_forwarded_proposal_only_in_the_term_it_was_sent_in(tag, appended):
    c = Cluster()
    leader = c.elect("a")
    term = {"same": leader.term, "older": leader.term - 1, "untagged": 0}[tag]
    before = leader.last_index
    leader.step(_propose("a", "b", term, b"p"))
    assert (leader.last_index == before + 1) is appended


def test_a_node_that_is_not_the_leader_drops_forwarded_requests_instead_of_relaying_them():
    """Before, it relayed them to its leader under the original sender's id, which an
    authenticated transport drops (``unencodable (message claims to be from ...)``)."""
    c = Cluster()
    c.elect("a")
    follower = c.nodes["b"]
    for m in (
        _propose("b", "c", follower.term, b"p"),
        Message(MsgType.READ_INDEX, "b", "c", 0, context=b"ctx"),
        Message(MsgType.TRANSFER_LEADER, "b", "c", 0, context=b"c"),
    ):
        follower.step(m)
    assert not follower.has_ready() or not follower.ready().messages


def test_remove_tombstones_the_node_with_its_entry_index_and_add_clears_it():
    c = Cluster(ids=("a", "b", "c", "d"))
    leader = c.elect("a")
    index = leader.propose_conf_change(ConfOp.REMOVE, "d")
    assert leader.membership.removed == (("d", index),)
    c.stabilize()
    assert all(n.membership.removed_at("d") == index for n in c.nodes.values())
    leader.propose_conf_change(ConfOp.DEMOTE, "c")  # other changes keep it
    c.stabilize()
    assert leader.membership.removed_at("d") == index
    leader.propose_conf_change(ConfOp.ADD_LEARNER, "d", "addr-d")
    assert leader.membership.removed == () and "d" in leader.membership.learners


def test_tombstones_are_capped_to_the_newest():
    m = Membership(voters=frozenset({"a"}))
    removed = m.removed
    for i in range(MAX_TOMBSTONES + 5):
        removed = Membership(voters=m.voters, removed=removed).with_removed(f"n{i}", i + 10)
    kept = dict(removed)
    assert len(kept) == MAX_TOMBSTONES and "n0" not in kept and f"n{MAX_TOMBSTONES + 4}" in kept


def test_a_tombstoned_id_cannot_be_a_member():
    with pytest.raises(ValueError, match="removed ids"):
        Membership(voters=frozenset({"a"}), removed=(("a", 3),))


def test_snapshot_meta_carries_tombstones_and_an_older_meta_without_them_still_decodes():
    meta = SnapshotMeta(
        7, 2, Membership(voters=frozenset({"a"}), addresses=(("a", "x"),), removed=(("b", 5),))
    )
    msg = Message(MsgType.SNAPSHOT, "b", "a", 2, snapshot=SnapshotChunk(meta, 0, b"", True, 0))
    assert codec.decode_message(codec.encode_message(msg)).snapshot.meta == meta
    fields = codec.msgpack.unpackb(codec.encode_message(msg), use_list=True)
    fields[-1][0] = fields[-1][0][:6]  # the meta as a node from before tombstones sends it
    old = codec.decode_message(codec.msgpack.packb(fields))
    assert old.snapshot.meta.membership.removed == ()
    assert Membership.from_dict(meta.membership.to_dict()) == meta.membership


def test_a_leader_drops_forwarded_requests_from_a_node_it_removed():
    """A removed follower never campaigns, so it keeps its last leader and kept forwarding
    its clients' proposals to it in the same term; the leader appended and committed them: a
    removed master still wrote into the cluster, and its client was told ``timeout``."""
    c = Cluster()
    leader = c.elect("a")
    leader.propose_conf_change(ConfOp.REMOVE, "c")
    c.stabilize()
    assert "c" not in leader.membership.members and c.nodes["c"].leader == "a"
    removed_term = c.nodes["c"].term
    before = leader.last_index
    leader.step(_propose("a", "c", removed_term, b"ghost"))
    leader.step(Message(MsgType.TRANSFER_LEADER, "a", "c", 0, context=b"b"))
    assert leader.last_index == before and not leader.lead_transferee
    leader.step(_propose("a", "b", leader.term, b"member"))  # a member is still served
    assert leader.last_index == before + 1


def test_a_removed_node_that_was_down_gets_its_removal_after_a_later_membership_change():
    """The usual replacement of a dead master: remove it, then add (or change) another. The
    leader dropped the removed node's progress at the next configuration entry, so when it came
    back it never got its removal: it still thought it was a voter, never logged that it was
    removed and kept campaigning. The leader now keeps replicating to it until it has it."""
    c = Cluster(ids=("a", "b", "c", "d"))
    leader = c.elect("a")
    c.crash("d")
    index = leader.propose_conf_change(ConfOp.REMOVE, "d")
    c.stabilize()
    leader.propose_conf_change(ConfOp.DEMOTE, "c")  # the next change, while d is still down
    c.stabilize()
    assert "c" in leader.membership.learners and leader.membership.removed_at("d") == index
    c.restart("d")
    for _ in range(3):  # a few heartbeat rounds
        c.tick("a", leader.cfg.heartbeat_ticks)
        c.stabilize()
    gone = c.nodes["d"]
    assert gone.membership.removed_at("d") == index and not gone.is_voter
    assert "d" not in leader.progress  # and then the leader is done with it
