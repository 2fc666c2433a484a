"""The local control channel: JSON lines over a loopback TCP port or a unix socket.

Lives here: :class:`ControlServer`, which answers requests from runners, the request gate,
tests and benchmarks with the runtime's client API, and :func:`bind_unix_socket` (a unix socket
that is never reachable by anyone but its owner, whatever the umask). Must not live here:
authentication (use a unix socket, which is 0600 from the moment it exists, or loopback TCP,
which any local user can reach: whoever can connect can change membership), Salt.

One request per line: ``{"id": any, "op": "...", ...}``; one answer per line, in completion
order (several requests may be outstanding on one connection): ``{"id": ..., "ok": true,
"result": ...}`` or ``{"id": ..., "ok": false, "error": {"code": ..., "message": ...}}``.

Ops: ``status``; ``propose`` (``data`` latin-1 text, ``timeout``) → the state machine's result;
``read`` → the read index; ``add_learner`` (``node``, ``address``), ``promote``, ``demote``,
``remove`` (``node``), ``transfer_leader`` (``node``): the runtime's own names, one per
operation; plus any extra handlers the owner registers
(``handlers={"op": async fn(runtime, request) -> result}``), or, for ops on a hot path, that
return a future without a task of their own (``future_handlers={"op": fn(runtime, request) ->
asyncio.Future}``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import tempfile
import time

from saltext_raft.core.types import MEMBERSHIP_OPS
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Stopped

log = logging.getLogger(__name__)
MAX_LINE = 16 << 20
#: Requests one connection may have unanswered; past this its input is left unread until
#: answers go out (clients send one at a time, or a few: this bounds a client that does not).
MAX_IN_FLIGHT = 1024
#: Connections served at once; a new one past this gets an ``overloaded`` answer and is closed
#: (logged at most every :data:`REFUSED_LOG_INTERVAL` seconds). Each may hold up to
#: ``MAX_LINE`` of an unfinished request, so without a bound whoever can open the socket (the
#: master's user for the cache socket, mode 0600; any local user for a loopback TCP address)
#: made the engine hold N x 16 MiB and N descriptors. Far above what Salt opens on the cache
#: socket: one connection per thread of each process using the driver (``worker_threads``
#: MWorkers, 5 by default, each with an executor of at most 32 threads on 3008, plus the
#: maintenance and publisher processes and the CLI's).
MAX_CONNECTIONS = 4096
#: Seconds between two log lines about refused connections (the line counts them).
REFUSED_LOG_INTERVAL = 10.0
#: One encoder for every answer: json.dumps(..., default=str) builds a new one per call.
_ENCODE = json.JSONEncoder(default=str).encode
#: The answer to a request with an integer id whose result is a bool (every cache write), by
#: result, byte for byte what ``_ENCODE`` writes for it.
_BOOL_ANSWER = {
    flag: (_ENCODE({"id": 0, "ok": True, "result": flag}) + "\n")
    .replace('"id": 0', '"id": %d')
    .encode()
    for flag in (True, False)
}


async def _status(rt, req):
    return rt.status()


async def _propose(rt, req):
    return await rt.propose(str(req.get("data", "")).encode("latin-1"), req.get("timeout"))


async def _read(rt, req):
    return await rt.read(req.get("timeout"))


def _admin(cmd):
    async def handler(rt, req):
        args = {"node": str(req.get("node") or "")}
        if cmd == "add_learner":
            args["address"] = str(req.get("address") or "")
        return await rt.admin(cmd, args, req.get("timeout"))

    return handler


HANDLERS = {
    "status": _status,
    "propose": _propose,
    "read": _read,
    **{op: _admin(op) for op in MEMBERSHIP_OPS},
}


class ControlServer:
    """Serves the control channel. Each connection is an :class:`asyncio.Protocol`
    (``_Connection``): requests are parsed in ``data_received`` and each runs in a task of its
    own; answers are written straight to the transport.

    Why a protocol rather than ``asyncio.start_server`` streams: a stream server costs, per
    request, a ``StreamReader.readline`` (a future, a wake-up and a step of the connection's
    task) before the request's own task even starts. Under the cache benchmark that was about
    a quarter of the request path's CPU on the loop (docs/benchmarks.md)."""

    def __init__(
        self,
        runtime,
        address: str,
        handlers: dict | None = None,
        future_handlers: dict | None = None,
        max_connections: int | None = None,
    ):
        """``address``: "host:port" (port 0 picks one) or a filesystem path (unix socket);
        ``max_connections``: default :data:`MAX_CONNECTIONS`."""
        self.rt = runtime
        self.address = address
        self.handlers = dict(HANDLERS, **(handlers or {}))
        #: Ops answered from a future's done-callback: no task per request (a task costs a
        #: few steps of the loop per await; the cache's writes are many and small).
        self.future_handlers = dict(future_handlers or {})
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Connection] = set()
        self.max_connections = MAX_CONNECTIONS if max_connections is None else max_connections
        self._refused = 0  # connections refused since the last log line about it
        self._refused_logged = float("-inf")
        self.bound = ""

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        if "/" in self.address:
            sock = bind_unix_socket(self.address)
            try:
                self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
            except BaseException:
                sock.close()
                raise
            self.bound = self.address
        else:
            host, _, port = self.address.rpartition(":")
            self._server = await loop.create_server(lambda: _Connection(self), host, int(port))
            h, p = self._server.sockets[0].getsockname()[:2]
            self.bound = f"{h}:{p}"
        return self.bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.close()
            await self._server.wait_closed()

    def admit(self, conn: _Connection, transport) -> bool:
        """Whether ``conn`` (new, on ``transport``) is served: yes below ``max_connections``;
        else it gets an ``overloaded`` answer, is closed and counted for the log."""
        if len(self._conns) < self.max_connections:
            self._conns.add(conn)
            return True
        message = (
            f"{len(self._conns)} connections open, the most this engine serves; retry when "
            "one closes"
        )
        answer = {"id": None, "ok": False, "error": {"code": "overloaded", "message": message}}
        transport.write((_ENCODE(answer) + "\n").encode())
        transport.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_INTERVAL:
            log.warning(
                "raft control %s: %d connections open, the most it serves (MAX_CONNECTIONS); "
                "refused %d new connection(s) since the last such line",
                self.bound,
                len(self._conns),
                self._refused,
            )
            self._refused, self._refused_logged = 0, now
        return False

    async def _handle(self, req: dict, conn: _Connection) -> None:
        rid = req.get("id")
        handler = self.handlers.get(req.get("op"))
        try:
            if handler is None:
                raise RaftRuntimeError(f"unknown op {req.get('op')!r}")
            out = {"id": rid, "ok": True, "result": await handler(self.rt, req)}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            out = error_answer(rid, req.get("op"), exc)
        conn.write(out)


