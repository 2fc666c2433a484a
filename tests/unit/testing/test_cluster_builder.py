"""``RaftCluster`` without Salt daemons: the configuration it gives each master, and that it
starts and stops its daemons side by side, every one of them, even when one fails."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestshellutils")

from saltext_raft.testing import cluster as cluster_mod
from saltext_raft.testing.cluster import RaftCluster


class FakeDaemon:
    """Records its start and stop; both wait at a barrier when given one, so a test can tell
    side by side (all reach it) from one after another (the first waits forever)."""

    def __init__(self, name, config, barrier=None, fail=False):
        self.name, self.config, self.barrier, self.fail = name, config, barrier, fail
        self.started = self.terminated = 0

    def start(self, start_timeout=None):
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        self.started += 1
        if self.fail:
            raise RuntimeError(f"{self.name} did not start")

    def terminate(self):
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        self.terminated += 1

    def salt_minion_daemon(self, minion_id, overrides):
        return FakeDaemon(minion_id, overrides, self.barrier)


class FakeFactories:
    def __init__(self, barrier=None, fail=()):
        self.barrier, self.fail, self.daemons = barrier, set(fail), {}

    def salt_master_daemon(self, name, overrides):
        mid = overrides["id"]
        d = self.daemons[mid] = FakeDaemon(name, overrides, self.barrier, mid in self.fail)
        return d


def test_a_test_master_runs_two_workers_unless_its_configuration_says_otherwise(tmp_path):
    c = RaftCluster(FakeFactories(), tmp_path, 2, master_config={"worker_threads": 5})
    assert {m.config["worker_threads"] for m in c.masters.values()} == {5}
    c = RaftCluster(FakeFactories(), tmp_path, 2)
    assert {m.config["worker_threads"] for m in c.masters.values()} == {cluster_mod.WORKER_THREADS}
    assert cluster_mod.WORKER_THREADS < 5  # Salt's default: the point of setting it


def test_start_and_close_run_side_by_side(tmp_path):
    # Each start waits at a barrier that opens only when all three masters wait at once, and
    # each stop (three masters, one minion) at one for all four: one after another would
    # break the barrier (10 s) instead.
    factories = FakeFactories(barrier=threading.Barrier(3))
    c = RaftCluster(factories, tmp_path, 3)
    c.start()
    assert all(d.started == 1 for d in factories.daemons.values())
    minion = c.minion(c.ids[0], "m-1", start=False)
    stopping = threading.Barrier(4)
    for d in [*factories.daemons.values(), minion]:
        d.barrier = stopping
    c.close()
    assert [d.terminated for d in factories.daemons.values()] == [1, 1, 1]
    assert minion.terminated == 1
    c.close()  # nothing left to stop: a second close does nothing
    assert minion.terminated == 1


def test_a_failed_start_is_raised_after_every_start_ended_and_all_are_still_stopped(tmp_path):
    factories = FakeFactories(fail={"127.0.0.2"})
    c = RaftCluster(factories, tmp_path, 3)
    with pytest.raises(RuntimeError, match="127.0.0.2 did not start"):
        c.start()
    assert [d.started for d in factories.daemons.values()] == [1, 1, 1]
    c.close()
    assert [d.terminated for d in factories.daemons.values()] == [1, 1, 1]


def test_a_restarted_master_is_stopped_once_at_close(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_mod, "port_bindable", lambda host, port: True)
    factories = FakeFactories()
    c = RaftCluster(factories, tmp_path, 3)
    c.start()
    c.restart(c.ids[1])
    m2 = factories.daemons[c.ids[1]]
    assert (m2.started, m2.terminated) == (2, 1)
    c.close()
    assert m2.terminated == 2


def test_in_threads_says_when_a_call_outlives_its_limit():
    release = threading.Event()
    with pytest.raises(RuntimeError, match="still running after 0.2 s"):
        cluster_mod.in_threads(lambda: release.wait(10), lambda: None, limit=0.2)
    release.set()
