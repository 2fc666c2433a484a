"""Requests the layers above serve between members (``Remote.serve``), and waiting for the
apply of an index another member reported (``Reads.wait_applied``)."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Unsent
from saltext_raft.runtime.remote import Remote
from saltext_raft.runtime.remote import RemotePort
from saltext_raft.transport.codec import decode_payload
from saltext_raft.transport.codec import encode_payload

from .helpers import LocalCluster


def remote(sent: list, members=("a", "b"), queued=True) -> Remote:
    """A Remote for node "a" whose messages go to ``sent`` (``queued`` False: the transport
    drops every one, as with a full queue)."""

    async def no_admin(*args, **kwargs):
        raise AssertionError("not an admin request")

    def send(m: Message) -> bool:
        sent.append(m)
        return queued

    return Remote(
        RemotePort(
            "a",
            send=send,
            running=lambda: True,
            membership=lambda: Membership(voters=frozenset(members)),
            admin=no_admin,
            learn_joiner_address=lambda nid, address: None,
            entry_committed=lambda index, term: None,
            request_timeout=lambda: 1.0,
        )
    )


async def serve_one(r: Remote, sent: list, frm: str, body: dict) -> dict:
    r.on_message(
        Message(MsgType.APP, "a", frm, 0, context=encode_payload(dict(body, k="req", id=7)))
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not sent:
        assert loop.time() < deadline, "no reply within 5s"
        await asyncio.sleep(0.001)
    return decode_payload(sent[0].context)


def test_a_served_request_from_a_member_gets_its_handlers_result():
    async def main():
        sent, calls = [], []

        async def handler(frm, body):
            calls.append((frm, body["x"]))
            return {"echo": body["x"]}

        r = remote(sent)
        r.serve("test.echo", handler)
        reply = await serve_one(r, sent, "b", {"op": "test.echo", "x": 3})
        assert reply["ok"] and reply["result"] == {"echo": 3} and calls == [("b", 3)]

    asyncio.run(main())


@pytest.mark.parametrize("frm", ["removed", "stranger"])
def test_a_served_request_from_a_non_member_is_refused_before_the_handler(frm):
    async def main():
        sent, calls = [], []

        async def handler(sender, body):
            calls.append(sender)
            return True

        r = remote(sent)
        r.serve("test.op", handler)
        reply = await serve_one(r, sent, frm, {"op": "test.op"})
        assert not reply["ok"] and "members only" in reply["error"]["message"]
        assert calls == []

    asyncio.run(main())


def test_a_request_the_transport_dropped_fails_at_once_instead_of_waiting_its_timeout():
    async def main():
        sent = []
        r = remote(sent, queued=False)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(Unsent, match="not sent") as err:
            # a bound far below the request's own timeout: a wait for an answer that cannot
            # come shows up as a TimeoutError here
            await asyncio.wait_for(r.request("b", {"op": "test.op"}, timeout=60), 5)
        assert loop.time() - start < 5 and len(sent) == 1
        # definite (nothing left this node), seen by clients as no_leader
        assert isinstance(err.value, NoLeader) and err.value.definite
        assert r.stats()["in_flight"] == 0 and r.stats()["requests_unsent"] == 1
        assert r.stats()["requests_sent"] == 0

    asyncio.run(main())


def test_an_admin_request_the_transport_drops_is_retried_with_a_pause_and_fails_definitely():
    """A follower whose queue to the leader is full: each forwarded attempt fails at once, the
    loop pauses between attempts (no spin), and the caller gets a definite no_leader at its
    deadline (before: one attempt waited the whole timeout, then an indeterminate timeout)."""

    async def main():
        async with LocalCluster(["n1", "n2", "n3"]) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            real_send = follower.transport.send

            def send(m: Message) -> bool:
                if m.type is MsgType.APP and m.to == leader.id:
                    return False  # as the transport does when the queue is full
                return real_send(m)

            follower.transport.send = send
            timeout = 0.5
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(NoLeader) as err:
                await follower.admin("transfer_leader", {"node": follower.id}, timeout=timeout)
            took = loop.time() - start
            assert err.value.definite and "not sent" in str(err.value)
            assert timeout * 0.9 <= took < timeout + 2
            unsent = follower.status()["runtime"]["remote"]["requests_unsent"]
            pause = follower.config.tick_seconds * 2
            assert 2 <= unsent <= timeout / pause + 2  # retried, but one attempt per pause
            assert leader.node.role is leader.node.role.LEADER  # nothing reached the leader

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("op", ["admin", "join", "committed"])
def test_the_runtimes_own_requests_cannot_be_taken_over(op):
    r = remote([])
    with pytest.raises(ValueError, match="already served"):
        r.serve(op, None)


def test_waiting_for_an_index_returns_once_applied_and_times_out_when_not():
    async def main():
        async with LocalCluster(["n1", "n2", "n3"]) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            await leader.propose(b"one")
            index = leader.node.applied_index
            await follower.wait_applied(index, 5)
            assert follower.node.applied_index >= index
            with pytest.raises(CommitTimeout, match="not applied here"):
                await follower.wait_applied(index + 100, 0.05)
            # a waiter that timed out does not break the next one
            await leader.propose(b"two")
            await follower.wait_applied(index + 1, 5)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_waits_given_up_on_an_index_never_applied_do_not_pile_up_in_the_read_heap():
    """Regression: a ``wait_applied`` that timed out (or whose caller was cancelled) left its
    future in the read heap until that index was applied here: a member answering relays with
    an index this node never reaches grew the heap by one entry per relay, without bound."""

    async def main():
        async with LocalCluster(["n1", "n2", "n3"]) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            reads = follower._reads  # pylint: disable=protected-access
            never = follower.node.applied_index + (1 << 40)
            live = asyncio.ensure_future(follower.wait_applied(never + 1, 60))
            for _ in range(5):  # abandoned by timeout, in rounds of many at once
                given_up = await asyncio.gather(
                    *(follower.wait_applied(never, 0.01) for _ in range(200)),
                    return_exceptions=True,
                )
                assert all(isinstance(e, CommitTimeout) for e in given_up)
                assert len(reads._read_heap) <= 3, len(reads._read_heap)
            cancelled = [
                asyncio.ensure_future(follower.wait_applied(never, 60)) for _ in range(200)
            ]
            await c.until("the waits to be queued", lambda: len(reads._read_heap) >= 201)
            for task in cancelled:  # abandoned by cancelling the caller
                task.cancel()
            await asyncio.gather(*cancelled, return_exceptions=True)
            assert len(reads._read_heap) <= 3, len(reads._read_heap)
            assert not live.done() and reads.waiting() <= 3
            # a wait for an index that is applied still works among them
            await leader.propose(b"one")
            await follower.wait_applied(leader.node.applied_index, 5)
            live.cancel()
            await asyncio.gather(live, return_exceptions=True)
            assert reads._read_heap == []

    asyncio.run(asyncio.wait_for(main(), 60))
