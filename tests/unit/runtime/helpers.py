"""An in-process cluster of RaftRuntimes over MemoryStore and MemoryTransport.

Fast ticks (5 ms) keep elections quick; every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import asyncio
import random

from saltext_raft.core import Role
from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import RaftRuntime
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime import default_core_config
from saltext_raft.storage import MemoryDisk
from saltext_raft.storage import MemoryStore
from saltext_raft.transport import MemoryNetwork

TICK = 0.005


class LocalCluster:
    def __init__(
        self, ids=("n1", "n2", "n3"), extra=(), seed=1, sm_factory=DictStateMachine, **runtime_opts
    ):
        self.sm_factory = sm_factory
        self.net = MemoryNetwork()
        self.founders = {i: f"mem://{i}" for i in ids}
        self.peers = dict(self.founders, **{i: f"mem://{i}" for i in extra})
        self.disks = {i: MemoryDisk() for i in (*ids, *extra)}
        self.rng = random.Random(seed)
        self.opts = {"tick_seconds": TICK, "request_timeout": 2.0, "join_interval": 0.05}
        self.opts.update(runtime_opts)
        self.nodes: dict[str, RaftRuntime] = {}

    def make(self, nid: str, join: bool = False) -> RaftRuntime:
        return RaftRuntime(
            nid,
            MemoryStore(self.disks[nid]),
            self.net.transport(nid),
            self.sm_factory(),
            core_config=default_core_config(nid),
            config=RuntimeConfig(**self.opts),
            founders=self.founders,
            peers=self.peers,
            join=join,
            rng=random.Random(self.rng.random()),
        )

    async def start(self, nid: str, join: bool = False) -> RaftRuntime:
        rt = self.nodes[nid] = self.make(nid, join)
        await rt.start()
        return rt

    async def start_all(self):
        for nid in self.founders:
            await self.start(nid)

    async def __aenter__(self) -> LocalCluster:
        """``async with LocalCluster() as c``: the founders are started, and every node that
        is running at the end (founders, joiners, restarts) is stopped, whatever happened."""
        try:
            await self.start_all()
        except BaseException:
            await self.stop_all()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop_all()

    async def stop(self, nid: str):
        rt = self.nodes.pop(nid)
        await rt.stop()

    async def stop_all(self):
        for nid in list(self.nodes):
            await self.stop(nid)

    def leaders(self):
        return [rt for rt in self.nodes.values() if rt.running and rt.node.role is Role.LEADER]

    async def until(self, what: str, predicate, timeout: float = 5.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                import json

                dump = {n: rt.status() for n, rt in self.nodes.items()}
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; "
                    f"status: {json.dumps(dump, default=str, indent=1)}"
                )
            await asyncio.sleep(TICK)

    async def settled(self, timeout: float = 5.0) -> int:
        """Commit a marker entry through the leader and wait until every running node has
        applied it: whatever was proposed before (and is going to commit) is applied
        everywhere by then. The bound for "nothing was committed" checks, instead of a sleep."""
        leader = await self.leader(timeout)
        index = await leader.propose(b"settled", timeout=timeout)
        await self.until(
            f"every node to apply entry {index}",
            lambda: all(rt.node.applied_index >= index for rt in self.nodes.values()),
            timeout,
        )
        return index

    async def stop_a_follower(self) -> tuple[RaftRuntime, str]:
        """Stop one follower of the elected leader: (the leader, the stopped follower's id)."""
        leader = await self.leader()
        lagging = next(rt.id for rt in self.nodes.values() if rt is not leader)
        await self.stop(lagging)
        return leader, lagging

    async def leader(self, timeout: float = 5.0) -> RaftRuntime:
        await self.until(
            "one leader that committed in its term",
            lambda: len(self.leaders()) == 1 and self.leaders()[0].status()["leader_committed"],
            timeout,
        )
        return self.leaders()[0]
