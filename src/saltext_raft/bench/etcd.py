"""Three etcd members on loopback, for ``bench cluster``'s ``etcd`` section.

Lives here: :class:`EtcdCluster` (start three ``etcd`` processes with their own data directories
under a work directory, on free 127.0.0.1 ports, with our heartbeat and election timing and
etcd's default WAL fsync; find the leader; SIGKILL and restart a member by PID; stop every
process by PID in ``close()``) and :class:`EtcdClient` (put and status through etcd's HTTP/JSON
gateway, ``/v3/kv/put`` with base64 keys and values, over one kept-alive connection).
:func:`etcd_binary` says where ``etcd`` is, or why it is not used.
Must not live here: how the comparison drives a cluster (``bench.extclient``), our own nodes
(``bench.procs``).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from saltext_raft.bench.procs import free_port
from saltext_raft.runtime.config import DEFAULT_ELECTION_TICKS
from saltext_raft.runtime.config import DEFAULT_HEARTBEAT_TICKS
from saltext_raft.runtime.config import DEFAULT_TICK_SECONDS
from saltext_raft.waiting import wait_until

#: Our nodes' heartbeat interval and election timeout, in ms, given to etcd so that both run
#: the same Raft timing (50 ms / 300 ms with the default tick).
HEARTBEAT_MS = round(DEFAULT_HEARTBEAT_TICKS * DEFAULT_TICK_SECONDS * 1000)
ELECTION_MS = round(DEFAULT_ELECTION_TICKS * DEFAULT_TICK_SECONDS * 1000)

#: How the section says it was skipped when there is no etcd (one line, what to install).
MISSING = (
    "etcd not installed: the etcd section needs Debian's etcd-server (apt-get install etcd-server)"
)


def etcd_binary(name: str = "etcd") -> str | None:
    return shutil.which(name)


def etcd_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    return out.splitlines()[0].split(":", 1)[-1].strip() if out else "unknown"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class EtcdClient:
    """One member's HTTP/JSON gateway over one kept-alive connection (TCP_NODELAY)."""

    def __init__(self, address: str, timeout: float = 5.0):
        host, _, port = address.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def set_timeout(self, timeout: float) -> None:
        self.conn.timeout = timeout  # for a reconnect
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        self.conn.request("POST", path, data, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status}: {payload[:200]!r}")
        return json.loads(payload)

    def put(self, key: bytes, value: bytes) -> dict:
        return self.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def status(self) -> dict:
        return self.post("/v3/maintenance/status", {})

    def close(self):
        self.conn.close()


class EtcdMember:
    def __init__(self, name: str, workdir: str, binary: str):
        self.name = name
        self.binary = binary
        self.data_dir = os.path.join(workdir, name)
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.client_address = f"127.0.0.1:{free_port()}"
        self.peer_address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, initial_cluster: str, token: str) -> None:
        client_url, peer_url = f"http://{self.client_address}", f"http://{self.peer_address}"
        args = [
            self.binary,
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", "new",  # ignored on restart: the data dir has the WAL
            "--initial-cluster-token", token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def member_id(self, timeout: float = 2.0) -> tuple[str, str] | None:
        """This member's id and its view of the leader's, or None if it does not answer."""
        try:
            client = EtcdClient(self.client_address, timeout)
        except OSError:
            return None
        try:
            st = client.status()
            return st["header"]["member_id"], st.get("leader")
        except (OSError, RuntimeError, ValueError, KeyError, http.client.HTTPException):
            return None
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL by PID, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)


class EtcdCluster:
    """Three etcd members e1..e3 on loopback, data under ``workdir``."""

    def __init__(self, workdir: str, binary: str, size: int = 3):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.members = {f"e{i}": EtcdMember(f"e{i}", workdir, binary) for i in range(1, size + 1)}
        self.initial_cluster = ",".join(
            f"{m.name}=http://{m.peer_address}" for m in self.members.values()
        )
        self.token = f"raft-bench-{os.getpid()}-{int(time.time())}"

    def start_all(self) -> None:
        for member in self.members.values():
            member.start(self.initial_cluster, self.token)

    def start(self, name: str) -> None:
        self.members[name].start(self.initial_cluster, self.token)

    def leader(self, timeout: float = 30.0) -> EtcdMember:
        """The live member every live member names as leader."""

        def find():
            ids, views = {}, set()
            for m in self.members.values():
                if not m.alive():
                    continue
                got = m.member_id()
                if got is None:
                    return None
                ids[got[0]] = m
                views.add(got[1])
            if len(views) == 1 and (lead := views.pop()) in ids:
                return ids[lead]
            return None

        return wait_until(find, timeout, "an etcd leader every live member agrees on", 0.02)

    def healthy(self, timeout: float = 30.0) -> None:
        """Wait until every member answers and agrees on the leader."""

        def every_member_answers():
            return all(m.alive() and m.member_id() for m in self.members.values())

        wait_until(every_member_answers, timeout, "every etcd member to answer", 0.05)
        self.leader(timeout)

    def close(self) -> None:
        for member in self.members.values():
            member.kill()
