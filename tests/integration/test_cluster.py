"""Scenarios on real masters: election, members, failover, the gate with a minion."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.integration.conftest import Cluster
from tests.integration.conftest import ready_state
from tests.integration.conftest import run_json
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def cluster(salt_factories, tmp_path):
    c = Cluster(salt_factories, tmp_path)
    with contextlib.ExitStack() as stack:
        c.stack = stack
        yield c


def start_all(c):
    for mid in c.ids:
        f = c.master_factory(mid)
        c.stack.enter_context(f.started(start_timeout=120))
    return c


def leaders(c, ids=None):
    return {ready_state(c.masters[m]).get("leader") for m in (ids or c.ids)}


def test_three_masters_elect_one_leader_and_agree_on_members(cluster):
    start_all(cluster)
    t_last_up = time.monotonic()
    wait_for(lambda: all(cluster.ready(m) for m in cluster.ids), 30, "every gate open")
    print(f"\nall gates open {time.monotonic() - t_last_up:.2f}s after the last master started")
    roles = [ready_state(cluster.masters[m]).get("role") for m in cluster.ids]
    assert roles.count("leader") == 1, roles
    seen = []
    for mid in cluster.ids:
        rc, data, ret = run_json(cluster.masters[mid], "raft.members")
        assert rc == 0, ret
        seen.append((tuple(data["voters"]), data["leader"]))
        assert data["learners"] == []
    assert len(set(seen)) == 1, seen
    assert sorted(seen[0][0]) == sorted(cluster.ids)


def test_runner_fails_clearly_when_the_engine_is_not_running(salt_factories, tmp_path):
    c = Cluster(salt_factories, tmp_path, size=1)
    bad = c.engine(secret_file=str(tmp_path / "missing"))
    f = c.master_factory(c.ids[0], engine=bad)
    with f.started(start_timeout=120):
        rc, data, ret = run_json(f, "raft.status", "timeout=2")
        assert rc != 0, ret
        assert "no reply from the raft engine" in ret.stdout
        wait_for(lambda: "secret_file" in open(f.config["log_file"]).read(), 20,
                 "the engine's config error in the master log")


def kill_tree(factory):
    """SIGKILL a master and every process it started (engine, workers): a crashed host."""
    import psutil

    parent = psutil.Process(factory.pid)
    procs = [parent, *parent.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.mark.xfail(
    run=False,
    reason="written, not yet passing: on 3008.4 it hangs after every gate opened (before the "
    "new-leader check); not diagnosed yet",
)
def test_leader_failover_keeps_survivor_gates_open_and_old_leader_rejoins(cluster):
    start_all(cluster)
    wait_for(lambda: all(cluster.ready(m) for m in cluster.ids), 30, "every gate open")
    old = ready_state(cluster.masters[cluster.ids[0]])["leader"]
    survivors = [m for m in cluster.ids if m != old]
    target = cluster.masters[survivors[0]]
    minion = target.salt_minion_daemon(
        "minion-fo", overrides={"master": f"{survivors[0]}:{cluster.ret_port}"}
    )
    cluster.stack.enter_context(minion.started(start_timeout=120))
    ret = target.salt_cli(timeout=60).run("test.ping", minion_tgt="minion-fo")
    assert ret.returncode == 0 and ret.data is True, ret

    kill_tree(cluster.masters[old])
    t0 = time.monotonic()
    closed = []

    def new_leader():
        for m in survivors:
            if not cluster.ready(m):
                closed.append(m)
        found = leaders(cluster, survivors)
        return len(found) == 1 and (found - {old, None, ""}) and found

    found = wait_for(new_leader, 20, "a new leader among the survivors")
    print(f"\nnew leader {found} {time.monotonic() - t0:.2f}s after SIGKILL of {old}")
    assert not closed, f"survivor gates closed during failover: {closed}"
    ret = target.salt_cli(timeout=60).run("test.ping", minion_tgt="minion-fo")
    assert ret.returncode == 0 and ret.data is True, ret

    # The old leader restarts and rejoins as a follower.
    f = cluster.masters[old]
    with contextlib.suppress(Exception):
        f.terminate()
    f.start(start_timeout=120)
    wait_for(
        lambda: ready_state(f).get("role") == "follower" and cluster.ready(old),
        30, f"{old} to rejoin as a follower with its gate open",
    )
    rc, data, ret = run_json(f, "raft.members")
    assert rc == 0 and data["leader"] in survivors and sorted(data["voters"]) == cluster.ids


@pytest.mark.xfail(
    run=False,
    reason="written, not yet passing: on 3008.4 the early minion logs 'Request timed out' for "
    "180s and never fires its start event; suspect gate_hold (5s) >= the minion's request "
    "timeout, and held requests occupying workers",
)
def test_minion_started_before_the_cluster_is_ready_is_held_then_served(cluster):
    import threading

    first = cluster.ids[0]
    m1 = cluster.master_factory(first)
    cluster.stack.enter_context(m1.started(start_timeout=120))
    wait_for(lambda: ready_state(m1).get("ready") is False, 20, "m1's readiness file (closed)")
    assert not cluster.ready(first)  # one of three founders: no quorum, no leader
    minion = m1.salt_minion_daemon("minion-early", overrides={"master": f"{first}:{cluster.ret_port}"})
    errors = []

    def start_minion():
        try:
            minion.start(start_timeout=180)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    th = threading.Thread(target=start_minion, daemon=True)
    th.start()
    cluster.stack.callback(minion.terminate)
    # _auth passes a closed gate: the minion's key reaches the master while it is not ready.
    accepted = f"{m1.config['pki_dir']}/minions/minion-early"
    import os

    wait_for(lambda: os.path.exists(accepted), 60, "the minion's key to be accepted (auth)")
    assert not cluster.ready(first)
    for mid in cluster.ids[1:]:
        cluster.stack.enter_context(cluster.master_factory(mid).started(start_timeout=120))
    wait_for(lambda: cluster.ready(first), 30, "m1's gate to open")
    th.join(180)
    assert not errors, errors
    ret = m1.salt_cli(timeout=60).run("test.ping", minion_tgt="minion-early")
    assert ret.returncode == 0 and ret.data is True, ret
