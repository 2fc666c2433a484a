"""Real masters: the operator commands, a dead engine, and a leader that loses its quorum.

A module of its own with its own three masters (zeromq, ``gate_grace`` 2 s), so that every
test can run alone with ``-k``: each one first checks the state it needs (every gate open, one
agreed leader) and says which precondition is missing. The destructive test is last and leaves
the cluster whole again.

- ``salt-run raft.leader`` on every master, ``salt-call raft.is_ready`` (the upgrade runbook
  waits on it) against every master's config;
- ``raft.transfer_leader`` to a chosen follower, whoever leads;
- only the engine process of a master SIGKILLed: that master's gate closes (its readiness file
  goes stale), the master's process manager restarts the engine and the gate reopens; the
  other masters' gates stay open;
- two of three masters stopped: the survivor, which led, steps down (check-quorum) and its
  gate closes after ``gate_grace``; with the two back, a leader is elected and it reopens. The
  ``saltext/raft/*`` events of each step are asserted through pytest-salt-factories' event
  listener.
"""

from __future__ import annotations

import time

import pytest

from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import in_threads
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import FirstTrue
from tests.integration.conftest import GateWatch
from tests.integration.conftest import ready_state
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]

GRACE = 2.0
TAG = "saltext/raft/"


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with RaftCluster(
        salt_factories,
        tmp_path_factory.mktemp("quorum"),
        engine={"gate_grace": GRACE},
        name="quorum",
    ) as c:
        in_threads(*(lambda m=m: c.start([m]) for m in c.ids))
        yield c


def healthy(cluster) -> str:
    """Precondition of every test here: three masters up, every gate open, one agreed leader.
    Returns the leader."""
    down = [m for m in cluster.ids if not cluster.masters[m].is_running()]
    assert not down, f"precondition: masters {down} are not running"
    wait_for(cluster.gates_open, 90, "precondition: every master's gate open")
    return wait_for(cluster.leader, 30, "precondition: one leader every master agrees on")


def salt_call(cluster, mid: str, fun: str):
    """``salt-call --local <fun>`` reading master ``mid``'s config, as on that master's host.
    The minion is never started: salt-call only needs its config."""
    name = f"caller-{mid}"
    minion = cluster.minion(mid, name, start=False)
    ret = minion.salt_call_cli(timeout=90).run(
        "--local", fun, f"master_config={cluster.masters[mid].config_file}"
    )
    assert ret.returncode == 0, ret
    return ret.data


def test_salt_run_raft_leader_and_salt_call_raft_is_ready_on_every_master(cluster):
    leader = healthy(cluster)
    # Bootstrap's gate/open is not asserted here: the event listener's forwarding engine and
    # the raft engine start side by side in each master, and a gate that opens before the
    # forwarder has subscribed is announced to nobody (one master of three in a CI run). The
    # gate/open and gate/closed events are asserted on real masters below, after the listener
    # is in place (engine restart, quorum loss), and every emission in the service-wiring
    # unit tests.
    for mid in cluster.ids:
        rc, data, ret = run_json(cluster.masters[mid], "raft.leader")
        assert rc == 0, ret
        assert data["leader"] == leader and data["node_id"] == mid, data
        assert data["term"] == ready_state(cluster.masters[mid])["term"], data
        assert salt_call(cluster, mid, "raft.is_ready") is True


def test_transfer_leader_to_a_chosen_follower_whoever_leads(cluster, event_listener):
    leader = healthy(cluster)
    target = min(m for m in cluster.ids if m != leader)
    via = max(m for m in cluster.ids if m != leader)  # a follower: forwarded to the leader
    t0 = time.time()
    rc, data, ret = run_json(cluster.masters[via], "raft.transfer_leader", f"node={target}")
    assert rc == 0, ret
    wait_for(lambda: cluster.leader() == target, 30, f"{target} to lead after the transfer")
    assert ready_state(cluster.masters[leader]).get("role") == "follower"
    wait_for(cluster.gates_open, 30, "every gate open after the transfer")
    # Every master announces the new leader (reactors follow leadership with this event).
    seen = event_listener.wait_for_events(
        [(m, TAG + "leader") for m in cluster.ids], after_time=t0, timeout=30
    )
    assert seen.found_all_events, sorted((e.daemon_id, e.tag) for e in seen)
    assert {(e.daemon_id, e.data["leader"]) for e in seen} == {(m, target) for m in cluster.ids}


