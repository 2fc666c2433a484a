"""The in-memory transport, rate-limited drop logging, TransportConfig, and layering."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.transport import DROP_REASONS
from saltext_raft.transport import MemoryNetwork
from saltext_raft.transport import TransportClosed
from saltext_raft.transport import TransportConfig
from saltext_raft.transport import TransportConfigError
from saltext_raft.transport.base import RateLimitedLog
from saltext_raft.transport.config import endpoint


def hb(frm, to, term=1):
    return Message(MsgType.HEARTBEAT, to, frm, term)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(net, *ids):
    nodes = {nid: net.transport(nid) for nid in ids}
    for node in nodes.values():
        await node.start()
        node.set_peers({nid: f"mem:{nid}" for nid in ids})
    return nodes


def test_memory_transport_delivers_through_the_codec():
    async def main():
        net = MemoryNetwork()
        n = await started(net, "a", "b")
        assert n["a"].send(hb("a", "b", 4))
        assert await asyncio.wait_for(n["b"].recv(), 5) == hb("a", "b", 4)
        # a message the codec cannot pack is refused at the source, as with zmq
        assert not n["a"].send(Message(MsgType.HEARTBEAT, "b", "a", 1, context=object()))
        assert n["a"].stats()["dropped"]["unencodable"] == 1
        # one it packs but the strict decoder refuses is dropped at the receiver
        assert n["a"].send(Message(MsgType.HEARTBEAT, "b", "a", 1, context="text"))
        await asyncio.sleep(0)
        stats = n["b"].stats()
        assert stats["received"] == 1
        assert stats["dropped"]["malformed"] == 1
        assert set(stats["dropped"]) == set(DROP_REASONS)

    run(main())


def test_memory_network_cuts_and_heals_links():
    async def main():
        net = MemoryNetwork()
        n = await started(net, "a", "b")
        net.cut("a", "b")
        n["a"].send(hb("a", "b", 1))
        net.heal()
        n["a"].send(hb("a", "b", 2))
        assert await asyncio.wait_for(n["b"].recv(), 5) == hb("a", "b", 2)

    run(main())


def test_recv_batch_and_close_wakes_waiters():
    async def main():
        net = MemoryNetwork()
        n = await started(net, "a", "b")
        for term in range(5):
            n["a"].send(hb("a", "b", term))
        batch = await asyncio.wait_for(n["b"].recv_batch(3), 5)
        assert [m.term for m in batch] == [0, 1, 2]
        assert [m.term for m in await n["b"].recv_batch()] == [3, 4]
        waiter = asyncio.ensure_future(n["b"].recv())
        await asyncio.sleep(0)
        await n["b"].close()
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(waiter, 5)

    run(main())


def test_inbound_buffer_is_bounded():
    async def main():
        net = MemoryNetwork()
        a = net.transport("a")
        b = net.transport("b", max_inbound=3)
        for t in (a, b):
            await t.start()
            t.set_peers({"a": "x", "b": "y"})
        for term in range(5):
            a.send(hb("a", "b", term))
        await asyncio.wait_for(b.recv(), 5)
        await asyncio.sleep(0)
        assert b.stats()["dropped"]["inbound_full"] == 2
        assert b.stats()["received"] == 3

    run(main())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_drop_logging_is_rate_limited_per_peer(caplog):
    clock = FakeClock()
    limiter = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert limiter.warning("a", "bad frame from %s", "a")
        for _ in range(5):
            assert not limiter.warning("a", "bad frame from %s", "a")
        assert limiter.warning("b", "bad frame from %s", "b")  # another peer has its own budget
        clock.now = 10.0
        assert limiter.warning("a", "bad frame from %s", "a")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "bad frame from a",
        "bad frame from b",
        "bad frame from a (5 similar suppressed)",
    ]


def test_transport_drops_are_logged_once_per_interval(caplog):
    async def main():
        clock = FakeClock()
        net = MemoryNetwork()
        a = net.transport("a", clock=clock, log_interval=60.0)
        await a.start()
        a.set_peers({})
        with caplog.at_level(logging.WARNING, logger="saltext_raft.transport"):
            for _ in range(100):
                a.send(hb("a", "ghost"))
        assert a.stats()["dropped"]["unknown_peer"] == 100
        assert len([r for r in caplog.records if "ghost" in r.getMessage()]) == 1

    run(main())


def test_config_validation_names_the_option():
    good = TransportConfig("cl", "a", b"s" * 32)
    assert good.validate() is good
    assert "secret" not in repr(good) or "s" * 32 not in repr(good)
    for change, name in [
        ({"secret": b"short"}, "secret"),
        ({"node_id": ""}, "node_id"),
        ({"send_hwm": 0}, "send_hwm"),
        ({"aead": "rot13"}, "aead"),
        ({"reconnect_ivl_ms": 500, "reconnect_ivl_max_ms": 100}, "reconnect_ivl_max_ms"),
        ({"log_interval": -1}, "log_interval"),
    ]:
        cfg = TransportConfig("cl", "a", b"s" * 32)
        for key, value in change.items():
            setattr(cfg, key, value)
        with pytest.raises(TransportConfigError, match=name):
            cfg.validate()


def test_endpoint_forms():
    assert endpoint("10.0.0.1:4606") == "tcp://10.0.0.1:4606"
    assert endpoint("[::1]:4606") == "tcp://[::1]:4606"
    assert endpoint("tcp://h:1") == "tcp://h:1"
    with pytest.raises(TransportConfigError):
        endpoint("no-port")


def test_transport_never_imports_salt():
    code = (
        "import sys\n"
        "import saltext_raft.transport, saltext_raft.transport.zmqtransport\n"
        "import saltext_raft.transport.bench\n"
        "bad = sorted(m for m in sys.modules if m == 'salt' or m.startswith('salt.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": ":".join(sys.path)})
