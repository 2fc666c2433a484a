"""Real node processes on loopback (python -m saltext_raft node, zmq transport, durable
CacheStore over localfs): election, replication, SIGKILL of the leader, catch-up through
InstallSnapshot, JOIN with auto-promotion, and rejection of forged/replayed/foreign/malformed
frames. Every wait is bounded; every process is killed by PID at teardown."""

from __future__ import annotations

import time

import pytest

zmq = pytest.importorskip("zmq")

from saltext_raft.bench.procs import ProcCluster  # noqa: E402
from saltext_raft.core import Message  # noqa: E402
from saltext_raft.core import MsgType  # noqa: E402
from saltext_raft.transport.codec import encode_message  # noqa: E402
from saltext_raft.transport.crypto import FrameCrypto  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ProcCluster(
        str(tmp_path_factory.mktemp("raft")),
        spare=("n4",),
        strangers=("n5",),
        node_args=["--snapshot-interval", "40", "--snapshot-keep", "5", "--cluster-id", "ftest"],
    )
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def test_elects_a_leader_and_replicates(cluster):
    leader = cluster.leader(timeout=15)
    idx = leader.call("set", key="a", value="1", timeout=5)
    assert isinstance(idx, int)
    for node in cluster.nodes.values():
        assert node.call("get", key="a", timeout=5) == "1"  # linearizable read on each node
    st = cluster.statuses()
    assert {s["leader"] for s in st.values()} == {leader.id}


def _drops(node, reason):
    return node.call("status")["transport"]["dropped"][reason]


def test_forged_replayed_foreign_and_malformed_frames_are_rejected_and_counted(cluster):
    target = cluster.nodes["n1"]
    before = target.call("status")["transport"]["dropped"]
    secret = open(cluster.secret_file, "rb").read().strip()
    plaintext = encode_message(Message(MsgType.APP, "n1", "n4", 0, context=b"\x00"))
    good = FrameCrypto(secret, "ftest", "n4").seal("n1", plaintext)  # n4: a known peer, not running
    forged = FrameCrypto(b"not-the-cluster-secret!!", "ftest", "n4").seal("n1", plaintext)
    foreign = FrameCrypto(secret, "other-cluster", "n4").seal("n1", plaintext)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(f"tcp://{target.listen}")
    try:
        for frame in (forged, good, good, foreign, b"garbage, not a frame"):
            sock.send(frame)
        want = {"auth": 1, "replay": 1, "wrong_cluster": 1, "malformed": 1}
        cluster.wait(
            f"drop counters {want} to rise on n1",
            lambda: all(_drops(target, r) >= before[r] + n for r, n in want.items()),
            timeout=10,
        )
    finally:
        sock.close()
        ctx.term()
    # the one authentic frame reached the runtime, which refused its payload
    assert target.call("status")["runtime"]["remote"]["bad_payloads"] >= 1
    cluster.leader(timeout=5)  # and the cluster is undisturbed


def test_sigkill_leader_reelect_and_restarted_node_catches_up_through_a_snapshot(cluster):
    old = cluster.leader(timeout=10)
    old_term = old.call("status")["term"]
    for i in range(20):
        old.call("set", key=f"k{i}", value="before", timeout=5)
    old.kill()
    t0 = time.monotonic()
    new = cluster.leader(timeout=10, exclude_term=old_term)
    failover = time.monotonic() - t0
    assert new.id != old.id
    print(f"\nnew leader {failover:.2f}s after SIGKILL (a figure: bench cluster measures it)")
    for i in range(
        150
    ):  # several snapshot intervals: the old leader's log position is compacted away
        new.call("set", key=f"k{i}", value="after", timeout=5)
    st = new.call("status")
    assert st["runtime"]["snapshots_taken"] >= 1 and st["first_index"] > 30
    old.start()
    commit = new.call("status")["commit_index"]
    cluster.wait(
        f"{old.id} to apply up to {commit}",
        lambda: (old.try_status() or {}).get("applied_index", 0) >= commit,
        timeout=20,
    )
    st_old = old.call("status")
    assert st_old["runtime"]["snapshots_restored"] >= 1, st_old["runtime"]
    assert old.call("get", key="k149", timeout=5) == "after"
    assert old.call("get", key="k0", timeout=5) == "after"


def test_a_joining_node_becomes_a_learner_and_is_promoted(cluster):
    leader = cluster.leader(timeout=10)
    n4 = cluster.start("n4")
    cluster.wait(
        "n4 to be a voter in the committed membership",
        lambda: (
            "n4" in (leader.try_status() or {}).get("committed_membership", {}).get("voters", [])
        ),
        timeout=20,
    )
    cluster.wait(
        "n4 to know it is a voter",
        lambda: "n4" in (n4.try_status() or {}).get("membership", {}).get("voters", []),
        10,
    )
    assert n4.call("get", key="k149", timeout=5) == "after"


def test_a_node_nobody_knows_joins_on_its_own_with_the_cluster_secret(cluster):
    """Regression: JOIN from a node that is in no peer list was dropped as unknown_sender,
    so self-join never worked and operators had to run raft.add first."""
    leader = cluster.leader(timeout=10)
    n5 = cluster.start("n5")
    cluster.wait(
        "n5 to be a member of the committed membership",
        lambda: (
            "n5"
            in set((leader.try_status() or {}).get("committed_membership", {}).get("voters", []))
            | set((leader.try_status() or {}).get("committed_membership", {}).get("learners", []))
        ),
        timeout=30,
    )
    cluster.wait(
        "n5 to catch up and be promoted",
        lambda: "n5" in (n5.try_status() or {}).get("membership", {}).get("voters", []),
        timeout=30,
    )
    assert n5.call("get", key="k149", timeout=5) == "after"
