"""What the plugin's fixture does at teardown, checked on a live cluster: ``RaftCluster.close``
(which ``raft_cluster_factory`` calls when the test ends) stops every master and minion it
started and every process they started, by PID."""

import psutil
import pytest

from saltext_raft.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tree(factory) -> list[psutil.Process]:
    parent = psutil.Process(factory.pid)
    return [parent, *parent.children(recursive=True)]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_close_stops_every_daemon_and_its_children(raft_cluster_factory):
    cluster = raft_cluster_factory(1)  # one voter: it elects itself
    cluster.wait_gates_open()
    minion = cluster.minion(cluster.ids[0], "teardown-minion")
    master = cluster.masters[cluster.ids[0]]
    assert not gone(psutil.Process(master.pid)) and not gone(psutil.Process(minion.pid))
    # A daemon's tree has short-lived members too (Salt spawns one-shot children and reaps
    # them), so the set checked after close is what was alive when it was listed.
    procs = [p for p in tree(master) + tree(minion) if not gone(p)]
    assert len(procs) > 2

    cluster.close()

    wait_until(
        lambda: all(gone(p) for p in procs),
        30,
        "every daemon process gone",
        describe=lambda: [p for p in procs if not gone(p)],
    )
    assert cluster.running() == []
