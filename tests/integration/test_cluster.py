"""Scenarios on one shared cluster of real masters (zeromq), in order, destructive ones last.

The module's cluster is built by the early-minion scenario itself: master 1 starts alone (no
quorum, gate closed), a minion starts against it, then masters 2 and 3. Then: one leader and
agreed membership; masters with a wrong secret can neither join nor vote; a master nobody
added joins by itself (JOIN) as a learner and is promoted, alongside one added with
``raft.add``, then both are removed (their gates close); the leader is SIGKILLed (failover,
rejoin); every master is stopped and started again.

Every test runs alone (``pytest -k``) as well as in file order: before it starts, each brings
the shared cluster to the state it needs (:func:`ensure_founders`: masters 1-3 running, the only
members, one agreed leader, every gate open; the removal test starts its two extra masters if
no earlier test left them running), restarting what an earlier test stopped and removing what
it added, so one failure does not cascade. The runner test builds its own one-master cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

import pytest

from saltext_raft.master.secret import generate as generate_secret
from saltext_raft.master.settings import readiness_path
from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import in_threads
from saltext_raft.testing.cluster import port_bindable
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import GateWatch
from tests.integration.conftest import gates_vs_ports
from tests.integration.conftest import log_text
from tests.integration.conftest import ready_state
from tests.integration.conftest import start_with_early_minion
from tests.integration.conftest import time_to_all_gates_open
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]

MINION = "minion-early"


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with RaftCluster(salt_factories, tmp_path_factory.mktemp("cluster"), name="cluster") as c:
        c.early = start_with_early_minion(c, MINION)
        yield c


def ping(cluster, via, minion=MINION):
    """One ``salt <minion> test.ping`` (salt's own timeout 10 s, the CLI process's 40 s)."""
    try:
        ret = (
            cluster.masters[via]
            .salt_cli(timeout=40)
            .run("test.ping", "-t", "10", minion_tgt=minion)
        )
    except Exception as exc:  # pylint: disable=broad-except
        return False, exc
    return ret.returncode == 0 and ret.data is True, ret


def members(cluster, via):
    return cluster.members(via)


def restart_stopped(cluster, ids):
    """Start again every one of ``ids`` that an earlier test stopped or SIGKILLed."""
    for mid in ids:
        if not cluster.masters[mid].is_running():
            cluster.restart(mid)


def ensure_founders(cluster, keep_learners=()) -> str:
    """Bring the cluster to its founding state and return the agreed leader: masters 1-3
    running, one leader among them, every gate open, and no other member (each other member
    is removed with ``raft.remove`` and its master stopped), except the learners named in
    ``keep_learners`` that are learners."""
    restart_stopped(cluster, cluster.ids)
    leader = wait_for(cluster.leader, 90, "an agreed leader among masters 1-3")
    data = members(cluster, leader)
    extras = [
        m
        for m in data["members"]
        if m not in cluster.ids and not (m in keep_learners and m in data["learners"])
    ]
    for node in extras:
        rc, _, ret = run_json(cluster.masters[leader], "raft.remove", f"node={node}")
        assert rc == 0, ret
    for name, factory in cluster.masters.items():
        if name not in cluster.ids and name not in keep_learners and factory.is_running():
            factory.terminate()
    wait_for(
        lambda: not set(extras) & set(members(cluster, cluster.ids[0])["members"]),
        30,
        f"{extras} removed",
    )
    wait_for(cluster.gates_open, 60, "every gate of masters 1-3 open")
    return wait_for(cluster.leader, 30, "an agreed leader among masters 1-3")


@pytest.fixture
def founders(cluster):
    """The shared cluster in its founding state (:func:`ensure_founders`), whatever the tests
    before this one did to it."""
    ensure_founders(cluster)
    return cluster


def test_minion_started_before_the_cluster_is_ready_is_held_then_served(cluster):
    early = cluster.early
    assert early["closed_at_minion_start"], "master 1's gate was open before it had a quorum"
    # _auth passes a closed gate: the key was accepted while master 1 was not ready.
    assert early["closed_after_auth"]
    # The minion's start event (a request held by the gate) was served once the gate opened.
    assert not early["minion_errors"], early["minion_errors"]
    ok, ret = ping(cluster, cluster.ids[0])
    assert ok, ret  # the job return arrived: none lost
    print(f"\n{gates_vs_ports(early['all_open_after_last_port'])}")


def test_three_masters_elect_one_leader_and_agree_on_members(founders):
    cluster = founders
    roles = [ready_state(cluster.masters[m]).get("role") for m in cluster.ids]
    assert roles.count("leader") == 1, roles
    seen = set()
    for mid in cluster.ids:
        data = members(cluster, mid)
        assert data["learners"] == [], data
        seen.add((tuple(sorted(data["voters"])), data["leader"]))
    assert len(seen) == 1, seen
    voters, leader = seen.pop()
    assert list(voters) == sorted(cluster.ids) and leader in cluster.ids


def add_learner(cluster, via, node):
    rc, data, ret = run_json(
        cluster.masters[via], "raft.add", f"node={node}", f"address={node}:{cluster.raft_port}"
    )
    assert rc == 0, ret
    return data


def test_masters_with_a_wrong_secret_cannot_join_or_vote_and_say_why(founders, tmp_path):
    cluster = founders
    leader = wait_for(cluster.leader, 20, "an agreed leader")
    term = ready_state(cluster.masters[leader])["term"]
    wrong = generate_secret(str(tmp_path / "wrong.secret"))  # well formed, not the cluster's
    # .4 is added as a learner, then started with a wrong secret: it cannot read the leader's
    # appends nor the leader its answers. .5 believes it is a founding voter of all four and
    # campaigns: nobody counts its votes.
    add_learner(cluster, leader, "127.0.0.4")
    joiner = cluster.add_master("127.0.0.4", name="bad-joiner", engine={"secret_file": wrong})
    peers = {m: f"{m}:{cluster.raft_port}" for m in [*cluster.ids, "127.0.0.5"]}
    voter = cluster.add_master(
        "127.0.0.5", name="bad-voter", engine={"secret_file": wrong, "peers": peers}
    )
    with contextlib.ExitStack() as stack:
        in_threads(
            lambda: stack.enter_context(joiner.started(start_timeout=120)),
            lambda: stack.enter_context(voter.started(start_timeout=120)),
        )
        for f, text in (
            (joiner, "failed authentication"),
            (voter, "no authenticated frame from any other master"),
        ):
            wait_for(lambda f=f, t=text: t in log_text(f), 40, f"{f.id}'s log to say {text!r}")
        # The cluster's side: the joiner's frames (JOIN requests, sent to the masters in turn)
        # fail authentication at whichever master they reach.
        wait_for(
            lambda: any(
                "failed authentication" in log_text(cluster.masters[m]) for m in cluster.ids
            ),
            40,
            "a cluster master's log to say frames failed authentication",
        )
        for f in (joiner, voter):
            assert not ready_state(f).get("ready"), ready_state(f)
        data = members(cluster, leader)
        assert sorted(data["voters"]) == cluster.ids, data  # .4 never caught up: no promotion
        assert data["learners"] == ["127.0.0.4"], data
        assert cluster.leader() == leader
        assert ready_state(cluster.masters[leader])["term"] == term  # no election disrupted
        assert cluster.gates_open()
    assert "same secret_file contents" in log_text(joiner)


ADDED = "127.0.0.4"  # added with raft.add (while down, by the wrong-secret scenario)
JOINER = "127.0.0.6"  # listed nowhere, added by nobody: joins by itself (JOIN)


def membership_logged(factory, node, kind):
    """True if ``factory``'s log shows a membership with ``node`` among its ``kind``."""
    pattern = re.compile(r"membership at \d+: voters (\[[^]]*\]) learners (\[[^]]*\])")
    for voters, learners in pattern.findall(log_text(factory)):
        if repr(node) in (voters if kind == "voters" else learners):
            return True
    return False


