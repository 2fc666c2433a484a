from saltext_raft.core import Role
from tests.unit.core.cluster import Cluster


def test_three_nodes_elect_and_replicate():
    c = Cluster()
    leader = c.elect("a")
    leader.propose(b"x1")
    c.stabilize()
    for nid in "abc":
        assert c.applied[nid] == [b"x1"], (nid, c.nodes[nid].status())
    assert all(n.commit_index == 3 for n in c.nodes.values())
    assert [n.role for n in c.nodes.values()].count(Role.LEADER) == 1
