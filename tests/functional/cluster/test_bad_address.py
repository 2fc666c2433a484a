"""A node address every node must apply, performed with real node processes.

Before the fix, ``add_learner n9 garbage:`` was committed and every node that applied it
stopped (``set_peers`` raised out of the Ready loop): the leader and a follower died, the
cluster lost its quorum, and the entry in their logs stopped them again at every restart. Now
the runtime refuses such an address before it is proposed, and an address that passes the rule
but that zmq cannot use (``tcp://x``: as one committed by an older build would be) costs only
that peer its link (docs/security.md, "Node addresses")."""

from __future__ import annotations

import pytest

pytest.importorskip("zmq")

from saltext_raft.bench.procs import ProcCluster


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(str(tmp_path), ids=("n1", "n2", "n3"), node_args=["--cluster-id", "addr"])
    try:
        for nid in ("n1", "n2", "n3"):
            c.start(nid)
        yield c
    finally:
        c.close()


def test_a_bad_address_is_refused_and_an_unusable_committed_one_stops_no_node(cluster):
    leader = cluster.leader(timeout=30)
    with pytest.raises(Exception, match="not 'host:port'"):
        leader.call("add_learner", node="n9", address="garbage:", timeout=10)
    assert "n9" not in leader.call("status")["membership"]["learners"]

    res = leader.call("add_learner", node="n9", address="tcp://x", timeout=10)
    assert "n9" in res["membership"]["learners"]
    for nid in ("n1", "n2", "n3"):
        node = cluster.nodes[nid]
        cluster.wait(
            f"{nid} to apply n9 and count its address",
            lambda n=node: n.call("status")["transport"]["dropped"]["bad_address"] >= 1,
            timeout=15,
        )
        st = node.call("status")
        assert st["runtime"]["failure"] is None and "n9" in st["membership"]["learners"]
    # the cluster still commits: the operator removes n9 again
    leader = cluster.leader(timeout=30)
    leader.call("remove", node="n9", timeout=10)
    cluster.wait(
        "n9 removed",
        lambda: "n9" not in cluster.leader(timeout=30).call("status")["membership"]["learners"],
        timeout=15,
    )
