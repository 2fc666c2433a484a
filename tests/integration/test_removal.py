"""Removal sticks, on real masters (issue 18, M3).

Three masters; the leader is removed with ``raft.remove`` (answered success, not a timeout),
stopped, and started again with its own data and no ``join``: it must stay out of the
membership with its gate closed (before, it sent JOIN, was re-added and promoted, and its gate
reopened within 1-3 s) until an operator runs ``raft.add``, which brings it back as a voter.
"""

from __future__ import annotations

import time

import pytest

from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import in_threads
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import log_text
from tests.integration.conftest import ready_state
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]

#: How long the restarted removed master is watched: many election timeouts and JOIN intervals.
WATCH_SECONDS = 15.0


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with RaftCluster(salt_factories, tmp_path_factory.mktemp("removal"), name="removal") as c:
        in_threads(*(lambda m=m: c.start([m]) for m in c.ids))
        wait_for(lambda: c.gates_open() and c.leader(), 90, "three ready masters and a leader")
        yield c


def test_a_removed_leader_restarted_with_its_data_stays_out_until_raft_add(cluster):
    leader = wait_for(cluster.leader, 30, "an agreed leader")
    home = next(m for m in cluster.ids if m != leader)
    rest = [m for m in cluster.ids if m != leader]
    rc, data, ret = run_json(cluster.masters[home], "raft.remove", f"node={leader}")
    assert rc == 0 and isinstance(data, dict) and leader not in data["membership"]["voters"], ret
    wait_for(lambda: not cluster.gate_open(leader), 30, f"{leader}'s gate to close after removal")
    assert sorted(cluster.members(home)["voters"]) == sorted(rest)

    factory = cluster.masters[leader]
    factory.terminate()
    factory.start(start_timeout=120)  # same config and data: a founding master, no join
    wait_for(
        lambda: ready_state(factory).get("pid") and ready_state(factory).get("ready") is False,
        60,
        f"{leader}'s restarted engine to write its readiness",
    )
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        assert not cluster.gate_open(leader), ready_state(factory)
        time.sleep(0.5)
    data = cluster.members(home)
    assert leader not in data["voters"] and leader not in data["learners"], data
    assert not cluster.gate_open(leader)
    assert "was removed from the cluster at index" in log_text(factory)
    assert "accepted our JOIN" not in log_text(factory)

    rc, data, ret = run_json(
        cluster.masters[home], "raft.add", f"node={leader}", f"address={leader}:{cluster.raft_port}"
    )
    assert rc == 0, ret
    wait_for(
        lambda: leader in cluster.members(home)["voters"], 60, f"{leader} re-added and promoted"
    )
    wait_for(lambda: cluster.gate_open(leader), 60, f"{leader}'s gate to reopen after raft.add")
