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


def test_a_long_log_gives_the_gc_nothing_per_entry_to_walk():
    """Regression: the in-memory log was a list of Entry tuples, which Python's cyclic GC never
    untracks, so every full collection walked the whole log (100-200 ms pauses at 100k)."""
    import gc  # pylint: disable=import-outside-toplevel

    from saltext_raft.core.log import RaftLog  # pylint: disable=import-outside-toplevel
    from saltext_raft.core.types import Entry  # pylint: disable=import-outside-toplevel

    log = RaftLog()
    gc.collect()
    before = len(gc.get_objects())
    log.append([Entry(1, i, 0, b"x%d" % i) for i in range(1, 10_001)])
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert log.entry(10_000) == Entry(1, 10_000, 0, b"x10000")
