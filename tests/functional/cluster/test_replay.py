"""M2 of issue 18 on the wire, with real node processes: a genuine ``add_learner n7`` request
frame from member n4 (sealed with the cluster secret, as n4 seals it) is recorded, served, n7 is
removed by the operator, the leader restarts (its transport forgets every replay window) and
the recorded frame is sent again, byte for byte. Before the fix it re-added n7.

n4 is a founding voter that is never started (three of four voters run): the recorded frame is
its only traffic, so its epoch and counters are those of the recording, as on a real wire."""

from __future__ import annotations

import time

import pytest

zmq = pytest.importorskip("zmq")

from saltext_raft.bench.procs import ProcCluster  # noqa: E402
from saltext_raft.core import Message  # noqa: E402
from saltext_raft.core import MsgType  # noqa: E402
from saltext_raft.transport.codec import encode_message  # noqa: E402
from saltext_raft.transport.codec import encode_payload  # noqa: E402
from saltext_raft.transport.crypto import FrameCrypto  # noqa: E402

CLUSTER = "replay"


@pytest.fixture
def cluster(tmp_path):
    c = ProcCluster(
        str(tmp_path),
        ids=("n1", "n2", "n3", "n4"),
        spare=("n7",),
        node_args=["--cluster-id", CLUSTER],
    )
    try:
        for nid in ("n1", "n2", "n3"):
            c.start(nid)
        yield c
    finally:
        c.close()


def send(address: str, frame: bytes) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://{address}")
    try:
        sock.send(frame)
    finally:
        sock.close()  # lingers until the frame is out
        ctx.term()


def members(node) -> set:
    m = node.call("status")["membership"]
    return set(m["voters"]) | set(m["learners"])


def test_a_recorded_add_learner_frame_replayed_after_removal_and_restart_is_refused(cluster):
    leader = cluster.leader(timeout=30)
    st = leader.call("status")  # n4 is a member: its view is the leader's
    secret = open(cluster.secret_file, "rb").read().strip()
    body = {
        "k": "req",
        "id": 7,
        "op": "admin",
        "cmd": "add_learner",
        "args": {"node": "n7", "address": cluster.addresses["n7"]},
        "term": st["term"],
        "conf": st["membership_index"],
        "exp": time.time() + 5,
    }
    msg = Message(MsgType.APP, leader.id, "n4", 0, context=encode_payload(body))
    recorded = FrameCrypto(secret, CLUSTER, "n4").seal(leader.id, encode_message(msg))

    send(leader.listen, recorded)  # the genuine request: served
    cluster.wait("n7 added", lambda: "n7" in members(leader), timeout=15)
    leader.call("remove", node="n7", timeout=10)  # the operator removes n7
    cluster.wait("n7 removed", lambda: "n7" not in members(leader), timeout=15)

    leader.terminate()  # the receiver restarts: its replay windows are gone
    leader.start()

    def leads():
        if leader.call("status")["role"] == "leader":
            return True
        try:  # the recorded frame is addressed to the old leader: give it the lead back
            leader.call("transfer_leader", node=leader.id, timeout=3)
        except RuntimeError:
            pass  # no leader known yet, or the transfer timed out: try again
        return False

    cluster.wait("the restarted node to lead again", leads, timeout=60, interval=0.2)

    send(leader.listen, recorded)  # the replay, byte for byte
    cluster.wait(
        "the replayed request to be refused as stale",
        lambda: leader.call("status")["runtime"]["remote"]["stale_requests"] >= 1,
        timeout=15,
    )
    st = leader.call("status")
    assert st["transport"]["dropped"]["replay"] == 0  # the transport let it through...
    assert "n7" not in members(leader)  # ...and the runtime refused it
    for node in cluster.nodes.values():
        assert "n7" not in members(node), node.id
