"""What the runtime shows the Salt side (``RaftRuntime.view()``) and the envelope parser.

The engine's readiness and ``raft.members`` read a node only through ``view()``; these tests
pin what it says on a leader, on a follower and before start, against the core node itself.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import envelope
from tests.unit.runtime.helpers import LocalCluster


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_view_on_the_leader_shows_each_followers_replication_and_the_committed_membership():
    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            await leader.propose(DictStateMachine.set_command(b"k", b"v"))
            last = leader.node.last_index
            await c.until(
                "the leader knows every follower has its last entry",
                lambda: all(r.match == last for r in leader.view().replication.values()),
            )
            v = leader.view()
            assert v.is_leader and v.role == "leader" and v.leader == leader.id
            assert v.node_id == leader.id and v.term == leader.node.term
            assert v.commit_index == leader.node.commit_index and v.last_index == last
            assert set(v.replication) == {"n1", "n2", "n3"} - {leader.id}
            assert leader.id not in v.replication
            assert v.membership.voters == {"n1", "n2", "n3"}
            index, committed = leader.node.membership_at(leader.node.commit_index)
            assert (v.committed_index, v.committed) == (index, committed)
            with pytest.raises(dataclasses.FrozenInstanceError):
                v.term = 0  # a copy, not a handle on the core

    run(main())


def test_view_on_a_follower_has_no_replication_and_names_the_leader():
    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            await c.until("the follower knows the leader", lambda: follower.view().leader)
            v = follower.view()
            assert v.role == "follower" and not v.is_leader
            assert v.leader == leader.id and v.replication == {}

    run(main())


def test_view_is_none_before_start():
    c = LocalCluster()
    assert c.make("n1").view() is None


def test_envelope_split_gives_the_sequence_only_for_this_boots_own_entries():
    mine = envelope.prefix("n1", b"\x01" * envelope.NONCE_BYTES)
    earlier_boot = envelope.prefix("n1", b"\x02" * envelope.NONCE_BYTES)
    other = envelope.prefix("n2", b"\x01" * envelope.NONCE_BYTES)
    assert envelope.split(mine, envelope.wrap(mine, 7, b"payload")) == (7, b"payload")
    assert envelope.split(mine, envelope.wrap(mine, 2**64 - 1, b"")) == (2**64 - 1, b"")
    assert envelope.split(mine, envelope.wrap(earlier_boot, 7, b"p")) == (None, b"p")
    assert envelope.split(mine, envelope.wrap(other, 7, b"p")) == (None, b"p")
    assert envelope.split(mine, b"no envelope") == (None, b"no envelope")
