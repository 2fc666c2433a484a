"""ZmqTransport over real pyzmq sockets on 127.0.0.1 (ephemeral ports, no fixed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import zmq

from saltext_raft.core.types import Entry
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.transport import TransportClosed
from saltext_raft.transport import TransportConfig
from saltext_raft.transport.codec import encode_message
from saltext_raft.transport.crypto import FrameCrypto
from saltext_raft.transport.zmqtransport import ZmqTransport

SECRET = b"zmq-test-secret-zmq-test-secret!"
TIMEOUT = 10.0


def config(node_id, listen="127.0.0.1:0", cluster="cl", secret=SECRET, **kwargs):
    return TransportConfig(
        cluster, node_id, secret, listen=listen, reconnect_ivl_max_ms=200, **kwargs
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def wait_until(predicate, what: str, timeout: float = TIMEOUT, each=None):
    """Poll ``predicate`` (calling ``each()`` before every check, e.g. to resend) until true;
    fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if each is not None:
            each()
        if predicate():
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def deliver(sender, receiver, msg, what="a message"):
    """Send ``msg`` until it arrives (sends to a peer still connecting are dropped by design)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        sender.send(msg)
        try:
            return await asyncio.wait_for(receiver.recv(), 0.05)
        except asyncio.TimeoutError:
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what} from {sender.node_id}"
                ) from None


@contextlib.asynccontextmanager
async def cluster(*ids, transport_class=ZmqTransport, **kwargs):
    nodes = {nid: transport_class(config(nid, **kwargs)) for nid in ids}
    try:
        for node in nodes.values():
            await node.start()
        peers = {nid: node.bound_endpoint for nid, node in nodes.items()}
        for node in nodes.values():
            node.set_peers(peers)
        yield nodes
    finally:
        for node in nodes.values():
            await node.close()


def hb(frm, to, term=1, **kw):
    return Message(MsgType.HEARTBEAT, to, frm, term, **kw)


def test_three_transports_exchange_messages():
    async def main():
        async with cluster("a", "b", "c") as n:
            got = await deliver(n["a"], n["b"], hb("a", "b", 5))
            assert got == hb("a", "b", 5)
            await deliver(n["c"], n["a"], hb("c", "a"))
            # now connected: a burst arrives complete and in order
            msgs = [
                Message(
                    MsgType.APPEND, "c", "b", 2, index=i, entries=(Entry(2, i + 1, 0, b"x" * 100),)
                )
                for i in range(200)
            ]
            await deliver(n["b"], n["c"], hb("b", "c"))
            assert n["b"].send_many(msgs) == 200
            received = []
            while len(received) < 200:
                received += await asyncio.wait_for(n["c"].recv_batch(), TIMEOUT)
            assert received == msgs
            for node in n.values():
                assert not any(node.stats()["dropped"][r] for r in ("auth", "malformed", "replay"))

    run(main())


def test_garbage_from_a_raw_socket_is_counted_and_the_receiver_keeps_working():
    async def main():
        async with cluster("a", "b") as n:
            ctx = zmq.Context()
            raw = ctx.socket(zmq.PUSH)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(n["b"].bound_endpoint)
            try:
                raw.send(b"not a frame")
                raw.send_multipart([b"two", b"parts"])
                raw.send(b"SRF\x09" + b"\x00" * 60)  # unknown version
                other = FrameCrypto(SECRET, "other", "a")
                raw.send(other.seal("b", b"x"))  # another cluster
                forged = FrameCrypto(b"wrong secret, right cluster id!!", "cl", "a")
                raw.send(forged.seal("b", b"x"))  # forged
                raw.send(b"x" * (n["b"].config.max_frame_bytes + 1))  # oversize, below MAXMSGSIZE
                stats = n["b"].stats
                await wait_until(
                    lambda: (
                        stats()["dropped"]["malformed"] >= 3
                        and stats()["dropped"]["version"] == 1
                        and stats()["dropped"]["wrong_cluster"] == 1
                        and stats()["dropped"]["auth"] == 1
                        and stats()["dropped"]["oversize"] == 1
                    ),
                    "the garbage frames to be counted",
                )
                assert await deliver(n["a"], n["b"], hb("a", "b", 9)) == hb("a", "b", 9)
            finally:
                raw.close(linger=0)
                ctx.term()

    run(main())


def test_replayed_frame_on_the_wire_is_counted():
    async def main():
        async with cluster("a", "b") as n:
            await deliver(n["a"], n["b"], hb("a", "b"))
            # capture a frame a would send, deliver it twice through a raw socket
            frame = n["a"]._crypto.seal("b", encode_message(hb("a", "b", 2)))  # pylint: disable=protected-access
            ctx = zmq.Context()
            raw = ctx.socket(zmq.PUSH)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect(n["b"].bound_endpoint)
            try:
                raw.send(frame)
                raw.send(frame)
                assert await asyncio.wait_for(n["b"].recv(), TIMEOUT) == hb("a", "b", 2)
                await wait_until(
                    lambda: n["b"].stats()["dropped"]["replay"] == 1, "the replay to be counted"
                )
            finally:
                raw.close(linger=0)
                ctx.term()

    run(main())


def test_unknown_sender_and_unknown_peer_are_counted():
    async def main():
        async with cluster("a", "b") as n:
            n["b"].set_peers({"z": "127.0.0.1:1"})  # b forgets a
            await wait_until(
                lambda: n["b"].stats()["dropped"]["unknown_sender"] >= 1,
                "an unknown_sender drop",
                each=lambda: n["a"].send(hb("a", "b")),
            )
            assert not n["a"].send(hb("a", "nobody"))
            assert n["a"].stats()["dropped"]["unknown_peer"] == 1

    run(main())


def test_send_never_blocks_and_counts_queue_full():
    async def main():
        # b exists in a's peer map but nothing listens there: with IMMEDIATE every send drops
        async with cluster("a", send_hwm=10) as n:
            n["a"].set_peers({"b": "127.0.0.1:9"})
            # A blocking send would hang at the first call; each one returns, dropped and
            # counted (no wall-clock bound: a loaded machine is slow, not blocked).
            results = [n["a"].send(hb("a", "b")) for _ in range(1000)]
            assert not any(results)
            assert n["a"].stats()["dropped"]["queue_full"] == 1000

    run(main())


def test_reconnects_after_the_peer_transport_is_recreated_on_the_same_port():
    async def main():
        async with cluster("a", "b") as n:
            a, b = n["a"], n["b"]
            await deliver(a, b, hb("a", "b", 1))
            endpoint = b.bound_endpoint
            await b.close()
            with pytest.raises(TransportClosed):
                await b.recv()
            b2 = ZmqTransport(config("b", listen=endpoint))
            try:
                await b2.start()
                b2.set_peers({"a": a.bound_endpoint})
                # a's PUSH socket reconnects by itself (RECONNECT_IVL backoff)
                assert await deliver(a, b2, hb("a", "b", 2), "a message after reconnection") == hb(
                    "a", "b", 2
                )
                # and the restarted b (new epoch) is accepted by a
                assert await deliver(b2, a, hb("b", "a", 3)) == hb("b", "a", 3)
            finally:
                await b2.close()

    run(main())


def test_handler_receives_messages_and_its_exceptions_do_not_kill_the_reader():
    async def main():
        async with cluster("a", "b") as n:
            seen = []

            def handler(msg):
                seen.append(msg)
                if msg.term == 2:
                    raise RuntimeError("handler bug")

            n["b"].set_handler(handler)
            n["a"].set_peers({"b": n["b"].bound_endpoint})
            await wait_until(
                lambda: seen, "the first message", each=lambda: n["a"].send(hb("a", "b", 2))
            )
            n["a"].send(hb("a", "b", 3))
            await wait_until(
                lambda: any(m.term == 3 for m in seen), "a message after the handler raised"
            )

    run(main())


def test_message_claiming_another_sender_is_dropped():
    async def main():
        async with cluster("a", "b", "c") as n:
            await deliver(n["a"], n["b"], hb("a", "b"))
            assert not n["a"].send(hb("c", "b"))  # refused at the source
            assert n["a"].stats()["dropped"]["unencodable"] == 1

    run(main())


def test_close_is_idempotent_and_send_after_close_is_refused():
    async def main():
        t = ZmqTransport(config("a"))
        await t.start()
        t.set_peers({"b": "127.0.0.1:9"})
        await t.close()
        await t.close()
        assert not t.send(hb("a", "b"))

    run(main())


def test_an_unexpected_error_in_frame_handling_does_not_stop_the_reader(monkeypatch):
    async def main():
        async with cluster("a", "b") as n:
            await deliver(n["a"], n["b"], hb("a", "b", 1))
            real = n["b"]._on_frame  # pylint: disable=protected-access
            calls = []

            def flaky(frame):
                calls.append(frame)
                if len(calls) == 1:
                    raise KeyError("bug")
                real(frame)

            monkeypatch.setattr(n["b"], "_on_frame", flaky)
            assert n["a"].send(hb("a", "b", 2))  # connected already: sent once, dropped by b
            await wait_until(lambda: calls, "the broken frame handler to be called")
            assert await deliver(n["a"], n["b"], hb("a", "b", 3)) == hb("a", "b", 3)
            assert n["b"].stats()["dropped"]["malformed"] >= 1

    run(main())


def test_a_large_forged_frame_from_an_unknown_sender_is_refused_before_any_crypto(monkeypatch):
    """M1 regression: the receiver passed no known-sender set to ``open``, so a forged frame
    from any claimed sender paid key derivation and a full AEAD pass before it was refused."""
    import saltext_raft.transport.crypto as crypto  # pylint: disable=import-outside-toplevel

    derived = []
    real = crypto._derive_frame_key  # pylint: disable=protected-access
    monkeypatch.setattr(
        crypto, "_derive_frame_key", lambda *args: derived.append(args) or real(*args)
    )

    async def main():
        async with cluster("b") as n:
            b = n["b"]
            forged = FrameCrypto(b"not-the-secret-not-the-secret!!!", "cl", "mallory").seal(
                "b", encode_message(Message(MsgType.APP, "b", "mallory", 0, context=b"x" * 200_000))
            )
            derived.clear()  # the forger's own sealing
            ctx = zmq.Context()
            raw = ctx.socket(zmq.PUSH)
            raw.connect(b.bound_endpoint)
            try:
                await wait_until(
                    lambda: b.stats()["dropped"]["unknown_sender"] >= 3,
                    "three unknown_sender drops",
                    each=lambda: raw.send(forged, zmq.NOBLOCK),
                )
            finally:
                raw.close(linger=0)
                ctx.term()
            assert b.stats()["dropped"]["auth"] == 0
            assert derived == []

    run(main())


def test_a_drain_stops_on_its_time_bound_and_yields_to_the_loop():
    """M1: one wake-up reads frames for at most ``drain_seconds`` (plus one frame), then lets
    the loop run other callbacks; every frame still arrives."""

    async def main():
        async with cluster("a", "b", drain_seconds=1e-6) as n:
            a, b = n["a"], n["b"]
            await deliver(a, b, hb("a", "b", term=1))
            ticks = []
            loop = asyncio.get_running_loop()

            def tick():
                ticks.append(loop.time())
                if len(ticks) < 10_000:
                    loop.call_soon(tick)

            for i in range(200):
                assert a.send(hb("a", "b", term=2 + i))
            loop.call_soon(tick)
            got = 0
            while got < 200:
                await asyncio.wait_for(b.recv(), TIMEOUT)
                got += 1
            assert b.stats()["drains_cut"] >= 1
            assert ticks  # the loop ran other callbacks while frames were being drained

    run(main())


NEW_SECRET = b"the-new-secret-the-new-secret!!!"


def test_two_transports_keep_talking_through_a_secret_rotation_and_then_refuse_the_old():
    async def main():
        async with cluster("a", "b") as n:
            a, b = n["a"], n["b"]
            term = [0]

            async def both_ways(what):
                term[0] += 1
                got = await deliver(a, b, hb("a", "b", term=term[0]), f"a->b {what}")
                assert got.term == term[0]
                got = await deliver(b, a, hb("b", "a", term=term[0]), f"b->a {what}")
                assert got.term == term[0]

            await both_ways("before")
            a.set_secrets(SECRET, [NEW_SECRET])  # phase 1: accept the new secret
            await both_ways("a accepts the new secret")
            b.set_secrets(SECRET, [NEW_SECRET])
            a.set_secrets(NEW_SECRET, [SECRET])  # phase 2: a sends under the new one
            await both_ways("a sends under the new secret")
            b.set_secrets(NEW_SECRET, [SECRET])
            await both_ways("both send under the new secret")
            a.set_secrets(NEW_SECRET)  # phase 3: the old secret is dropped
            b.set_secrets(NEW_SECRET)
            await both_ways("after the rotation")
            # a peer still on the old secret is refused now
            stale = ZmqTransport(config("a", secret=SECRET))
            await stale.start()
            stale.set_peers({"b": b.bound_endpoint})
            try:
                await wait_until(
                    lambda: b.stats()["dropped"]["auth"] >= 1,
                    "b to refuse a frame under the old secret",
                    each=lambda: stale.send(hb("a", "b", term=99)),
                )
            finally:
                await stale.close()

    run(main())


@pytest.mark.parametrize("bad", ["garbage:", "host:port", "tcp://x", "ipc://"])
def test_a_peer_address_zmq_cannot_use_costs_that_peer_its_link_never_the_transport(bad):
    """A committed membership is applied by every node: ``add_learner n9 garbage:`` used to
    raise out of ``set_peers`` and stop every node that applied it (docs/security.md, "Node
    addresses"). Now n9 is left unconnected and counted; the other peers keep talking."""

    async def main():
        async with cluster("a", "b") as n:
            n["a"].set_peers({"b": n["b"].bound_endpoint, "n9": bad})
            assert n["a"].stats()["dropped"]["bad_address"] == 1
            assert not n["a"].send(hb("a", "n9"))  # no link to n9: unknown_peer, no exception
            assert await deliver(n["a"], n["b"], hb("a", "b", 3)) == hb("a", "b", 3)

    run(main())