def start_joiner_and_added(cluster, leader):
    """Start ``JOINER`` (listed nowhere: it asks to join) and ``ADDED`` (a learner added with
    ``raft.add`` while down) together; wait until both are promoted voters with their gates
    open. Returns their factories and the seconds from start to promotion."""
    # Built once; when an earlier run of this removed them, the same masters start again.
    joiner = cluster.masters.get(JOINER) or cluster.add_master(JOINER)
    assert JOINER not in joiner.config["engines"][0]["raft"]["peers"]
    added = cluster.masters.get(ADDED) or cluster.add_master(ADDED)
    t0 = time.monotonic()
    in_threads(lambda: cluster.start([JOINER]), lambda: cluster.start([ADDED]))
    for node in (JOINER, ADDED):
        wait_for(
            lambda n=node: n in members(cluster, leader)["voters"], 60, f"{node} promoted to voter"
        )
    promoted = time.monotonic() - t0
    wait_for(lambda: cluster.gates_open([JOINER, ADDED]), 30, "both new gates open")
    return joiner, added, promoted


def test_a_master_nobody_added_joins_by_itself_as_learner_and_is_promoted(cluster):
    """A master configured with the existing masters as ``peers`` and itself left out, and
    never added with ``raft.add``, asks to join (JOIN), becomes a learner, catches up and is
    promoted. Started alongside ``ADDED`` (added with raft.add while down): both paths at once.
    """
    leader = ensure_founders(cluster, keep_learners=(ADDED,))
    add_learner(cluster, leader, ADDED)  # idempotent: the wrong-secret scenario added it
    data = members(cluster, leader)
    # Nobody knows JOINER; ADDED was never started with the right secret: still a learner.
    assert JOINER not in data["members"], data
    assert ADDED in data["learners"] and ADDED not in data["voters"], data
    joiner, added, promoted = start_joiner_and_added(cluster, leader)
    print(f"\n{JOINER} (JOIN) and {ADDED} (raft.add) started and promoted in {promoted:.1f}s")
    # JOINER went through the learner stage, by its own request.
    assert "accepted our JOIN" in log_text(joiner)
    # Its JOIN reached a cluster master (any: a follower forwards it to the leader), and the
    # leader (like every member) logged a membership with it as a learner.
    assert any(f"{JOINER} asks to join" in log_text(cluster.masters[m]) for m in cluster.ids)
    lead = cluster.masters[leader]
    assert membership_logged(lead, JOINER, "learners"), "no membership with JOINER as learner"
    everyone = sorted([*cluster.ids, ADDED, JOINER])
    for via in (JOINER, ADDED, leader):
        data = members(cluster, via)
        assert sorted(data["voters"]) == everyone and data["learners"] == [], (via, data)
    # Both are full members now: each follows the agreed leader, or (an election on a loaded
    # machine can pick any voter) is that leader.
    agreed = wait_for(cluster.leader, 20, "an agreed leader")
    for node, factory in ((JOINER, joiner), (ADDED, added)):
        assert ready_state(factory).get("role") == ("leader" if node == agreed else "follower")