def test_add_and_remove_are_announced_as_membership_events_on_every_master(cluster, event_listener):
    leader = healthy(cluster)
    spare = "127.0.0.9"  # added as a learner and removed again; never started
    t0 = time.time()
    for args in (("raft.add", f"node={spare}", f"address={spare}:{cluster.raft_port}"),
                 ("raft.remove", f"node={spare}")):  # fmt: skip
        rc, data, ret = run_json(cluster.masters[leader], *args)
        assert rc == 0, ret

    def announced():
        events = event_listener.get_events(
            [(m, TAG + "membership") for m in cluster.ids], after_time=t0
        )
        return {(e.daemon_id, e.data.get("op"), e.data.get("node")) for e in events}

    want = {(m, op, spare) for m in cluster.ids for op in ("add_learner", "remove")}
    wait_for(lambda: want <= announced(), 30, f"every master to announce {spare} added, removed")
    wait_for(cluster.gates_open, 30, "every gate open after the change")


def test_a_dead_engine_closes_its_masters_gate_and_the_restarted_engine_reopens_it(
    cluster, event_listener
):
    psutil = pytest.importorskip("psutil")
    leader = healthy(cluster)
    victim = min(m for m in cluster.ids if m != leader)
    master = cluster.masters[victim]
    pid = ready_state(master)["pid"]  # the engine writes its own pid into the readiness file
    engine = psutil.Process(pid)
    # A process of its own under the master (not the master, nor a request worker: those do
    # not write the readiness file).
    assert engine.pid in {p.pid for p in psutil.Process(master.pid).children(recursive=True)}
    others = GateWatch(cluster, [m for m in cluster.ids if m != victim])
    others.start()
    closed = FirstTrue(lambda: not cluster.gate_open(victim))
    t0 = time.time()
    engine.kill()
    engine.wait(15)
    wait_for(lambda: closed.at is not None, 30, f"{victim}'s gate to close once its engine died")
    wait_for(
        lambda: cluster.gate_open(victim) and ready_state(master).get("pid") not in (None, pid),
        120,
        f"{victim}'s engine restarted by the master and its gate open again",
    )
    others.stop()
    assert master.is_running(), "the master itself must not have died"
    assert not others.closed, f"other masters' gates closed: {others.closed[:5]}"
    back = event_listener.wait_for_events(
        [(victim, TAG + "started"), (victim, TAG + "gate/open")], after_time=t0, timeout=30
    )
    assert back.found_all_events, sorted((e.daemon_id, e.tag) for e in back)


def test_a_leader_that_loses_its_quorum_steps_down_its_gate_closes_and_reopens(
    cluster, event_listener
):
    survivor = healthy(cluster)  # the leader: only check-quorum can make it step down
    others = [m for m in cluster.ids if m != survivor]
    t0 = time.time()
    in_threads(*(cluster.masters[m].terminate for m in others))
    wait_for(
        lambda: ready_state(cluster.masters[survivor]).get("ready") is False,
        60,
        f"{survivor}'s gate to close once it lost its quorum",
    )
    state = ready_state(cluster.masters[survivor])
    assert state["role"] != "leader" and not state.get("leader"), state
    assert state["reason"] == f"no leader for more than {GRACE:g}s", state
    closed = event_listener.wait_for_events(
        [(survivor, TAG + "gate/closed")], after_time=t0, timeout=30
    )
    assert closed.found_all_events, f"no {TAG}gate/closed from {survivor}"
    assert [e.data["reason"] for e in closed] == [state["reason"]]

    t1 = time.time()
    in_threads(*(lambda m=m: cluster.masters[m].start(start_timeout=120) for m in others))
    wait_for(cluster.gates_open, 120, "every gate open once the majority is back")
    wait_for(cluster.leader, 30, "an agreed leader after the majority came back")
    # Only the survivor's gate/open: a restarted master's engine can fire "started", "leader"
    # and even "gate/open" before the test's event forwarder (another engine of that master)
    # has subscribed (a CI run lost one master's "leader" that way), and the survivor announces
    # no "leader" if it is elected again (the event marks a change of leader). The restarted
    # masters' readiness is checked above through their readiness files; "leader" events are
    # asserted in the transfer test.
    back = event_listener.wait_for_events(
        [(survivor, TAG + "gate/open")], after_time=t1, timeout=30
    )
    assert back.found_all_events, f"no {TAG}gate/open from {survivor} after the majority returned"
