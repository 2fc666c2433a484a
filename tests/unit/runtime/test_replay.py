"""M2 and L9 of issue 18, performed on runtimes over the in-memory network.

M2: the transport forgets a sender's replay window when the receiver restarts (and, before
epochs were persisted, adopted an older epoch after a long silence), so a recorded APP request
can reach the runtime again. A
recorded ``add_learner n7`` re-added n7 after the operator had removed it. Here the recorded
message is delivered again — after a receiver restart, and without one (what the transport
does after the silence window) — and must be refused, n7 staying out.

L9: ids that break the node id rule are refused at the runtime's edges (admin, JOIN) and never
reach a membership."""

from __future__ import annotations

import asyncio
import time

import pytest

from saltext_raft.core import ConfOp
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.runtime import Rejected
from saltext_raft.runtime.remote import MAX_CLOCK_SKEW
from saltext_raft.transport.codec import decode_payload
from saltext_raft.transport.codec import encode_payload
from tests.unit.runtime.helpers import LocalCluster


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def record_app_requests(rt, into: list) -> None:
    """Keep a copy of every APP request ``rt`` sends (what an attacker on the wire records)."""
    send = rt.transport.send

    def recording(msg):
        if msg.type is MsgType.APP and decode_payload(msg.context).get("k") == "req":
            into.append(msg)
        return send(msg)

    rt.transport.send = recording


def test_a_recorded_add_learner_replayed_after_removal_is_refused_restart_or_not():
    async def main():
        async with LocalCluster(extra=("n7",)) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            recorded: list[Message] = []
            record_app_requests(follower, recorded)
            res = await follower.add_learner("n7", "mem://n7")
            assert "n7" in res["membership"]["learners"]
            (add_n7,) = [
                m for m in recorded if decode_payload(m.context).get("cmd") == "add_learner"
            ]
            await leader.remove("n7")  # the operator removes n7
            await c.until("n7 out", lambda: "n7" not in leader.node.committed_membership.members)

            # 1. replayed as it would be after the silence window (no restart)
            served = leader.status()["runtime"]["remote"]["requests_served"]
            c.net.nodes[add_n7.frm].send(add_n7)
            await c.until(
                "the replay to be refused as stale",
                lambda: leader.status()["runtime"]["remote"]["stale_requests"] >= 1,
            )
            assert leader.status()["runtime"]["remote"]["requests_served"] == served + 1
            assert "n7" not in leader.node.membership.members

            # 2. replayed after the receiver restarted (its transport windows are gone)
            lid = leader.id
            await c.stop(lid)
            await c.start(lid)
            restarted = c.nodes[lid]
            await c.leader(timeout=10)
            await restarted.transfer_leader(lid)  # the recorded message is addressed to it
            await c.until("the restarted node leads", lambda: restarted.node.role.value == "leader")
            c.net.nodes[add_n7.frm].send(add_n7)
            await c.until(
                "the replay after the restart to be refused as stale",
                lambda: restarted.status()["runtime"]["remote"]["stale_requests"] >= 1,
            )
            await c.settled()
            for rt in c.nodes.values():
                assert "n7" not in rt.node.membership.members, rt.id

    run(main())


def test_a_request_issued_in_an_older_term_is_refused_even_with_the_same_membership():
    async def main():
        async with LocalCluster(extra=("n7",)) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            body = {
                "k": "req",
                "id": 1,
                "op": "admin",
                "cmd": "add_learner",
                "args": {"node": "n7", "address": "mem://n7"},
                "term": leader.node.term - 1,
                "conf": leader.node.membership_at(leader.node.last_index)[0],
                "exp": time.time() + 5,
            }
            c.net.nodes[follower.id].send(
                Message(MsgType.APP, leader.id, follower.id, 0, context=encode_payload(body))
            )
            await c.until(
                "the request refused as stale",
                lambda: leader.status()["runtime"]["remote"]["stale_requests"] == 1,
            )
            # the same with the right term and membership but expired
            body.update(term=leader.node.term, exp=time.time() - MAX_CLOCK_SKEW - 1, id=2)
            c.net.nodes[follower.id].send(
                Message(MsgType.APP, leader.id, follower.id, 0, context=encode_payload(body))
            )
            await c.until(
                "the expired request refused",
                lambda: leader.status()["runtime"]["remote"]["stale_requests"] == 2,
            )
            assert "n7" not in leader.node.membership.members
            # and a current one from the same follower still works
            res = await follower.add_learner("n7", "mem://n7")
            assert "n7" in res["membership"]["learners"]

    run(main())


def test_admin_requests_from_a_non_member_are_refused():
    async def main():
        async with LocalCluster(extra=("n7", "n8")) as c:
            leader = await c.leader()
            n8 = c.net.transport("n8")  # holds the "secret" (is on the network), not a member
            await n8.start()
            n8.set_peers({leader.id: f"mem://{leader.id}"})
            node = leader.node
            body = {
                "k": "req",
                "id": 1,
                "op": "admin",
                "cmd": "add_learner",
                "args": {"node": "n7", "address": "mem://n7"},
                "term": node.term,
                "conf": node.membership_at(node.last_index)[0],
                "exp": time.time() + 5,
            }
            try:
                n8.send(Message(MsgType.APP, leader.id, "n8", 0, context=encode_payload(body)))
                reply = await asyncio.wait_for(n8.recv(), 5)
            finally:
                await n8.close()
            answer = decode_payload(reply.context)
            assert answer["ok"] is False and "members only" in answer["error"]["message"]
            assert "n7" not in leader.node.membership.members

    run(main())


