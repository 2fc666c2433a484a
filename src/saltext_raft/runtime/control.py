"""The local control channel: JSON lines over a loopback TCP port or a unix socket.

Lives here: :class:`ControlServer`, which answers requests from runners, the request gate,
tests and benchmarks with the runtime's client API. Must not live here: authentication (bind
it to loopback or a unix socket with tight permissions: whoever can connect can change
membership), Salt.

One request per line: ``{"id": any, "op": "...", ...}``; one answer per line, in completion
order (several requests may be outstanding on one connection): ``{"id": ..., "ok": true,
"result": ...}`` or ``{"id": ..., "ok": false, "error": {"code": ..., "message": ...}}``.

Ops: ``status``; ``propose`` (``data`` latin-1 text, ``timeout``) → the state machine's result;
``read`` → the read index; ``add_learner`` (``node``, ``address``), ``promote``, ``demote``,
``remove`` (``node``), ``transfer`` (``node``); plus any extra handlers the owner registers
(``handlers={"op": async fn(runtime, request) -> result}``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from saltext_raft.runtime.errors import RaftRuntimeError

log = logging.getLogger(__name__)
MAX_LINE = 16 << 20


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
    "add_learner": _admin("add_learner"),
    "promote": _admin("promote"),
    "demote": _admin("demote"),
    "remove": _admin("remove"),
    "transfer": _admin("transfer"),
}


class ControlServer:
    def __init__(self, runtime, address: str, handlers: dict | None = None):
        """``address``: "host:port" (port 0 picks one) or a filesystem path (unix socket)."""
        self.rt = runtime
        self.address = address
        self.handlers = dict(HANDLERS, **(handlers or {}))
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()
        self.bound = ""

    async def start(self) -> str:
        if "/" in self.address:
            if os.path.exists(self.address):
                os.unlink(self.address)
            self._server = await asyncio.start_unix_server(
                self._serve, self.address, limit=MAX_LINE
            )
            os.chmod(self.address, 0o600)
            self.bound = self.address
        else:
            host, _, port = self.address.rpartition(":")
            self._server = await asyncio.start_server(self._serve, host, int(port), limit=MAX_LINE)
            h, p = self._server.sockets[0].getsockname()[:2]
            self.bound = f"{h}:{p}"
        return self.bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        self._conns.add(me)
        pending: set[asyncio.Task] = set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("request is not an object")
                except ValueError as exc:
                    self._write(
                        writer,
                        {
                            "id": None,
                            "ok": False,
                            "error": {"code": "bad_request", "message": str(exc)},
                        },
                    )
                    continue
                task = asyncio.get_running_loop().create_task(self._handle(req, writer))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass
        except asyncio.CancelledError:
            # close() cancels open connections. This task is asyncio's connection callback,
            # whose done-callback calls task.exception(): a cancelled task would make it log a
            # CancelledError traceback at every shutdown. Ending normally here is the same
            # outcome (the connection closes below) without the noise.
            pass
        finally:
            self._conns.discard(me)
            for task in pending:
                task.cancel()
            writer.close()

    async def _handle(self, req: dict, writer: asyncio.StreamWriter) -> None:
        rid = req.get("id")
        handler = self.handlers.get(req.get("op"))
        try:
            if handler is None:
                raise RaftRuntimeError(f"unknown op {req.get('op')!r}")
            out = {"id": rid, "ok": True, "result": await handler(self.rt, req)}
        except RaftRuntimeError as exc:
            out = {"id": rid, "ok": False, "error": exc.to_dict()}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("raft control: %s failed", req.get("op"))
            out = {
                "id": rid,
                "ok": False,
                "error": {"code": "error", "message": f"{type(exc).__name__}: {exc}"},
            }
        self._write(writer, out)

    @staticmethod
    def _write(writer: asyncio.StreamWriter, obj: dict) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(obj, default=str).encode() + b"\n")
