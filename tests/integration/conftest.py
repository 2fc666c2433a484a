"""Real Salt masters with the raft engine, at 127.0.0.1, .2, .3 (and .4, .5), via
pytest-salt-factories.

Helpers, not fixtures with hidden state: each module builds what it needs (usually one cluster
shared by its scenarios, destructive ones last) and every daemon is stopped by its factory, by
PID, when the module ends. Waits are bounded and poll a condition; none sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time

import pytest
from pytestshellutils.utils import ports

from saltext_raft.master.settings import readiness_path
from saltext_raft.testing.cluster import kill_tree as kill_tree
from saltext_raft.testing.cluster import port_bindable as port_bindable
from saltext_raft.testing.cluster import run_json as run_json
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until

pytest.importorskip("saltfactories")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value; fail saying what was awaited."""
    try:
        return wait_until(predicate, timeout, what, interval)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


#: A readiness file older than this is stale (the workers' rule: 3 * readiness_interval + 1,
#: with the 0.5 s interval these tests configure): its engine is gone.
STALE_AFTER = 2.5


def ready_state(master) -> dict:
    """The engine's readiness file, or {} if it is missing or stale (as the gate sees it)."""
    path = readiness_path(master.config["cachedir"])
    try:
        if time.time() - os.stat(path).st_mtime > STALE_AFTER:
            return {}
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def log_text(factory) -> str:
    try:
        with open(factory.config["log_file"], encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class FirstTrue(threading.Thread):
    """Records the first moment ``predicate()`` is true (polled every 10 ms, for ``limit``)."""

    def __init__(self, predicate, limit: float = 180.0):
        super().__init__(daemon=True)
        self.predicate, self.limit = predicate, limit
        self.at: float | None = None
        self._halt = threading.Event()
        self.start()

    def run(self):
        deadline = time.monotonic() + self.limit
        while not self._halt.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.predicate():
                    self.at = time.monotonic()
                    return
            self._halt.wait(0.01)

    def stop(self):
        self._halt.set()


def time_to_all_gates_open(cluster, ids, start) -> float:
    """Call ``start()`` (which starts masters), then return the seconds from the last of
    ``ids``' request ports opening to every gate of ``ids`` open."""
    port_watches = [FirstTrue(lambda m=mid: port_open(m, cluster.ret_port, 0.05)) for mid in ids]
    gates = FirstTrue(lambda: cluster.all_ready(ids))
    start()
    wait_for(lambda: gates.at is not None, 60, f"every gate of {ids} open")
    wait_for(lambda: all(w.at is not None for w in port_watches), 10, "request ports seen")
    return gates.at - max(w.at for w in port_watches)


def gates_vs_ports(took: float) -> str:
    """What :func:`time_to_all_gates_open` measured, in words: the gates can also open before
    the last request port does (the engines reach a quorum while a master's request server is
    still binding; with ``transport: tcp`` this is seconds)."""
    if took >= 0:
        return f"every gate open {took:.2f}s after the last request port opened"
    return f"every gate open {-took:.2f}s before the last request port opened"


class GateWatch(threading.Thread):
    """Polls the readiness files of some masters every 50 ms and records every closed look."""

    def __init__(self, cluster, ids):
        super().__init__(daemon=True)
        self.cluster, self.ids = cluster, list(ids)
        self.closed: list[tuple[str, str]] = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for mid in self.ids:
                state = ready_state(self.cluster.masters[mid])
                if not state.get("ready"):
                    self.closed.append((mid, str(state.get("reason"))))
            self._halt.wait(0.05)

    def stop(self):
        self._halt.set()
        self.join(5)


def in_threads(*calls):
    """Run the calls concurrently; re-raise the first failure."""
    errors = []

    def wrap(fn):
        try:
            fn()
        except BaseException as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    if errors:
        raise errors[0]


class Cluster:
    """Builds master configs for a saltext-raft cluster on loopback addresses.

    Every master listens on its own address with the same ``ret_port``/``publish_port`` and
    the same raft port, as real hosts would. Each has its own secret file (same contents), so
    a test can give one master a wrong secret.
    """

    def __init__(self, salt_factories, tmp_path, size=3, transport=None, **engine_extra):
        self.factories = salt_factories
        self.tmp_path = tmp_path
        self.ids = [f"127.0.0.{i}" for i in range(1, size + 1)]
        self.raft_port = ports.get_unused_localhost_port()
        self.secret = secrets.token_hex(32)
        self.transport = transport
        self.engine_extra = engine_extra
        self.ret_port = ports.get_unused_localhost_port()
        self.publish_port = ports.get_unused_localhost_port()
        self.masters = {}
        self.stack = contextlib.ExitStack()

    def secret_file(self, name: str, secret: str | None = None) -> str:
        path = str(self.tmp_path / f"{name}.secret")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(secret or self.secret)
        os.chmod(path, 0o600)  # the engine refuses a secret others can read
        return path

    def engine(self, mid, **extra):
        conf = {
            "peers": {m: f"{m}:{self.raft_port}" for m in self.ids},
            "port": self.raft_port,
            "secret_file": self.secret_file(mid),
            "readiness_interval": 0.5,
        }
        conf.update(self.engine_extra)
        conf.update(extra)
        return conf

    def master_factory(self, mid, engine=None, name=None, **overrides):
        config = {
            "id": mid,
            "interface": mid,
            "ret_port": self.ret_port,
            "publish_port": self.publish_port,
            "engines": [{"raft": engine if engine is not None else self.engine(mid)}],
            "log_level_logfile": "info",
        }
        if self.transport:
            config["transport"] = self.transport
        config.update(overrides)
        # Overrides, not defaults: pytest-salt-factories' own defaults (a random ret_port and
        # publish_port per master, the log level) win over ``defaults``, and a minion pointed
        # at ``self.ret_port`` would then knock on a closed port.
        factory = self.factories.salt_master_daemon(name or mid, overrides=config)
        self.masters[name or mid] = factory
        return factory

    def minion_factory(self, master_id, minion_id):
        master = self.masters[master_id]
        overrides = {"master": master_id}
        if self.transport:
            overrides["transport"] = self.transport
        return master.salt_minion_daemon(minion_id, overrides=overrides)

    def start(self, factory, timeout=120):
        self.stack.enter_context(factory.started(start_timeout=timeout))
        return factory

    def ready(self, mid) -> bool:
        return bool(ready_state(self.masters[mid]).get("ready"))

    def all_ready(self, ids=None) -> bool:
        return all(self.ready(m) for m in ids or self.ids)

    def leader(self, ids=None) -> str | None:
        """The leader every given master's readiness file names, if they agree and it leads."""
        ids = list(ids or self.ids)
        states = [ready_state(self.masters[m]) for m in ids]
        named = {s.get("leader") for s in states}
        if len(named) != 1:
            return None
        leader = named.pop()
        if not leader or leader not in self.masters:
            return None
        if leader in ids and ready_state(self.masters[leader]).get("role") != "leader":
            return None
        return leader

    def close(self):
        self.stack.close()


def start_with_early_minion(cluster, minion_id="minion-early", timeout=180):
    """Start the first master alone (its gate closed: no quorum), start a minion on it, check
    it authenticates while the gate is closed, then start the other masters. Returns a record
    of what was observed; the minion's start event (which the factory waits for) can only be
    served once the gate opens."""
    first = cluster.ids[0]
    m1 = cluster.start(cluster.master_factory(first))
    wait_for(lambda: ready_state(m1).get("ready") is False, 30, f"{first}'s readiness file")
    record = {"closed_at_minion_start": not cluster.ready(first)}
    minion = cluster.minion_factory(first, minion_id)
    errors = []

    def start_minion():
        try:
            minion.start(start_timeout=timeout)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    th = threading.Thread(target=start_minion, daemon=True)
    th.start()
    cluster.stack.callback(minion.terminate)
    accepted = os.path.join(m1.config["pki_dir"], "minions", minion_id)
    wait_for(lambda: os.path.exists(accepted), 60, "the minion's key to be accepted (_auth)")
    record["closed_after_auth"] = not cluster.ready(first)
    rest = cluster.ids[1:]

    def start_rest():
        for mid in rest:
            cluster.start(cluster.master_factory(mid))

    record["all_open_after_last_port"] = time_to_all_gates_open(cluster, cluster.ids, start_rest)
    th.join(timeout + 10)
    record["minion_errors"] = errors
    record["minion"] = minion
    return record
