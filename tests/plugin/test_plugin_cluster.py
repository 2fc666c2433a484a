"""A user's test of a saltext-raft cluster, written with the shipped plugin's public fixtures
only (this file is the example in docs/testing.md; keep the two equal)."""

import pytest

pytestmark = pytest.mark.slow


def test_killing_the_leader_elects_a_new_one(raft_cluster_factory):
    cluster = raft_cluster_factory(3)  # masters 127.0.0.1, .2, .3 with the raft engine
    cluster.wait_gates_open()
    leader = cluster.wait_for_leader()
    assert sorted(cluster.members(leader)["voters"]) == cluster.ids

    killed = cluster.kill(leader)  # SIGKILL the master and its engine, by PID
    assert killed
    survivors = [m for m in cluster.ids if m != leader]
    new_leader = cluster.wait_for_leader(among=survivors, other_than=leader)
    assert new_leader in survivors
    assert cluster.members(new_leader)["leader"] == new_leader

    cluster.restart(leader)  # it rejoins as a follower
    cluster.wait_gates_open()
    assert cluster.wait_for_leader() in cluster.ids
