"""Attacks on forwarded proposals and backpressure (issue 17, parts 3 and 5).

Lives here: regression tests found by trying to break the re-send of forwarded proposals and
the ``max_pending_proposals`` bound on the in-memory cluster. Must not live here: the tests of
the intended behaviour (test_forwarding.py).
"""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.runtime import CommitTimeout
from saltext_raft.runtime import NoLeader

from .helpers import LocalCluster


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_proposals_refused_without_a_leader_do_not_pile_up_in_memory():
    """A node in a minority partition keeps its clients' proposals until a leader is known or
    they time out. Before, a timed-out proposal was answered but stayed in the queue (with its
    data) for as long as no leader was known: a client retrying every timeout grew the queue
    without bound, past ``max_pending_proposals``."""

    async def main():
        limit = 5
        async with LocalCluster(max_pending_proposals=limit, request_timeout=0.05) as c:
            lone = c.nodes["n1"]
            await c.leader()
            for other in ("n2", "n3"):
                await c.stop(other)
            await c.until("no leader known", lambda: lone.node.leader == "", timeout=5.0)
            for _ in range(6):  # bounded rounds of a client retrying after each refusal
                futs = [lone.submit(b"x" * 1000) for _ in range(limit)]
                for fut in futs:
                    with pytest.raises(NoLeader):
                        await fut
                runtime = lone.status()["runtime"]
                assert runtime["waiting_proposals"] == 0
                assert runtime["pending_proposals"] <= limit, runtime

    run(main())


def test_proposals_lost_on_the_way_to_a_live_leader_do_not_pile_up_in_memory():
    """A follower remembers each proposal it forwarded (with its data) until it sees it applied
    or sees a later term applied, so that it can re-send it. One-way partition: the leader
    reaches the follower (it stays a follower of that leader) but nothing of the follower's
    reaches the leader, and nobody else writes, so the follower applies nothing. Before, every
    timed-out proposal stayed remembered: a client retrying every timeout grew that record
    without bound, past ``max_pending_proposals``."""

    async def main():
        limit = 5
        async with LocalCluster(max_pending_proposals=limit, request_timeout=0.05) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            c.net.cut(follower.id, leader.id, both=False)
            for _ in range(6):  # bounded rounds of a client retrying after each timeout
                futs = [follower.submit(b"x" * 1000) for _ in range(limit)]
                for fut in futs:
                    with pytest.raises(CommitTimeout):
                        await fut
                assert follower.node.leader == leader.id  # still forwarding to a live leader
                runtime = follower.status()["runtime"]
                assert runtime["waiting_proposals"] == 0
                assert runtime["sent_proposals"] <= 2 * limit, runtime

    run(main())