BAD_IDS = ["n" * 300, "evil\nid", "a/b", "..", "tab\tid", "x" * 129, ""]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_node_ids_are_refused_by_admin_and_never_committed(bad):
    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            for rt in (leader, follower):
                for op in ("add_learner", "promote", "demote", "remove", "transfer_leader"):
                    args = {"node": bad, "address": "mem://x"}
                    with pytest.raises(Rejected, match="node id"):
                        await rt.admin(op, args, timeout=2)
            # and the core refuses it too, should an edge forget
            with pytest.raises(Exception, match="node id"):
                leader.node.propose_conf_change(ConfOp.ADD_LEARNER, bad, "mem://x")
            assert bad not in leader.node.membership.members

    run(main())


def test_a_join_from_an_invalid_id_is_refused():
    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            body = {
                "k": "req",
                "id": 1,
                "op": "join",
                "address": "mem://evil",
                "exp": time.time() + 5,
            }
            bad = "evil/../id"  # frameable (the wire takes 255 bytes), but no node id
            c.net.nodes[leader.id]._deliver(  # pylint: disable=protected-access
                Message(MsgType.APP, leader.id, bad, 0, context=encode_payload(body))
            )
            await c.until(
                "the join served", lambda: leader.status()["runtime"]["remote"]["requests_served"]
            )
            await c.settled()
            assert bad not in leader.node.membership.members
            assert bad not in leader.peers

    run(main())


BAD_ADDRESSES = ["garbage:", "host:port", "10.0.0.4:0", "10.0.0.4:70000", "a b:1", "x" * 400]


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
def test_an_address_that_is_not_host_port_is_refused_by_admin_and_never_committed(bad):
    """Every node applies a committed address; ``garbage:`` used to be committed and stop every
    node that applied it (docs/security.md, "Node addresses")."""

    async def main():
        async with LocalCluster(extra=("n7",)) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            for rt in (leader, follower):
                with pytest.raises(Rejected, match="address"):
                    await rt.add_learner("n7", bad, timeout=2)
            await c.settled()
            for rt in c.nodes.values():
                assert "n7" not in rt.node.membership.members, rt.id

    run(main())


def test_a_join_with_an_address_that_is_not_host_port_is_refused():
    async def main():
        async with LocalCluster(extra=("n7",)) as c:
            leader = await c.leader()
            body = {
                "k": "req",
                "id": 1,
                "op": "join",
                "address": "garbage:",
                "exp": time.time() + 5,
            }
            c.net.nodes[leader.id]._deliver(  # pylint: disable=protected-access
                Message(MsgType.APP, leader.id, "n7", 0, context=encode_payload(body))
            )
            await c.until(
                "the join served", lambda: leader.status()["runtime"]["remote"]["requests_served"]
            )
            await c.settled()
            assert "n7" not in leader.node.membership.members
            assert leader.peers.get("n7") != "garbage:"

    run(main())


async def _reply_to(transport, rid: int) -> dict:
    """The answer to request ``rid`` among what ``transport`` receives. Raft messages the
    leader sent the node while it was a learner may still be on their way (a heartbeat came
    first in one run of 20): they are not the answer."""
    while True:
        m = await transport.recv()
        if m.type is MsgType.APP:
            payload = decode_payload(m.context)
            if payload.get("k") == "rep" and payload.get("id") == rid:
                return payload


def test_leadership_cannot_be_sent_to_a_non_member_a_learner_or_a_removed_node():
    """transfer_leader at the edge (leader and follower) and a removed node's own request:
    refused, the same leader keeps the same term."""

    async def main():
        async with LocalCluster(extra=("n7", "n8")) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            await leader.add_learner("n7", "mem://n7")  # never started: stays a learner
            await leader.add_learner("n8", "mem://n8")
            await leader.remove("n8")
            await c.until("n8 out", lambda: "n8" not in follower.node.membership.members)
            term = leader.node.term
            for rt in (leader, follower):
                for target in ("n9", "n7", "n8"):
                    with pytest.raises(Rejected, match="not a voter"):
                        await rt.transfer_leader(target, timeout=2)
            n8 = c.net.transport("n8")  # the removed node, still on the network
            await n8.start()
            n8.set_peers({leader.id: f"mem://{leader.id}"})
            node = leader.node
            body = {
                "k": "req",
                "id": 1,
                "op": "admin",
                "cmd": "transfer_leader",
                "args": {"node": follower.id},
                "term": node.term,
                "conf": node.membership_at(node.last_index)[0],
                "exp": time.time() + 5,
            }
            try:
                n8.send(Message(MsgType.APP, leader.id, "n8", 0, context=encode_payload(body)))
                reply = await asyncio.wait_for(_reply_to(n8, body["id"]), 5)
            finally:
                await n8.close()
            assert reply["ok"] is False and "members only" in reply["error"]["message"]
            assert (leader.node.role.value, leader.node.term) == ("leader", term)
            assert follower.node.leader == leader.id

    run(main())
