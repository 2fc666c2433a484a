"""L3 of issue 18, performed: the standalone node's control channel was TCP on loopback by
default, with every op and no authentication (uid 65534 wrote data and added a learner). Now
it is a unix socket in the data directory, 0600, and TCP only when asked for, on loopback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile

import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("zmq")

from saltext_raft.bench.procs import ProcCluster  # noqa: E402

NOBODY = 65534
#: What uid 65534 tries: add a learner through the node's control channel.
ATTACK = """
import json, socket, sys
address = sys.argv[1]
try:
    if "/" in address:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(address)
    else:
        host, _, port = address.rpartition(":")
        s = socket.create_connection((host, int(port)))
except OSError as exc:
    print("refused", exc.errno)
    sys.exit(0)
s.sendall(json.dumps({"id": 1, "op": "add_learner", "node": "evil",
                      "address": "127.0.0.1:9"}).encode() + b"\\n")
print("connected", s.makefile().readline().strip())
"""


#: An interpreter uid 65534 may run (the test venv may live under a private directory).
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def one_node():
    # in a directory every user may traverse, so that only the node's own modes protect it
    workdir = tempfile.mkdtemp(prefix="raft-l3-", dir="/tmp")
    os.chmod(workdir, 0o755)
    c = ProcCluster(workdir, ids=("n1",))
    try:
        yield c, c.start("n1")
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _tcp_listening_ports(pid: int) -> set[int]:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def test_by_default_the_control_channel_is_an_owner_only_unix_socket(one_node):
    cluster, node = one_node
    data_dir = os.path.join(cluster.workdir, "n1")
    assert node.control == os.path.join(data_dir, "control.sock")
    mode = os.lstat(node.control).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    # the only TCP port the node listens on is its Raft port
    assert _tcp_listening_ports(node.pid) == {int(node.listen.rpartition(":")[2])}
    assert node.call("status")["role"] in ("leader", "candidate", "follower", "pre_candidate")


def test_fault_injection_is_refused_without_its_flag(one_node):
    _, node = one_node
    with pytest.raises(RuntimeError, match=r"^rejected: .*--allow-fault-injection"):
        node.call("partition", peers=["n2"])
    assert node.call("status")["transport"].get("partitioned_from") is None


def test_set_is_answered_from_the_proposal_and_a_bad_one_gets_an_error_answer(one_node):
    """``set`` is a future handler (no task per request, issue 21): it still answers once the
    write is committed and applied, and a malformed one is answered with an error while the
    connection keeps serving."""
    cluster, node = one_node
    cluster.leader()
    node.call("set", key="a", value="1", timeout=5)
    assert node.call("get", key="a", timeout=5) == "1"
    with pytest.raises(RuntimeError, match="KeyError"):
        node.call("set", value="no key", timeout=5)
    node.call("set", key="a", value="2", timeout=5)
    assert node.call("get", key="a", timeout=5) == "2"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as uid 65534")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON}")
def test_another_local_user_cannot_use_the_control_channel(one_node):
    cluster, node = one_node
    cluster.leader(timeout=20)
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", ATTACK, node.control],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    assert out.stdout.startswith("refused 13"), out  # EACCES
    assert "evil" not in node.call("status")["membership"]["learners"]


def test_tcp_control_must_be_asked_for_and_on_loopback(tmp_path):
    c = ProcCluster(str(tmp_path), ids=("n1",), node_args=["--control", "0.0.0.0:0"])
    try:
        with pytest.raises(RuntimeError, match="did not print its ready line"):
            c.start("n1", timeout=20)
        log = open(os.path.join(c.workdir, "n1.log"), encoding="utf-8").read()
        assert "loopback" in log and "unauthenticated" in log
    finally:
        c.close()
    c = ProcCluster(str(tmp_path / "b"), ids=("n1",), node_args=["--control", "127.0.0.1:0"])
    try:
        node = c.start("n1")
        host, _, port = node.control.rpartition(":")
        assert host == "127.0.0.1" and int(port) in _tcp_listening_ports(node.pid)
        assert node.call("status")["id"] == "n1"
    finally:
        c.close()
