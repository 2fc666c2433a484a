"""In-process cache engines: RaftRuntimes over MemoryNetwork, each with a CacheService serving
the ``raft`` driver's socket, all on one event loop in a background thread.

Each node gets its own ``cachedir`` and ``sock_dir``, so a test builds one Salt opts dict per
"master" and uses ``salt.cache.Cache(opts)`` against it exactly as a worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading

from saltext_raft.core import Role
from saltext_raft.replicated.config import from_opts
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime import RaftRuntime
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime import default_core_config
from saltext_raft.storage import MemoryDisk
from saltext_raft.storage import MemoryStore
from saltext_raft.transport import MemoryNetwork
from saltext_raft.waiting import wait_until

TICK = 0.01


class InProcessCluster:
    def __init__(
        self,
        base_dir: str,
        ids=("m1",),
        founders=None,
        base_opts=None,
        on_service=None,
        runtime_options=None,
    ):
        self.ids = list(ids)
        #: RuntimeConfig fields over the defaults below (e.g. ``snapshot_keep``).
        self.runtime_options = dict(runtime_options or {})
        self.base_dir = base_dir
        self.base_opts = dict(base_opts or {})
        #: Per-node opts over ``base_opts`` (one master's config file, e.g. during an upgrade);
        #: read at every ``opts(nid)``, so a change applies to the node's next start and to
        #: the caches built for it from then on.
        self.node_opts: dict[str, dict] = {}
        #: ``on_service(nid, service)``, called before a node starts, so that what watches its
        #: cache service (as the engine's roots service does) sees the catch-up after start.
        self.on_service = on_service
        self.founders = {i: f"mem://{i}" for i in (founders or ids)}
        self.net = MemoryNetwork()
        self.disks = {i: MemoryDisk() for i in self.ids}
        self.runtimes: dict[str, RaftRuntime] = {}
        self.services: dict[str, CacheService] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def opts(self, nid: str) -> dict:
        root = os.path.join(self.base_dir, nid)
        opts = {
            "id": nid,
            "cache": "raft",
            "cachedir": os.path.join(root, "cache"),
            "sock_dir": os.path.join(root, "sock"),
            "extension_modules": os.path.join(root, "extmods"),
            "raft_cache_timeout": 2.0,
        }
        opts.update(self.base_opts)
        opts.update(self.node_opts.get(nid, {}))
        for key in ("cachedir", "sock_dir"):
            os.makedirs(opts[key], exist_ok=True)
        return opts

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, nid: str) -> None:
        self.run(self._start(nid))

    async def _start(self, nid: str) -> None:
        service = CacheService(from_opts(self.opts(nid)))
        if self.on_service is not None:
            self.on_service(nid, service)
        rt = RaftRuntime(
            nid,
            MemoryStore(self.disks[nid]),
            self.net.transport(nid),
            service.state_machine,
            core_config=default_core_config(nid),
            config=RuntimeConfig(
                **{
                    "tick_seconds": TICK,
                    "request_timeout": 2.0,
                    "join_interval": 0.05,
                    **self.runtime_options,
                }
            ),
            founders=self.founders,
            peers=self.founders,
            rng=random.Random(hash(nid) & 0xFFFF),
        )
        service.start_writer(asyncio.get_running_loop())
        await rt.start()
        await service.start(rt)
        self.runtimes[nid], self.services[nid] = rt, service

    def stop(self, nid: str) -> None:
        async def _stop():
            await self.services.pop(nid).stop()
            await self.runtimes.pop(nid).stop()

        self.run(_stop())

    def close(self) -> None:
        for nid in list(self.runtimes):
            self.stop(nid)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def wait_caught_up(self, timeout: float = 10.0) -> None:
        """Until every running node's cache has caught up after its start (reads are served)."""
        wait_until(
            lambda: all(s.caught_up for s in self.services.values()),
            timeout,
            "every node's local copy caught up",
            0.01,
        )

    def leader(self) -> str | None:
        for nid, rt in self.runtimes.items():
            if rt.running and rt.node.role is Role.LEADER:
                return nid
        return None


@contextlib.contextmanager
def started_cluster(base_dir: str, ids, base_opts=None, runtime_options=None):
    """An InProcessCluster with every node started and a leader elected; closed on exit."""
    c = InProcessCluster(base_dir, ids=ids, base_opts=base_opts, runtime_options=runtime_options)
    try:
        for nid in c.ids:
            c.start(nid)
        wait_until(lambda: c.leader() is not None, 10, "a leader", 0.01)
        c.wait_caught_up()
        yield c
    finally:
        c.close()