def bind_unix_socket(path: str, mode: int = 0o600) -> socket.socket:
    """A listening unix socket at ``path`` with ``mode``, never reachable with a wider one.

    ``bind`` creates the socket file with ``0777 & ~umask``; a later ``chmod`` leaves a window
    in which anyone may connect (0777 under umask 000). Changing the umask is no fix in a
    process with threads (it is process-wide). So the socket is bound inside a fresh private
    directory (0700: nobody else can reach anything in it), given ``mode`` there, then renamed
    onto ``path`` (atomic; replaces a stale socket left by an earlier run)."""
    parent = os.path.dirname(os.path.abspath(path))
    private = tempfile.mkdtemp(prefix=".s", dir=parent)  # mode 0700
    tmp = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(tmp)
        except OSError as exc:
            if len(tmp.encode()) > 100:
                raise OSError(
                    exc.errno, f"cannot bind unix socket {path}: the path is too long ({exc})"
                ) from None
            raise
        os.chmod(tmp, mode)
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(f"cannot bind unix socket {path}: it is a directory")
        os.rename(tmp, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.rmdir(private)
    return sock


def error_answer(rid, op, exc: BaseException) -> dict:
    """The answer to a request that failed with ``exc``."""
    if isinstance(exc, RaftRuntimeError):
        return {"id": rid, "ok": False, "error": exc.to_dict()}
    log.error("raft control: %s failed", op, exc_info=exc)
    return {
        "id": rid,
        "ok": False,
        "error": {"code": "error", "message": f"{type(exc).__name__}: {exc}"},
    }


class _Connection(asyncio.Protocol):
    """One client connection: splits lines, starts a task per request, writes answers.

    A line longer than ``MAX_LINE`` closes the connection; so does end of input (requests
    still running are cancelled, as their answers could not be read anyway).

    Flow control: while the transport holds more unsent answers than its high-water mark
    (``pause_writing``), or ``MAX_IN_FLIGHT`` requests are unanswered, no further line is
    parsed and the socket is not read; the rest of the input read so far waits in ``_held``.
    Without it a client that sends and never reads made the engine buffer every answer: 4 MiB
    of empty lines became 480 MB of error answers, parsed in one turn of the loop."""

    def __init__(self, server: ControlServer):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()  # the start of a line whose end has not arrived yet
        self._pending: set[asyncio.Task] = set()
        self._in_flight = 0  # requests parsed and not answered yet
        self._writing_paused = False  # the transport's buffer is above its high-water mark
        self._held = b""  # input read but not parsed while blocked, from _held_at on
        self._held_at = 0

    def connection_made(self, transport) -> None:
        if self._server.admit(self, transport):
            self._transport = transport

    def _blocked(self) -> bool:
        return self._writing_paused or self._in_flight >= MAX_IN_FLIGHT

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._unblock()

    def _unblock(self) -> None:
        """Parse what was held, then read again, unless that blocked the connection again."""
        if self._blocked() or self._transport is None:
            return
        held, at = self._held, self._held_at
        self._held, self._held_at = b"", 0
        if held:
            self._lines(held, at)
        if not self._blocked() and self._transport is not None:
            self._transport.resume_reading()

    def _answered(self) -> None:
        self._in_flight -= 1
        if self._in_flight == MAX_IN_FLIGHT - 1:
            self._unblock()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # refused or closed: nothing more is served
            return
        if self._held:  # not expected (reading is paused while blocked), but never reorder
            self._held = self._held[self._held_at :] + data
            self._held_at = 0
            return
        if self._buf:
            # A long line comes in many chunks: collect them without parsing (or copying the
            # whole buffer per chunk) until one brings the line's end.
            self._buf += data
            if b"\n" not in data:
                if len(self._buf) > MAX_LINE:
                    log.debug("raft control: request line over %d bytes; closing", MAX_LINE)
                    self.close()
                return
            data = bytes(self._buf)
            self._buf = bytearray()
        self._lines(data, 0)

    def _lines(self, data: bytes, start: int) -> None:
        """Serve the complete lines of ``data`` from ``start``; keep an incomplete last line
        in ``_buf``, or the rest in ``_held`` once the connection is blocked."""
        while True:
            if self._blocked():
                self._held, self._held_at = data, start
                if self._transport is not None:
                    self._transport.pause_reading()
                return
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._request(data[start:end])
            start = end + 1
            if self._transport is None:
                return
        if start < len(data):
            rest = data[start:]
            if len(rest) > MAX_LINE:
                log.debug("raft control: request line over %d bytes; closing", MAX_LINE)
                self.close()
                return
            self._buf += rest

    def _request(self, line: bytes) -> None:
        try:
            req = json.loads(line.decode())  # a UnicodeDecodeError is a ValueError too
            if not isinstance(req, dict):
                raise ValueError("request is not an object")
        except ValueError as exc:
            self.write(
                {"id": None, "ok": False, "error": {"code": "bad_request", "message": str(exc)}}
            )
            return
        server = self._server
        fast = server.future_handlers.get(req.get("op"))
        if fast is None:
            task = asyncio.get_running_loop().create_task(server._handle(req, self))  # pylint: disable=protected-access
            self._pending.add(task)
            self._in_flight += 1
            task.add_done_callback(self._task_done)
            return
        rid = req.get("id")
        try:
            fut = fast(server.rt, req)
        except Exception as exc:  # pylint: disable=broad-except
            self.write(error_answer(rid, req.get("op"), exc))
            return
        self._in_flight += 1
        fut.add_done_callback(functools.partial(self._answer, rid, req.get("op")))

    def _task_done(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        self._answered()

    def _answer(self, rid, op, fut: asyncio.Future) -> None:
        self._write_answer(rid, op, fut)
        self._answered()

    def _write_answer(self, rid, op, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.write(error_answer(rid, op, Stopped("cancelled: the engine is stopping")))
            return
        exc = fut.exception()
        if exc is not None:
            self.write(error_answer(rid, op, exc))
            return
        result = fut.result()
        transport = self._transport
        if type(rid) is int and type(result) is bool:  # exact types: a bool id is no int here
            # A write's answer: what _ENCODE would give, without building and walking a dict.
            if transport is not None and not transport.is_closing():
                transport.write(_BOOL_ANSWER[result] % rid)
            return
        self.write({"id": rid, "ok": True, "result": result})

    def write(self, obj: dict) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write((_ENCODE(obj) + "\n").encode())

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc) -> None:
        self._drop()

    def close(self) -> None:
        transport = self._transport
        self._drop()
        if transport is not None:
            transport.close()

    def _drop(self) -> None:
        self._transport = None
        self._server._conns.discard(self)  # pylint: disable=protected-access
        pending, self._pending = self._pending, set()
        for task in pending:
            task.cancel()
