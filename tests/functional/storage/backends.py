"""Storage backends the storage tests run against: in-memory, localfs (segment files, and
forced to one key per record), and a real Redis.

``Backend.open()`` builds a new store over the same durable data: calling it again models a
restart of the node. The Redis server is started by ``redis_server`` on a free loopback port
with persistence off and killed by PID at the end of the session. Without ``redis-server`` (or
the ``redis`` package) the Redis tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from saltext_raft.storage import MemoryDisk
from saltext_raft.storage import MemoryStore
from tests.ci import skip_or_fail

_ids = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def master_opts(cachedir: str, **extra) -> dict:
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts["cachedir"] = cachedir
    opts.update(extra)
    return opts


class Backend:
    name = "?"

    def open(self):
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self):
        self.disk = MemoryDisk()

    def open(self):
        return MemoryStore(self.disk)


class CacheBackend(Backend):
    def __init__(self, name: str, opts: dict, **store_kwargs):
        self.name = name
        self.opts = opts
        self.store_kwargs = store_kwargs  # e.g. log_format="keys"
        self.cluster_id = f"c{os.getpid()}x{next(_ids)}"

    def open(self, **kwargs):
        from saltext_raft.storage import open_store  # pylint: disable=import-outside-toplevel

        return open_store(self.opts, self.cluster_id, "m1", **{**self.store_kwargs, **kwargs})


class RedisServer:
    """A private redis-server on 127.0.0.1, no persistence, owned by the test session."""

    def __init__(self, binary: str, workdir: str):
        self.port = free_port()
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout=10.0)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} at start")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed (apt-get install -y redis-server)")
    try:
        import redis  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        skip_or_fail("Salt's redis_cache needs the 'redis' Python package (pip install redis)")
    server = RedisServer(binary, str(tmp_path_factory.mktemp("redis")))
    try:
        yield server
    finally:
        server.stop()


def make_backend(name: str, request, tmp_path) -> Backend:
    if name == "memory":
        return MemoryBackend()
    if name == "localfs":  # segment files, small ones so roll-over and deletion happen
        return CacheBackend("localfs", master_opts(str(tmp_path / "cache")), segment_bytes=512)
    if name == "localfs-keys":  # the record-per-key scheme every other driver uses
        return CacheBackend("localfs-keys", master_opts(str(tmp_path / "cache")), log_format="keys")
    if name == "redis":
        server = request.getfixturevalue("redis_server")
        opts = master_opts(
            str(tmp_path / "cache"),
            cache="redis",  # salt/cache/redis_cache.py, virtualname "redis"
            **{"cache.redis.host": "127.0.0.1", "cache.redis.port": server.port},
        )
        return CacheBackend("redis", opts)
    raise ValueError(name)
