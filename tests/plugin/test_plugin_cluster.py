"""A user's test of a saltext-raft cluster, written with the shipped plugin's public fixtures
only (this file is the example in docs/testing.md; keep the two equal)."""

from saltext_raft.waiting import wait_until


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


def test_cache_raft_replicates_and_a_minion_answers(raft_cluster_factory):
    cluster = raft_cluster_factory(3, cache="raft")
    cluster.wait_gates_open()
    first, _, last = cluster.ids

    cluster.salt_run(first, "cache.store", "mybank", "mykey", "myvalue")
    wait_until(
        lambda: cluster.salt_run(last, "cache.fetch", "mybank", "mykey") == "myvalue",
        30,
        f"the value stored through {first} to be readable on {last}",
    )

    minion = cluster.minion(last, "my-minion")  # attached to 127.0.0.3
    ret = cluster.masters[last].salt_cli(timeout=60).run("test.ping", minion_tgt=minion.id)
    assert ret.returncode == 0 and ret.data is True, ret
