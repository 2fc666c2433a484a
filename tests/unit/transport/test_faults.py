"""Test-only link cutting (transport.faults) over real pyzmq sockets on 127.0.0.1, and the
standalone node's ``partition`` op refusing without ``--allow-fault-injection``."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("zmq")

from saltext_raft.runtime import Rejected
from saltext_raft.standalone import FAULT_INJECTION_OFF
from saltext_raft.standalone import build_parser
from saltext_raft.standalone import partition_op
from saltext_raft.transport.faults import PartitionableZmqTransport

from .test_zmq import cluster as zmq_cluster
from .test_zmq import deliver
from .test_zmq import hb
from .test_zmq import run
from .test_zmq import wait_until


def cluster(*ids):
    return zmq_cluster(*ids, transport_class=PartitionableZmqTransport)


async def drain(t) -> list:
    """Every message buffered at ``t`` now (bounded: stops at the first 50 ms of silence)."""
    out = []
    for _ in range(10_000):
        try:
            out.append(await asyncio.wait_for(t.recv(), 0.05))
        except asyncio.TimeoutError:
            break
    return out


def dropped(t):
    return t.stats()["dropped"]["partitioned"]


def test_a_cut_link_drops_both_ways_counts_and_heals():
    async def main():
        async with cluster("a", "b", "c") as n:
            a, b, c = n["a"], n["b"], n["c"]
            await deliver(a, b, hb("a", "b"))  # connected both ways first
            await deliver(b, a, hb("b", "a"))
            assert a.partition(["b"]) == ["b"]
            assert a.stats()["partitioned_from"] == ["b"]
            # outbound: refused before it is sealed, counted
            assert a.send(hb("a", "b", 7)) is False
            assert dropped(a) == 1
            # inbound: b still sends (only a was told), a drops what arrives and counts it
            await wait_until(
                lambda: dropped(a) >= 2,
                "a dropping b's frame",
                each=lambda: b.send(hb("b", "a", 8)),
            )
            # the link to c is untouched
            assert await deliver(c, a, hb("c", "a", 9)) == hb("c", "a", 9)
            assert all(m.frm != "b" for m in await drain(a)), "a frame of b got through"
            assert dropped(b) == 0 and dropped(c) == 0
            # heal
            assert a.partition([]) == []
            assert await deliver(b, a, hb("b", "a", 10), "b's frame after the heal") == hb(
                "b", "a", 10
            )
            await deliver(a, b, hb("a", "b", 11), "a's frame after the heal")

    run(main())


def test_partition_refuses_its_own_id_and_invalid_ids():
    async def main():
        async with cluster("a") as n:
            with pytest.raises(ValueError, match="itself"):
                n["a"].partition(["a"])
            with pytest.raises(ValueError):
                n["a"].partition([""])
            assert n["a"].partitioned_from == []

    run(main())


def test_the_node_op_is_refused_without_the_flag():
    assert (
        build_parser()
        .parse_args(
            ["--id", "n1", "--listen", "127.0.0.1:1", "--data-dir", "d", "--secret-file", "s"]
        )
        .allow_fault_injection
        is False
    )
    with pytest.raises(Rejected, match="--allow-fault-injection") as exc:
        asyncio.run(partition_op(None)(None, {"peers": ["n2"]}))
    assert str(exc.value) == FAULT_INJECTION_OFF and exc.value.definite


def test_the_node_op_checks_its_argument_and_cuts():
    async def main():
        async with cluster("a", "b") as n:
            op = partition_op(n["a"])
            for bad in ({}, {"peers": "b"}, {"peers": [1]}, {"peers": ["a"]}):
                with pytest.raises(Rejected):
                    await op(None, bad)
            assert n["a"].partitioned_from == []  # bad input changed nothing
            assert await op(None, {"peers": ["b"]}) == {"partitioned_from": ["b"]}
            assert n["a"].send(hb("a", "b")) is False and dropped(n["a"]) == 1
            assert await op(None, {"peers": []}) == {"partitioned_from": []}

    run(main())
