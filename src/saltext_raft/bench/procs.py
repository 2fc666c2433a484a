"""Real node processes on loopback, for the functional tests and the cluster benchmark.

Lives here: :class:`NodeProc` (one ``python -m saltext_raft node`` process: start, wait for its
"ready" line, talk JSON lines to its control channel (a unix socket by default), SIGKILL or
SIGTERM it by PID) and
:class:`ProcCluster` (a set of them sharing a secret and a peer map). Every wait is bounded and
says what it waited for; every process started is killed by PID in ``close()``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from saltext_raft.master.secret import generate
from saltext_raft.waiting import wait_until

#: How a standalone node is started: ``python -m`` these words (the operator command).
STANDALONE_NODE = ("saltext_raft", "node")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControlClient:
    """A blocking JSON-lines client for a node's control channel."""

    def __init__(self, address: str, timeout: float = 30.0):
        """``address``: a unix socket path (the node's default) or "host:port"."""
        if "/" in address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
            except OSError:
                self.sock.close()
                raise
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.file = self.sock.makefile("rwb")
        self._id = 0

    def call(self, op: str, timeout: float | None = None, **kw):
        """Send one request, return its result; raises RuntimeError with the node's error."""
        self._id += 1
        req = dict(kw, op=op, id=self._id)
        if timeout is not None:
            req["timeout"] = timeout
            self.sock.settimeout(timeout + 10)
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise ConnectionError("control channel closed")
        resp = json.loads(line)
        if not resp.get("ok"):
            err = resp.get("error") or {}
            raise RuntimeError(f"{err.get('code')}: {err.get('message')}")
        return resp["result"]

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class NodeProc:
    def __init__(
        self,
        nid: str,
        listen: str,
        args: list[str],
        log_path: str,
        python: str = sys.executable,
        command: tuple[str, ...] = STANDALONE_NODE,
    ):
        """``command``: what follows ``python -m`` (default: the standalone node, which is
        given ``--id`` and ``--listen``; any other command gets only ``args``)."""
        self.command = tuple(command)
        self.id = nid
        self.listen = listen
        self.args = args
        self.log_path = log_path
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.control = ""
        self._client: ControlClient | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30.0) -> NodeProc:
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [self.python, "-m", *self.command, *self._id_args(), *self.args],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(
                    f"node {self.id} did not print its ready line within {timeout}s "
                    f"(see {self.log_path})"
                )
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        info = json.loads(buf.split(b"\n", 1)[0])
        assert info["event"] == "ready", info
        self.control = info["control"]
        self._client = None
        return self

    def _id_args(self) -> list[str]:
        if self.command != STANDALONE_NODE:
            return []
        return ["--id", self.id, "--listen", self.listen]

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(self.control)
        return self._client

    def call(self, op: str, timeout: float | None = None, **kw):
        return self.client.call(op, timeout, **kw)

    def try_status(self) -> dict | None:
        try:
            return self.call("status")
        except (OSError, RuntimeError, ValueError):
            self._drop_client()
            return None

    def _drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID, then reap it."""
        self._drop_client()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()

    def terminate(self, timeout: float = 10.0) -> None:
        self._drop_client()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class ProcCluster:
    """Nodes ``ids`` (plus ``spare`` ids known to everyone but not founders, and ``strangers``
    that only know the others: nobody lists them as a peer) on loopback."""

    def __init__(
        self,
        workdir: str,
        ids=("n1", "n2", "n3"),
        spare=(),
        node_args=(),
        strangers=(),
        python: str = sys.executable,
    ):
        self.workdir = workdir
        self.python = python
        os.makedirs(workdir, exist_ok=True)
        self.secret_file = os.path.join(workdir, "secret")
        generate(self.secret_file, overwrite=True)  # as an operator would: 0600, 32 bytes
        self.founders = list(ids)
        self.addresses = {nid: f"127.0.0.1:{free_port()}" for nid in (*ids, *spare)}
        self.stranger_addresses = {nid: f"127.0.0.1:{free_port()}" for nid in strangers}
        self.node_args = list(node_args)
        self.nodes: dict[str, NodeProc] = {}

    def address_of(self, nid: str) -> str:
        return self.addresses.get(nid) or self.stranger_addresses[nid]

    def args_for(self, nid: str) -> list[str]:
        peers = dict(self.addresses)
        if nid in self.stranger_addresses:
            peers[nid] = self.stranger_addresses[nid]
        return [
            "--peers",
            ",".join(f"{n}={a}" for n, a in peers.items()),
            "--founders",
            ",".join(self.founders),
            "--data-dir",
            os.path.join(self.workdir, nid),
            "--secret-file",
            self.secret_file,
            *self.node_args,
        ]

    def start(self, nid: str, timeout: float = 30.0) -> NodeProc:
        node = NodeProc(
            nid,
            self.address_of(nid),
            self.args_for(nid),
            os.path.join(self.workdir, f"{nid}.log"),
            self.python,
        )
        self.nodes[nid] = node
        return node.start(timeout)

    def start_all(self):
        for nid in self.founders:
            self.start(nid)

    def statuses(self) -> dict[str, dict]:
        out = {}
        for nid, node in self.nodes.items():
            if node.alive():
                st = node.try_status()
                if st is not None:
                    out[nid] = st
        return out

    def wait(self, what: str, predicate, timeout: float, interval: float = 0.02):
        """Poll ``predicate()`` until it returns a truthy value; return that value."""
        return wait_until(
            predicate, timeout, what, interval, describe=lambda: f"statuses: {self._summary()}"
        )

    def _summary(self) -> dict:
        return {
            n: {
                k: s.get(k)
                for k in ("role", "term", "leader", "commit_index", "applied_index", "membership")
            }
            for n, s in self.statuses().items()
        }

    def leader(self, timeout: float = 10.0, exclude_term: int = 0) -> NodeProc:
        """The live node that leads and has committed an entry of its term."""

        def find():
            for nid, st in self.statuses().items():
                if st["role"] == "leader" and st["leader_committed"] and st["term"] > exclude_term:
                    return self.nodes[nid]
            return None

        return self.wait("a leader that committed in its term", find, timeout)

    def close(self):
        for node in self.nodes.values():
            node.kill()
