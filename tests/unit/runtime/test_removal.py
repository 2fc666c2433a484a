"""Removal sticks (issue 18, M3): a removed node is tombstoned in the replicated membership and
may not add itself back (JOIN) until an operator adds it again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from saltext_raft.core.nodeid import MAX_NODE_ID_LEN
from saltext_raft.runtime import CommitTimeout
from saltext_raft.runtime import RaftRuntimeError
from saltext_raft.runtime import Rejected
from saltext_raft.storage import MemoryDisk
from saltext_raft.transport.codec import MAX_ID_LEN

from .helpers import LocalCluster
from .test_forwarding import RecordingMachine


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_removed_leader_is_answered_success_and_stays_out_after_a_restart(caplog):
    """Before: the removed master sent JOIN on its next start, was re-added and promoted."""
    caplog.set_level(logging.INFO, logger="saltext_raft")

    async def main():
        async with LocalCluster() as c:
            old = await c.leader()
            result = await old.remove(old.id)  # the leader removes itself: answered, no timeout
            assert result["changed"] and old.id not in result["membership"]["voters"]
            assert result["membership"]["removed"] == {old.id: result["index"]}
            new = await c.leader()
            assert new is not old
            await c.until("the old leader applied its removal", lambda: not old.is_member)
            await c.stop(old.id)
            again = await c.start(old.id)  # its own data, no join
            await c.until(
                "a leader known to the others",
                lambda: len([r for r in c.leaders() if r is not again]) == 1,
            )
            # Bounded observation window of several election timeouts: it must not come back.
            for _ in range(60):
                await asyncio.sleep(0.01)
                assert old.id not in new.node.membership.members
            assert not again.is_member
            assert again.status()["runtime"]["remote"]["requests_sent"] == 0  # no JOIN sent at all
            assert "was removed from the cluster at index" in caplog.text
            # An operator's add clears the tombstone: it is back and auto-promoted.
            await new.add_learner(old.id, f"mem://{old.id}")
            await c.until(
                "the re-added node promoted to voter",
                lambda: old.id in new.node.membership.voters and again.is_member,
            )
            assert not new.node.membership.removed_at(old.id)

    run(main())


def test_a_join_from_a_removed_id_is_refused_until_an_explicit_add(caplog):
    """A removed node rebuilt empty (or replaying a JOIN) is refused with a clear reason."""
    caplog.set_level(logging.INFO, logger="saltext_raft")

    async def main():
        async with LocalCluster(ids=("n1", "n2", "n3"), extra=("n4",)) as c:
            leader = await c.leader()
            await c.start("n4", join=True)
            await c.until("n4 is a voter", lambda: "n4" in leader.node.membership.voters)
            await leader.remove("n4")
            await c.stop("n4")
            c.disks["n4"] = MemoryDisk()  # wiped: a fresh node that asks to join again
            n4 = await c.start("n4", join=True)
            await c.until(
                "the JOIN refused on both sides",
                lambda: (
                    caplog.text.count("JOIN refused") >= 1
                    and "JOIN via" in caplog.text
                    and "refused" in caplog.text.split("JOIN via", 1)[1]
                ),
            )
            assert "n4" not in leader.node.membership.members and not n4.is_member
            assert "re-added with: salt-run raft.add node=n4" in caplog.text
            # Also refused when a follower forwards it to the leader as a JOIN.
            follower = next(rt for rt in c.nodes.values() if rt.id not in ("n4", leader.id))
            with pytest.raises(Rejected, match="was removed"):
                await follower.admin(
                    "add_learner", {"node": "n4", "address": "mem://n4", "join": True}
                )
            await follower.add_learner("n4", "mem://n4")  # explicit: allowed
            await c.until("n4 back in", lambda: n4.is_member, timeout=10.0)

    run(main())


def test_a_leader_that_removes_itself_is_answered_success_when_the_next_leader_commits_it():
    """Regression (issue 18, M3): the removed leader lost leadership before it saw the commit
    (check-quorum: it could not reach one of the remaining voters); the next leader committed
    the removal but no longer replicates to it, so it answered "not committed in time"."""

    async def main():
        async with LocalCluster(request_timeout=10.0) as c:
            old = await c.leader()
            a, b = sorted(n for n in c.nodes if n != old.id)
            c.net.cut(old.id, b)  # b cannot be reached by the old leader, a can
            result = await asyncio.wait_for(old.remove(old.id), 8.0)
            assert result["changed"] and result["membership"]["voters"] == [a, b]
            new = await c.leader()
            assert new.id in (a, b) and old.node.role.value != "leader"
            assert new.node.membership.removed_at(old.id) == result["index"]

    run(main())


def test_a_removed_follower_learns_its_removal_and_stays_out_after_a_restart(caplog):
    """Before, the leader stopped replicating to a node the moment it appended its removal, so
    a removed follower never knew: it kept thinking it was a voter. Now it gets the entry (its
    tombstone is in its own log) and stays out on its next start without asking to join."""
    caplog.set_level(logging.INFO, logger="saltext_raft")

    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            gone = next(rt for rt in c.nodes.values() if rt is not leader)
            result = await leader.remove(gone.id)
            await c.until(
                "the removed follower stored its removal",
                lambda: gone.node.membership.removed_at(gone.id) == result["index"],
            )
            await c.until(
                "the leader stopped replicating to it",
                lambda: gone.id not in leader.node.progress,
            )
            assert not gone.is_member and not gone.node.is_voter
            await c.stop(gone.id)
            again = await c.start(gone.id)  # its own data, no join
            assert again.node.membership.removed_at(gone.id) == result["index"]
            for _ in range(40):  # several election timeouts: it must not come back
                await asyncio.sleep(0.01)
                assert gone.id not in leader.node.membership.members
                assert again.node.role.value == "follower"
            assert again.status()["runtime"]["remote"]["requests_sent"] == 0
            assert f"{gone.id} was removed from the cluster at index" in caplog.text

    run(main())


def test_a_removed_follower_cannot_write_into_the_cluster_it_left():
    """A removed follower never campaigns, so it kept its last leader and forwarded its clients'
    proposals to it in the same term; the leader applied them (a removed master still wrote)
    while the client was told ``timeout``. Now the leader drops them and the removed node
    refuses them at once, definitely (tests/unit/core: the leader's side)."""

    async def main():
        async with LocalCluster(sm_factory=RecordingMachine, request_timeout=0.5) as c:
            leader = await c.leader()
            gone = next(rt for rt in c.nodes.values() if rt is not leader)
            result = await leader.remove(gone.id)
            await c.until(
                "the removed follower stored its removal",
                lambda: gone.node.membership.removed_at(gone.id) == result["index"],
            )
            assert gone.node.leader == leader.id  # it still knows (and would forward to) it
            with pytest.raises(Rejected, match="was removed") as info:
                await gone.propose(b"ghost")
            assert info.value.definite
            await leader.propose(b"after")  # one more commit: the ghost would be before it
            for rt in c.nodes.values():
                assert b"ghost" not in rt.sm.payloads, rt.id

    run(main())


@pytest.mark.parametrize("heal", ["none", "one", "all"])
def test_a_leader_whose_own_removal_never_committed_is_not_answered_success(heal):
    """The success answer of a removed leader must be true: cut off from every other voter, its
    removal entry exists only in its own log, the others elect a leader without it; whatever
    part of the network then heals, it must never report success."""

    async def main():
        async with LocalCluster(request_timeout=3.0) as c:
            old = await c.leader()
            a, b = sorted(n for n in c.nodes if n != old.id)
            for other in (a, b):
                c.net.cut(old.id, other)
            removal = asyncio.ensure_future(old.remove(old.id))
            await c.until(
                "the others elected a leader without the removal",
                lambda: any(rt.id != old.id for rt in c.leaders()),
            )
            new = next(rt for rt in c.leaders() if rt.id != old.id)
            assert old.id in new.node.membership.voters
            if heal != "none":
                c.net.heal()
                if heal == "one":
                    c.net.cut(old.id, new.id)  # it reaches only the voter that is not leading
            await c.until("the removal answered", removal.done, timeout=5.0)
            with pytest.raises(CommitTimeout):
                removal.result()
            assert old.id in new.node.membership.voters and not new.node.membership.removed

    run(main())


def test_a_repeated_membership_request_is_not_answered_success_before_the_change_commits():
    """An operator re-runs ``raft.remove`` after an indeterminate answer (or two run it at once)
    while the first removal is appended on a leader cut off from every other voter. Before,
    the second request was answered success ("already removed": the leader looked at its
    latest, uncommitted membership) although the change could not commit and was then lost
    when the others elected a leader without it: a definite answer that was false."""

    async def main():
        async with LocalCluster(request_timeout=3.0) as c:
            old = await c.leader()
            a, b = sorted(n for n in c.nodes if n != old.id)
            for other in (a, b):
                c.net.cut(old.id, other)
            first = asyncio.ensure_future(old.remove(b))
            await c.until("the removal appended", lambda: b not in old.node.membership.voters)
            with pytest.raises(RaftRuntimeError) as info:
                await old.remove(b, timeout=0.5)
            assert not info.value.definite
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            new = await c.leader()
            assert new is not old and b in new.node.membership.voters  # it never took effect

    run(main())


def test_a_dead_master_removed_then_replaced_learns_its_removal_when_it_comes_back(caplog):
    """Remove a stopped master, add its replacement (a JOIN, then auto-promotion: two more
    configuration entries), then start the old one with its data: it must learn that it was
    removed and stay out."""
    caplog.set_level(logging.INFO, logger="saltext_raft")

    async def main():
        async with LocalCluster(ids=("n1", "n2", "n3", "n4"), extra=("n5",)) as c:
            leader = await c.leader()
            dead = next(n for n in ("n4", "n3") if n != leader.id)
            await c.stop(dead)
            result = await leader.remove(dead)
            await c.start("n5", join=True)
            await c.until("n5 is a voter", lambda: "n5" in leader.node.membership.voters)
            back = await c.start(dead)  # its own data, no join
            await c.until(
                "it learnt its removal",
                lambda: back.node.membership.removed_at(dead) == result["index"],
            )
            assert not back.is_member and not back.node.is_voter
            # said when it applies its removal, which may come a moment after it stored it
            await c.until(
                "it logged its removal",
                lambda: f"{dead} was removed from the cluster at index" in caplog.text,
            )

    run(main())


def test_a_node_id_the_wire_cannot_carry_is_refused_before_it_enters_the_membership():
    """Issue 18 L9, made worse by tombstones: a 300-character id was committed (every frame to
    it is dropped), and removing it, the obvious cure, now leaves it in the tombstones, which
    every later snapshot carries and no node can decode: a follower that needs a snapshot
    could never catch up again. The id is refused at once instead, by the node id rule, which
    is stricter than what the wire carries."""
    assert MAX_NODE_ID_LEN <= MAX_ID_LEN

    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            before = leader.node.membership
            for rt in (leader, follower):
                with pytest.raises(Rejected, match=f"at most {MAX_NODE_ID_LEN} characters"):
                    await rt.add_learner("x" * 300, "mem://x")
            assert leader.node.membership == before

    run(main())