@pytest.fixture
def five_voters(cluster):
    """Masters 1-3 plus ``JOINER`` and ``ADDED`` as running voters with their gates open: as
    the join scenario leaves them, or started here the same way when no test did."""
    if not all(
        n in cluster.masters and cluster.masters[n].is_running() and cluster.gate_open(n)
        for n in (JOINER, ADDED)
    ):
        leader = ensure_founders(cluster, keep_learners=(ADDED,))
        add_learner(cluster, leader, ADDED)
        start_joiner_and_added(cluster, leader)
    restart_stopped(cluster, cluster.ids)
    wait_for(cluster.gates_open, 60, "every gate of masters 1-3 open")
    everyone = sorted([*cluster.ids, ADDED, JOINER])
    wait_for(
        lambda: sorted(members(cluster, cluster.ids[0])["voters"]) == everyone,
        30,
        f"voters {everyone}",
    )
    return cluster


def test_removing_a_master_closes_its_gate(five_voters):
    cluster = five_voters
    removed = {}
    for new in (JOINER, ADDED):  # removed one after the other; their gates close concurrently
        rc, data, ret = run_json(cluster.masters[cluster.ids[0]], "raft.remove", f"node={new}")
        assert rc == 0, ret
        removed[new] = time.monotonic()
    for new, t0 in removed.items():
        wait_for(lambda n=new: not cluster.gate_open(n), 30, f"{new}'s gate to close after removal")
        reason = ready_state(cluster.masters[new]).get("reason", "")
        print(f"\n{new}'s gate closed {time.monotonic() - t0:.2f}s after raft.remove: {reason}")
        # Either it learnt the configuration without itself, or (the leader stops talking to a
        # removed node, which may never see that entry) it lost its leader for gate_grace.
        assert "not a member" in reason or "no leader for more than" in reason, reason
    for new in removed:
        cluster.masters[new].terminate()
    data = members(cluster, cluster.ids[0])
    assert sorted(data["voters"]) == cluster.ids and data["learners"] == [], data
    assert cluster.gates_open()


