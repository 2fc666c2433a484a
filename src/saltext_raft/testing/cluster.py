"""Real Salt masters with the raft engine, for test suites: :class:`RaftCluster`.

Lives here: building the master configs of one test cluster (each master on its own
``127.0.0.x`` address with the same ``ret_port``, ``publish_port`` and raft port, one generated
secret), starting them and minions through pytest-salt-factories, reading each master's gate
and leader as the master itself reports them, ``salt-run raft.members`` as data, killing a
master and everything it started by PID, restarting it, and stopping every daemon at the end.
Must not live here: pytest fixtures (:mod:`saltext_raft.testing.plugin`), any rule of the
engine or the gate (read through :mod:`saltext_raft.master.health`, never re-implemented).

Every wait is bounded and polls a condition; a wait that runs out raises
:class:`~saltext_raft.waiting.WaitTimeout` saying what was awaited and what was last seen.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import socket
import threading
import time

import psutil
from pytestshellutils.utils import ports

# The only names taken from the Salt-side package: one place to change if they move.
from saltext_raft.master import health
from saltext_raft.master.secret import generate as generate_secret
from saltext_raft.master.settings import readiness_path
from saltext_raft.waiting import wait_until

#: How often the engines of a test cluster refresh their readiness file (seconds): short, so
#: that a dead engine's gate closes within a few seconds.
READINESS_INTERVAL = 0.5
#: Default bounds (seconds) of the waits below.
START_TIMEOUT = 120
LEADER_TIMEOUT = 30
GATES_TIMEOUT = 60
#: ``worker_threads`` of a test master unless its configuration says otherwise (Salt's default
#: is 5). Each request worker loads Salt's modules when it starts: 0.9 s of CPU apiece, over
#: half of a master's start-up, measured on 2 CPUs under Salt 3007 (three masters: 52 s of CPU
#: to start and stop with 5 workers, 36 s with 2). Two still serve a held request (the gate
#: ties up its worker for up to ``gate_hold``) and a login at the same time.
WORKER_THREADS = 2

_names = itertools.count(1)


def master_ids(size: int) -> list[str]:
    """The ids (and addresses) of ``size`` masters: ``127.0.0.1`` .. ``127.0.0.<size>``."""
    if not 1 <= size <= 254:
        raise ValueError(f"size must be 1..254 masters, not {size!r}")
    return [f"127.0.0.{i}" for i in range(1, size + 1)]


def kill_tree(factory) -> list[int]:
    """SIGKILL a daemon and every process it started (a crashed host); wait until they are
    gone. Returns the PIDs killed."""
    parent = psutil.Process(factory.pid)
    procs = [parent, *parent.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert not alive, f"still alive after SIGKILL: {alive}"
    return [p.pid for p in procs]


def port_bindable(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` any more (a SIGKILLed engine released it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_json(factory, *args, timeout: float = 60):
    """``salt-run ... --out json`` on a master: ``(returncode, data or None, raw result)``."""
    ret = factory.salt_run_cli(timeout=timeout).run(*args, "--out", "json", _timeout=timeout)
    data = ret.data
    if data is None and ret.stdout:
        try:
            data = json.loads(ret.stdout)
        except ValueError:
            data = None
    return ret.returncode, data, ret


class RaftCluster:
    """``size`` masters ``127.0.0.1`` .. ``127.0.0.<size>`` running the raft engine.

    ``salt_factories`` is pytest-salt-factories' fixture; ``secret_dir`` a directory for the
    cluster secret. ``cache="raft"`` sets the masters' ``cache``; ``keys_cache_driver`` their
    ``keys.cache_driver``. ``engine`` is merged over each engine's settings and
    ``master_config`` over each master's configuration (each a dict, or a function of the
    master id returning one; an engine setting given as ``None`` is left out, e.g.
    ``{"secret_file": None}`` for the secret derived from Salt's cluster key).
    ``transport`` (e.g. ``"tcp"``) is set on every master and minion. ``factory_kwargs`` go
    to pytest-salt-factories' ``salt_master_daemon`` for every master (e.g.
    ``on_auth_event_callback``). ``name`` prefixes the factories' ids. Use it as a context
    manager, or call :meth:`close`: every daemon it started is stopped then.
    """

    def __init__(
        self,
        salt_factories,
        secret_dir,
        size: int = 3,
        *,
        cache: str | None = None,
        keys_cache_driver: str | None = None,
        engine: dict | None = None,
        master_config=None,
        name: str | None = None,
        transport: str | None = None,
        factory_kwargs: dict | None = None,
    ):
        self.ids = master_ids(size)
        self.factories = salt_factories
        self.name = name or f"raft{next(_names)}"
        self.raft_port = ports.get_unused_localhost_port()
        self.ret_port = ports.get_unused_localhost_port()
        self.publish_port = ports.get_unused_localhost_port()
        self.secret_file = generate_secret(os.path.join(str(secret_dir), f"{self.name}.secret"))
        self.transport = transport
        self._daemons: list = []  # every factory started, stopped by close()
        self._settings = (cache, keys_cache_driver, engine, master_config, factory_kwargs or {})
        self.masters = {mid: self._master_factory(mid) for mid in self.ids}
        self.minions: dict = {}

    # -- building ---------------------------------------------------------------------------

    def _master_factory(self, mid, name=None, engine=None, config=None):
        cache, keys_cache_driver, base_engine, master_config, factory_kwargs = self._settings
        engine_conf = {
            "peers": {m: f"{m}:{self.raft_port}" for m in self.ids},
            "port": self.raft_port,
            "secret_file": self.secret_file,
            "readiness_interval": READINESS_INTERVAL,
            **_for(base_engine, mid),
            **(engine or {}),
        }
        engine_conf = {k: v for k, v in engine_conf.items() if v is not None}
        conf = {
            "id": mid,
            "interface": mid,
            "ret_port": self.ret_port,
            "publish_port": self.publish_port,
            "engines": [{"raft": engine_conf}],
            "log_level_logfile": "info",
            "worker_threads": WORKER_THREADS,
        }
        if cache:
            conf["cache"] = cache
        if keys_cache_driver:
            conf["keys.cache_driver"] = keys_cache_driver
        if self.transport:
            conf["transport"] = self.transport
        conf.update(_for(master_config, mid))
        conf.update(config or {})
        # Overrides, not defaults: pytest-salt-factories' own defaults (a random ret_port per
        # master) would win over ``defaults``, and the masters would not share their ports.
        return self.factories.salt_master_daemon(
            f"{self.name}-{name or mid}", overrides=conf, **factory_kwargs
        )

    def add_master(self, mid: str, *, name: str | None = None, engine=None, **config):
        """Build (not start) one more master ``mid`` (a ``127.0.0.x`` address outside
        :attr:`ids`) sharing this cluster's ports and secret, the cluster's settings applied
        and then ``engine`` (a dict merged over its engine's settings) and ``config`` (over its
        master configuration). Its ``peers`` are the founding masters, so once started it asks
        to join (pass ``raft.add`` first, or ``engine={"peers": ...}``, for the other ways in).
        It is ``masters[name or mid]``; start it with :meth:`start`. Returns its factory."""
        key = name or mid
        if key in self.masters:
            raise ValueError(f"this cluster already has a master {key!r}")
        self.masters[key] = self._master_factory(mid, name=key, engine=engine, config=config)
        return self.masters[key]

    # -- starting and stopping --------------------------------------------------------------

    def start(self, ids=None, timeout: float = START_TIMEOUT) -> RaftCluster:
        """Start the given masters (all by default), side by side: a master alone waits for
        the others anyway, and each spends most of its start on its own CPU work. Each is
        stopped by :meth:`close`. Raises the first start that failed, once all have ended."""
        factories = [self.masters[mid] for mid in ids or self.ids]
        self._daemons.extend(factories)
        # Bounded by each factory (its start_timeout per attempt, its max_start_attempts): a
        # limit of our own could cut short a start the caller gave more time.
        starts = (functools.partial(f.start, start_timeout=timeout) for f in factories)
        in_threads(*starts, limit=None)
        return self

    def minion(
        self,
        master_id: str,
        minion_id: str,
        timeout: float = START_TIMEOUT,
        *,
        start: bool = True,
        **config,
    ):
        """Start a minion attached to ``master_id`` (whose gate must open for it to start);
        ``config`` overrides its configuration. ``start=False`` only builds it (start it
        yourself, e.g. in a thread while the gate is still closed). Stopped by :meth:`close`
        either way."""
        overrides = {"master": master_id}
        if self.transport:
            overrides["transport"] = self.transport
        factory = self.masters[master_id].salt_minion_daemon(
            minion_id, overrides={**overrides, **config}
        )
        self._daemons.append(factory)
        self.minions[minion_id] = factory
        if start:
            factory.start(start_timeout=timeout)
        return factory

    def kill(self, mid: str) -> list[int]:
        """SIGKILL master ``mid`` and every process it started (engine, workers), by PID."""
        return kill_tree(self.masters[mid])

    def restart(self, mid: str, timeout: float = START_TIMEOUT):
        """Start master ``mid`` again after :meth:`kill` or :meth:`stop` (once its raft port is
        free again)."""
        factory = self.masters[mid]
        _terminate(factory)  # a killed daemon's factory still holds its old process
        wait_until(lambda: port_bindable(mid, self.raft_port), 15, f"{mid}'s raft port free")
        self._daemons.append(factory)
        factory.start(start_timeout=timeout)
        return factory

    def stop(self, mid: str) -> None:
        """Stop master ``mid`` gracefully (SIGTERM to its PID, then SIGKILL if it lingers)."""
        _terminate(self.masters[mid])

    def running(self) -> list[str]:
        """The ids of the founding masters running now."""
        return [m for m in self.ids if self.masters[m].is_running()]

    def close(self) -> None:
        """Stop every minion and master this cluster started, side by side (a Salt daemon
        takes seconds to stop; one stuck until its SIGKILL no longer holds up the rest)."""
        daemons, self._daemons = self._daemons, []
        unique = list({id(f): f for f in daemons}.values())
        in_threads(*(functools.partial(_terminate, f) for f in unique), limit=None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- observing --------------------------------------------------------------------------

    def status(self, mid: str) -> dict:
        """Master ``mid``'s readiness as its own gate sees it (``raft.is_ready``'s reading)."""
        return health.status(self.masters[mid].config)

    def gate_open(self, mid: str) -> bool:
        return bool(self.status(mid).get("ready"))

    def gates_open(self, ids=None) -> bool:
        """True if the gate of every master of ``ids`` (default: all founding ones) is open."""
        return all(self.gate_open(m) for m in ids or self.ids)

    def readiness(self, mid: str) -> dict:
        """What master ``mid``'s engine last wrote to its readiness file (with the engine's
        ``pid``), or ``{}`` if there is none. Taken as written: whether it is still believed
        (fresh, engine alive) is :meth:`status`'s answer."""
        path = readiness_path(self.masters[mid].config["cachedir"])
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def leader(self, among=None) -> str | None:
        """The leader every running master of ``among`` (default: all) names, if they agree
        and that master says it leads; else None."""
        ids = [m for m in (among or self.ids) if self.masters[m].is_running()]
        if not ids:
            return None
        states = {m: self.status(m) for m in ids}
        if not all(s.get("fresh") for s in states.values()):
            return None
        named = {s.get("leader") for s in states.values()}
        if len(named) != 1:
            return None
        leader = named.pop()
        if leader not in self.masters:
            return None
        if leader in states and not states[leader].get("is_leader"):
            return None
        return leader

    def wait_for_leader(self, among=None, other_than=None, timeout: float = LEADER_TIMEOUT):
        """Wait until the running masters of ``among`` agree on a leader that is not
        ``other_than``; return its id."""

        def agreed():
            found = self.leader(among)
            return found if found and found != other_than else None

        return wait_until(
            agreed,
            timeout,
            "an agreed leader" + (f" other than {other_than}" if other_than else ""),
            interval=0.1,
            describe=lambda: {m: self.status(m) for m in among or self.ids},
        )

    def wait_gates_open(self, ids=None, timeout: float = GATES_TIMEOUT) -> None:
        """Wait until the gate of every master of ``ids`` (default: all) is open."""
        ids = list(ids or self.ids)
        wait_until(
            lambda: self.gates_open(ids),
            timeout,
            f"every gate of {ids} open",
            describe=lambda: {m: self.status(m).get("reason") for m in ids},
        )

    def salt_run(self, mid: str, *args, timeout: float = 60):
        """``salt-run <args> --out json`` on master ``mid``; its output as data (a bare
        string, which Salt prints without JSON quotes, as that string). Raises AssertionError
        if the runner exits non-zero."""
        rc, data, ret = run_json(self.masters[mid], *args, timeout=timeout)
        assert rc == 0, f"salt-run {' '.join(map(str, args))} on {mid} failed: {ret}"
        if data is None and ret.stdout.strip():
            return ret.stdout.strip()
        return data

    def members(self, mid: str | None = None, timeout: float = 30) -> dict:
        """``salt-run raft.members`` on master ``mid`` (default: the first running one), as
        data. Raises AssertionError if the runner fails."""
        mid = mid or self.running()[0]
        data = self.salt_run(mid, "raft.members", timeout=timeout)
        assert isinstance(data, dict), f"raft.members on {mid} returned {data!r}"
        return data


def _for(setting, mid: str) -> dict:
    """A per-master setting: a dict, or a function of the master id returning one."""
    return dict((setting(mid) if callable(setting) else setting) or {})


def _terminate(factory) -> None:
    with contextlib.suppress(Exception):
        factory.terminate()


def in_threads(*calls, limit: float | None = 600) -> None:
    """Run the calls side by side, each in its own thread, and wait for all of them (at most
    ``limit`` seconds; None for calls bounded by themselves); then raise the first error, or
    RuntimeError if one is still running."""
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,), daemon=True) for fn in calls]
    for t in threads:
        t.start()
    deadline = None if limit is None else time.monotonic() + limit
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"still running after {limit} s: {[t.name for t in threads]}")
