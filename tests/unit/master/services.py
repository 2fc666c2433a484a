"""The engine service (:class:`RaftService`) on every node of an in-memory cluster.

Lives here: :class:`ServiceCluster` (a :class:`LocalCluster` whose nodes are each run by a
``RaftService``, as the ``raft`` engine runs them on a master), the ports the services get in
place of Salt's (:class:`RecordingBus` for events, :class:`IdleControlBus` for the control
server, :class:`ManualClock` for the leader-loss grace), and a worker's view of each master's
readiness file (the request gate's own reader). Must not live here: assertions (the tests make
them) or any second copy of the readiness rules.

Each service writes its readiness file under its own ``cachedir`` in ``tmp_path``; every wait
is bounded and names what it waited for.
"""

from __future__ import annotations

import asyncio
import gc
import threading

from saltext_raft.master import gate
from saltext_raft.master import secret
from saltext_raft.master.config import from_opts
from saltext_raft.master.service import EVENT_PREFIX
from saltext_raft.master.service import RaftService
from tests.unit.runtime.helpers import LocalCluster


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingBus:
    """The service's event port: records what it fires, in order."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def fire_event(self, data: dict, tag: str) -> None:
        self.events.append((tag, dict(data)))

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.events]

    def of(self, tag: str) -> list[dict]:
        return [data for t, data in self.events if t == tag]


class IdleControlBus:
    """The control server's bus: carries no request (runners are tested elsewhere)."""

    def __init__(self):
        self._idle = threading.Event()

    def get_event(self, wait: float = 0.5, tag: str = "", full: bool = False):
        self._idle.wait(min(wait, 0.05))

    def fire_event(self, data: dict, tag: str) -> None:
        raise AssertionError(f"the control server answered a request nobody sent: {tag}")


class ServiceCluster:
    """``async with ServiceCluster(tmp_path) as sc``: three founding masters m1..m3, each run
    by a RaftService over the in-memory network, sharing one :class:`ManualClock`."""

    def __init__(
        self, tmp_path, ids=("m1", "m2", "m3"), extra=(), node_options=None, **engine_options
    ):
        self.tmp_path = tmp_path
        self.node_options = node_options or {}
        self.cluster = LocalCluster(ids=ids, extra=extra)
        self.peers = {nid: f"127.0.0.{i}:4606" for i, nid in enumerate(ids, start=1)}
        self.engine_options = {"gate_grace": 5.0, "readiness_interval": 0.5, **engine_options}
        self.clock = ManualClock()
        self.services: dict[str, RaftService] = {}
        self.buses: dict[str, RecordingBus] = {}
        self.opts: dict[str, dict] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    # --- building -------------------------------------------------------------------------
    def master_opts(self, nid: str, **options) -> dict:
        secret_file = self.tmp_path / "raft.secret"
        if not secret_file.exists():  # one secret for the whole cluster, private and strong
            secret.generate(str(secret_file))
        raft = {
            "peers": self.peers,
            "secret_file": str(secret_file),
            **self.engine_options,
            **options,
        }
        return {
            "id": nid,
            "interface": "127.0.0.1",
            "cachedir": str(self.tmp_path / nid / "cache"),
            "sock_dir": str(self.tmp_path / nid / "sock"),
            "engines": [{"raft": raft}],
        }

    async def start(self, nid: str, join: bool = False, **options) -> RaftService:
        """Start ``nid``'s service (and through it, its runtime) on the running loop."""
        opts = self.opts[nid] = self.master_opts(nid, **options)
        cfg = from_opts(opts, opts["engines"][0]["raft"])
        bus = self.buses[nid] = RecordingBus()

        def runtime():
            rt = self.cluster.nodes[nid] = self.cluster.make(nid, join=join)
            return rt

        svc = RaftService(
            opts,
            cfg,
            event_bus=bus,
            clock=self.clock,
            runtime_factory=runtime,
            control_bus=IdleControlBus(),
        )
        self.services[nid] = svc
        self._tasks[nid] = asyncio.get_running_loop().create_task(svc.serve(), name=f"svc-{nid}")
        await self.until(
            f"{nid}'s service to start its runtime",
            lambda: svc.runtime is not None and svc.runtime.running,
        )
        return svc

    async def stop(self, nid: str) -> None:
        svc, task = self.services.pop(nid), self._tasks.pop(nid)
        svc.stop()
        await asyncio.wait_for(task, 10)
        self.cluster.nodes.pop(nid, None)

    async def __aenter__(self) -> ServiceCluster:
        try:
            for nid in self.peers:
                await self.start(nid, **self.node_options.get(nid, {}))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            for nid in list(self.services):
                await self.stop(nid)
            await self.cluster.stop_all()
        finally:
            gc.unfreeze()  # the service freezes the GC's view of its process (an engine's own)

    # --- looking --------------------------------------------------------------------------
    def gate_reader(self, nid: str):
        """The readiness reader a request worker of ``nid``'s master builds from its opts."""
        return gate.Gate().for_opts(self.opts[nid]).reader

    def gate_open(self, nid: str) -> bool:
        return self.gate_reader(nid).check()

    def events(self, nid: str, tag: str) -> list[dict]:
        return self.buses[nid].of(EVENT_PREFIX + tag)

    async def until(self, what: str, predicate, timeout: float = 10.0) -> None:
        await self.cluster.until(what, predicate, timeout)