def test_demote_promote_snapshot_and_salt_call_status_on_real_masters(founders):
    """The operator commands not covered above, end to end: ``raft.demote`` turns a follower
    into a learner (its gate closes, as a learner's does by default), ``raft.promote`` makes it
    a voter again (the gate reopens), ``raft.snapshot`` compacts the leader's log, and the
    execution module reports the same node through ``salt-call --local`` on a master host."""
    cluster = founders
    home = cluster.ids[0]
    leader = wait_for(cluster.leader, 20, "an agreed leader")
    target = next(m for m in cluster.ids if m not in (home, leader))
    rc, data, ret = run_json(cluster.masters[home], "raft.demote", f"node={target}")
    assert rc == 0, ret
    wait_for(lambda: not cluster.gate_open(target), 30, f"{target}'s gate to close once a learner")
    assert "learner" in ready_state(cluster.masters[target]).get("reason", "")
    data = members(cluster, home)
    assert data["learners"] == [target] and target not in data["voters"], data
    # Auto-promotion must not undo an operator's demotion while the learner is caught up.
    assert not cluster.gate_open(target) and members(cluster, leader)["learners"] == [target]

    rc, data, ret = run_json(cluster.masters[home], "raft.promote", f"node={target}")
    assert rc == 0, ret
    wait_for(lambda: cluster.gate_open(target), 30, f"{target}'s gate to reopen once a voter again")
    data = members(cluster, target)
    assert sorted(data["voters"]) == cluster.ids and data["learners"] == [], data

    before = run_json(cluster.masters[leader], "raft.status")[1]["runtime"]["snapshots_taken"]
    rc, data, ret = run_json(cluster.masters[leader], "raft.snapshot")
    assert rc == 0 and data["snapshot_index"] > 0, ret
    rc, status, ret = run_json(cluster.masters[leader], "raft.status")
    assert rc == 0 and status["runtime"]["snapshots_taken"] == before + 1, ret

    # The execution module runs on a minion on a master host and reads that master's
    # readiness file: check it against the runner's view of the same master.
    minion = cluster.early["minion"]

    def salt_call(fun, mid):
        config = cluster.masters[mid].config_file
        ret = minion.salt_call_cli(timeout=90).run("--local", fun, f"master_config={config}")
        assert ret.returncode == 0, ret
        return ret.data

    for mid in (leader, target):
        want_role = "leader" if mid == leader else "follower"
        # Retried within a bound: on a loaded machine the readiness file can be a refresh late.
        data = wait_for(
            lambda m=mid, r=want_role: (
                (d := salt_call("raft.status", m))["ready"] and d["fresh"] and d["role"] == r and d
            ),
            120,
            f"salt-call raft.status on {mid} to report a fresh, ready {want_role}",
        )
        assert data["node_id"] == mid, data
        assert salt_call("raft.is_leader", mid) is (mid == leader)


