"""Forwarded proposals across a leader change, and backpressure (issue 17, parts 3 and 5).

A proposal forwarded by a follower to a leader that then loses its leadership must be answered
without waiting out its timeout, and must never be applied twice.
"""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.core import MsgType
from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import Overloaded
from saltext_raft.runtime.errors import ERRORS
from saltext_raft.runtime.errors import from_dict

from .helpers import LocalCluster


class RecordingMachine(DictStateMachine):
    """Remembers every payload it applied, in order, to count duplicates."""

    def __init__(self):
        super().__init__()
        self.payloads: list[bytes] = []

    def apply(self, entry):
        self.payloads.append(entry.data)
        return super().apply(entry)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _forward_then_isolate_leader(c: LocalCluster, drop):
    """Propose through a follower while ``drop`` (message -> bool) filters the leader's traffic,
    wait until the leader has the entry in its log, then cut the leader off."""
    leader = await c.leader()
    follower = next(rt for rt in c.nodes.values() if rt is not leader)
    before = leader.node.last_index
    c.net.filter = lambda m: not drop(leader.id, m)
    fut = asyncio.ensure_future(follower.propose(b"unique-write"))
    await c.until(
        "the leader appended the forwarded proposal", lambda: leader.node.last_index > before
    )
    for other in c.nodes:
        if other != leader.id:
            c.net.cut(leader.id, other)
    c.net.filter = None
    return leader, follower, fut


@pytest.mark.parametrize(
    "case,drop",
    [
        # The old leader never replicates the entry: it is lost with the leader's term, and the
        # follower re-sends it to the new leader once it applies an entry of the new term.
        ("lost", lambda lid, m: m.frm == lid and m.type is MsgType.APPEND and bool(m.entries)),
        # The old leader replicates it but never learns the acknowledgements: the new leader
        # has it and commits it with its own no-op; the follower must not re-send it.
        ("replicated", lambda lid, m: m.to == lid and m.type is MsgType.APPEND_RESP),
    ],
)
def test_a_forwarded_proposal_survives_the_loss_of_its_leader_and_applies_once(case, drop):
    """Regression (issue 17 part 3): before, the follower never re-sent the proposal and its
    caller waited out the whole request timeout (30 s here) without knowing the outcome."""

    async def main():
        async with LocalCluster(sm_factory=RecordingMachine, request_timeout=30.0) as c:
            old, follower, fut = await _forward_then_isolate_leader(c, drop)
            # Bounded well below the request timeout: answered once the new term commits.
            await c.until("the forwarded proposal answered", fut.done, timeout=10.0)
            index = fut.result()
            assert isinstance(index, int)
            new = await c.leader()
            assert new is not old
            resent = follower.counters["proposals_resent"]
            assert resent == (1 if case == "lost" else 0)
            c.net.heal()  # the old leader comes back, learns the new term, drops its copy
            await c.until(
                "every node caught up",
                lambda: len({rt.node.applied_index for rt in c.nodes.values()}) == 1,
            )
            for rt in c.nodes.values():
                assert rt.sm.payloads.count(b"unique-write") == 1, (rt.id, rt.sm.payloads)

    run(main())


def test_a_proposal_still_queued_without_a_leader_fails_definitely():
    async def main():
        async with LocalCluster(request_timeout=0.3) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            await c.stop(leader.id)
            other = next(rt for rt in c.nodes.values() if rt is not follower)
            await c.stop(other.id)
            await c.until("no leader known", lambda: follower.node.leader == "", timeout=5.0)
            with pytest.raises(Exception) as info:
                await follower.propose(b"never-sent")
            assert info.value.code == "no_leader" and info.value.definite

    run(main())


def test_beyond_max_pending_proposals_a_proposal_is_refused_at_once_as_overloaded():
    async def main():
        async with LocalCluster(max_pending_proposals=5, request_timeout=5.0) as c:
            leader = await c.leader()
            for other in list(c.nodes):
                if other != leader.id:
                    await c.stop(other)  # no quorum: nothing commits, everything waits
            waiting = [leader.submit(b"w%d" % i) for i in range(5)]
            with pytest.raises(Overloaded) as info:
                leader.submit(b"one too many")  # raised synchronously: no waiting at all
            assert info.value.code == "overloaded" and info.value.definite
            assert "max_pending_proposals" in str(info.value)
            assert leader.counters["proposals_overloaded"] == 1
            assert not any(f.done() for f in waiting)
            for f in waiting:
                f.cancel()

    run(main())


def test_every_error_code_says_whether_it_is_definite_and_survives_the_wire():
    assert {code: cls.definite for code, cls in ERRORS.items()} == {
        "error": False,
        "no_leader": True,
        "timeout": False,
        "rejected": True,
        "stale_request": True,
        "overloaded": True,
        "stopped": False,
        "storage_failed": False,
    }
    for code, cls in ERRORS.items():
        back = from_dict(cls("why").to_dict())
        assert type(back) is cls and back.code == code and str(back) == "why"
