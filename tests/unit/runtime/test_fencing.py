"""Fencing a lost cluster off with a new secret (docs/operations.md, recovery step 4).

Three nodes over the real zmq transport (authenticated frames, loopback ports) lose two of
their number "for good"; the survivor is recovered as the only voter and restarted with a new
secret. Then the two lost nodes come back with their old data and the old secret, and elect a
leader of the old membership among themselves (which still counts the survivor as a voter and
sends it appends). Fenced, the survivor never hears them (their frames fail authentication)
and keeps leading its own cluster; a node rebuilt empty with the new secret joins it. The
contrast, with the old secret kept, shows what the fence prevents: the survivor's answers
teach the old majority its term, they elect a leader above it and depose the survivor.
"""

from __future__ import annotations

import asyncio
import random

from saltext_raft.core import Role
from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import RaftRuntime
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime import default_core_config
from saltext_raft.runtime.recovery import recover_store
from saltext_raft.storage import MemoryDisk
from saltext_raft.storage import MemoryStore
from saltext_raft.transport import TransportConfig
from saltext_raft.transport.zmqtransport import ZmqTransport
from tests.functional.storage.backends import free_port

OLD = b"old-secret-old-secret-old-secret"
NEW = b"new-secret-new-secret-new-secret"
FOUNDERS = ("n1", "n2", "n3")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


class ZmqCluster:
    """RaftRuntimes over zmq on 127.0.0.1, each with the secret it is started with."""

    def __init__(self, ids):
        self.addresses = {nid: f"127.0.0.1:{free_port()}" for nid in ids}
        self.disks = {nid: MemoryDisk() for nid in ids}
        self.nodes: dict[str, RaftRuntime] = {}
        self.rng = random.Random(7)

    async def start(self, nid, secret, founders=FOUNDERS, join=False) -> RaftRuntime:
        cfg = TransportConfig(
            "fence", nid, secret, listen=self.addresses[nid], reconnect_ivl_max_ms=200
        )
        transport = ZmqTransport(cfg)
        rt = RaftRuntime(
            nid,
            MemoryStore(self.disks[nid]),
            transport,
            DictStateMachine(),
            core_config=default_core_config(nid),
            config=RuntimeConfig(tick_seconds=0.01, join_interval=0.1),
            founders={f: self.addresses[f] for f in founders},
            peers=dict(self.addresses),  # as LocalCluster: whom to ask, and how to answer a JOIN
            join=join,
            rng=random.Random(self.rng.random()),
        )
        self.nodes[nid] = rt
        await rt.start()
        return rt

    async def stop(self, nid):
        await self.nodes.pop(nid).stop()

    async def stop_all(self):
        for nid in list(self.nodes):
            await self.stop(nid)

    async def until(self, what, predicate, timeout=20.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                status = {n: (rt.node.role.value, rt.node.term) for n, rt in self.nodes.items()}
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {status}")
            await asyncio.sleep(0.01)

    def leads(self, nid) -> bool:
        rt = self.nodes.get(nid)
        return rt is not None and rt.node.role is Role.LEADER


async def recovered_survivor_and_returning_old_majority(c: ZmqCluster, survivor_secret: bytes):
    """Run a cluster, lose it, recover n1 alone, restart it with ``survivor_secret``, then bring
    n2 and n3 back with the old secret and data; returns once they have elected a leader."""
    for nid in FOUNDERS:
        await c.start(nid, OLD)
    await c.until("a leader", lambda: any(c.leads(n) for n in FOUNDERS))
    leader = next(c.nodes[n] for n in FOUNDERS if c.leads(n))
    await leader.propose(DictStateMachine.set_command(b"before", b"1"), 5)
    await c.until("n1 applied the write", lambda: c.nodes["n1"].sm.get(b"before") == b"1")
    await c.stop_all()
    recover_store(MemoryStore(c.disks["n1"]), "n1", c.addresses["n1"], write=True)

    n1 = await c.start("n1", survivor_secret)
    await c.until("n1 to lead alone", lambda: c.leads("n1"))
    await n1.propose(DictStateMachine.set_command(b"recovered", b"1"), 5)
    term = n1.node.term
    # The lost masters come back with their old logs, and (for them) n1 is still a voter.
    for nid in ("n2", "n3"):
        await c.start(nid, OLD)
    await c.until("the old majority to elect a leader", lambda: c.leads("n2") or c.leads("n3"))
    old_leader = c.nodes["n2"] if c.leads("n2") else c.nodes["n3"]
    return n1, term, old_leader


def test_a_survivor_fenced_with_a_new_secret_is_not_deposed_by_the_old_majority():
    async def main():
        c = ZmqCluster((*FOUNDERS, "n4"))
        try:
            n1, term, _ = await recovered_survivor_and_returning_old_majority(c, NEW)
            # Let the old leader's heartbeats and appends try n1 for a while (bounded): every
            # frame fails authentication there.
            await c.until(
                "n1 to drop frames of the old cluster as failed authentication",
                lambda: n1.transport.stats()["dropped"]["auth"] >= 20,
            )
            assert c.leads("n1") and n1.node.term == term, n1.status()
            assert n1.node.membership.voters == {"n1"}
            assert n1.sm.get(b"recovered") == b"1"
            await n1.propose(DictStateMachine.set_command(b"still", b"1"), 5)
            # A master rebuilt empty with the new secret joins the recovered one.
            n4 = await c.start("n4", NEW, founders=("n1",), join=True)
            await c.until(
                "n4 to join n1 and get its state",
                lambda: "n4" in n1.node.membership.voters and n4.sm.get(b"still") == b"1",
            )
            assert n1.node.term == term
        finally:
            await c.stop_all()

    run(main())


def test_without_the_new_secret_the_old_majority_deposes_the_recovered_survivor():
    async def main():
        c = ZmqCluster(FOUNDERS)
        try:
            n1, term, old_leader = await recovered_survivor_and_returning_old_majority(c, OLD)
            await c.until(
                "n1 to follow a leader of the old majority",
                lambda: n1.node.term > term and n1.node.leader in ("n2", "n3"),
            )
            assert not c.leads("n1") and old_leader.id in ("n2", "n3")
        finally:
            await c.stop_all()

    run(main())