def test_leader_failover_keeps_survivor_gates_open_and_old_leader_rejoins(founders):
    cluster = founders
    home = cluster.ids[0]  # the minion's master must survive
    leader = wait_for(cluster.leader, 20, "an agreed leader")
    if leader == home:
        rc, data, ret = run_json(cluster.masters[home], "raft.transfer_leader", "node=127.0.0.2")
        assert rc == 0, ret
        leader = wait_for(
            lambda: cluster.leader() if cluster.leader() != home else None, 20, "a new leader"
        )
    survivors = [m for m in cluster.ids if m != leader]
    watch = GateWatch(cluster, survivors)
    watch.start()
    t0 = time.monotonic()
    killed = cluster.kill(leader)
    new = wait_for(
        lambda: (cluster.leader(survivors) or "") not in ("", leader) and cluster.leader(survivors),
        20,
        "a new leader among the survivors",
    )
    elapsed = time.monotonic() - t0
    wait_for(lambda: ping(cluster, home)[0], 60, f"the minion to answer test.ping via {home}")
    watch.stop()
    print(f"\nnew leader {new} {elapsed:.2f}s after SIGKILL of {leader} ({len(killed)} processes)")
    assert not watch.closed, f"survivor gates closed during failover: {watch.closed[:5]}"
    # SIGKILL left nothing behind: the raft port is free for the restarted engine.
    wait_for(lambda: port_bindable(leader, cluster.raft_port), 10, "the old leader's raft port")
    f = cluster.restart(leader)
    wait_for(
        lambda: ready_state(f).get("role") == "follower" and cluster.gate_open(leader),
        60,
        f"{leader} to rejoin as a follower with its gate open",
    )
    data = members(cluster, leader)
    assert data["leader"] in survivors and sorted(data["voters"]) == cluster.ids, data


def test_full_cluster_restart_elects_a_leader_and_reopens_every_gate(founders):
    cluster = founders
    masters = [cluster.masters[m] for m in cluster.ids]
    in_threads(*(m.terminate for m in masters))
    assert not any(m.is_running() for m in masters)
    # A readiness file written just before the stop is still fresh for STALE_AFTER: remove them
    # so that "every gate open" means the restarted engines said so.
    for m in masters:
        with contextlib.suppress(FileNotFoundError):
            os.remove(readiness_path(m.config["cachedir"]))

    def start_all():
        in_threads(*(lambda m=m: m.start(start_timeout=120) for m in masters))

    took = time_to_all_gates_open(cluster, cluster.ids, start_all)
    print(f"\nfull restart: {gates_vs_ports(took)}")
    # Gates may open within gate_grace before every readiness file names the new leader.
    # Generous: on a loaded CI machine a master can take tens of seconds to restart (the
    # factory retries a start it thinks failed), and its readiness file is stale meanwhile.
    wait_for(cluster.leader, 90, "an agreed leader after the full restart")
    # The minion re-authenticates with its restarted master (new AES key) before it answers.
    wait_for(lambda: ping(cluster, cluster.ids[0])[0], 150, "the minion to answer test.ping")


def test_runner_fails_clearly_when_the_engine_is_not_running(raft_cluster_factory, tmp_path):
    c = raft_cluster_factory(1, engine={"secret_file": str(tmp_path / "missing")})
    f = c.masters[c.ids[0]]
    rc, data, ret = run_json(f, "raft.status", "timeout=2")
    assert rc != 0, ret
    assert "no reply from the raft engine" in ret.stdout
    wait_for(lambda: "secret_file" in log_text(f), 20, "the config error in the master log")
