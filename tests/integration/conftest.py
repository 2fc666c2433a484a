"""This repository's helpers for its real-master tests, over the shipped plugin's
:class:`~saltext_raft.testing.cluster.RaftCluster` (which builds, starts, observes and stops the
masters: each module builds its cluster with it, usually one shared by its scenarios,
destructive ones last).

Lives here: what only these tests need on top of it: a failing wait (``pytest.fail``), the
readiness file as a poller reads it (:func:`ready_state`), master logs, watcher threads timing
gates and ports, concurrent calls, and the early-minion start. Must not live here: building or
starting masters, their ports and secret, kills and restarts (all ``RaftCluster``'s).
Waits are bounded and poll a condition; none sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import pytest

from saltext_raft.master import settings
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until

pytest.importorskip("saltfactories")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value; fail saying what was awaited."""
    try:
        return wait_until(predicate, timeout, what, interval)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def ready_state(master) -> dict:
    """The engine's readiness file (with its ``pid``), or {} if it is missing or older than the
    workers' staleness bound for this master's settings: a reading that needs no call to the
    master and tolerates a torn file, for the watcher threads below."""
    found = settings.read(master.config)
    try:
        if time.time() - os.stat(found.readiness_path).st_mtime > found.stale_after:
            return {}
        with open(found.readiness_path, encoding="utf-8") as fh:
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
    gates = FirstTrue(lambda: cluster.gates_open(ids))
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


def start_with_early_minion(cluster, minion_id="minion-early", timeout=180):
    """Start the first master of ``cluster`` (a ``RaftCluster``) alone (its gate closed: no
    quorum), start a minion on it, check it authenticates while the gate is closed, then start
    the other masters. Returns a record of what was observed; the minion's start event (which
    the factory waits for) can only be served once the gate opens."""
    first = cluster.ids[0]
    cluster.start([first])
    m1 = cluster.masters[first]
    wait_for(lambda: cluster.readiness(first).get("ready") is False, 30, f"{first}'s readiness")
    record = {"closed_at_minion_start": not cluster.gate_open(first)}
    minion = cluster.minion(first, minion_id, start=False)
    errors = []

    def start_minion():
        try:
            minion.start(start_timeout=timeout)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    th = threading.Thread(target=start_minion, daemon=True)
    th.start()
    accepted = os.path.join(m1.config["pki_dir"], "minions", minion_id)
    wait_for(lambda: os.path.exists(accepted), 60, "the minion's key to be accepted (_auth)")
    record["closed_after_auth"] = not cluster.gate_open(first)
    record["all_open_after_last_port"] = time_to_all_gates_open(
        cluster, cluster.ids, lambda: cluster.start(cluster.ids[1:])
    )
    th.join(timeout + 10)
    record["minion_errors"] = errors
    record["minion"] = minion
    return record
