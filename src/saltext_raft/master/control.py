"""Runner <-> engine requests over the master event bus (the reactor runner's pattern).

Lives here: the operations' vocabulary (:data:`OPS`, the one list: the client refuses anything
else, the engine dispatches each to its ``_op_<name>`` method), the control tags, request
signing and checking, :class:`ControlClient` (used by the ``raft`` runners inside ``salt-run``)
and :class:`ControlRelay` (used by the engine: takes authentic requests off the bus, runs a
handler for each, several at once, fires replies). Must not live here: what the operations do
(the engine's handler does it), how results are rendered (the runners), the local socket
channel of the cache and the standalone node (``runtime/control.py``'s ``ControlServer``, the
one control *server*: this module only relays signed bus requests to the engine).

Protocol
--------
Request, tag ``saltext/raft/ctl/req/<node id>``::

    {"rid": <random hex>, "op": "members", "args": {...}, "node": <node id>,
     "ts": <unix time>, "mac": HMAC-SHA256(master key, canonical(rid, op, args, node, ts))}

Reply, tag ``saltext/raft/ctl/ret/<rid>``: ``{"rid": ..., "ok": bool, "result": ... |
"error": "..."}``.

The master key (``cachedir/.root_key``, readable by the master's user only) authenticates the
request without travelling on the bus: on clustered masters (Salt's ``cluster_id``) every local
event is forwarded to every peer master, so a request carrying the key itself would hand it to
them. Peer masters have their own keys, and the server also drops anything carrying
``__peer_id`` or naming another node, so a forwarded request is ignored rather than answered
twice. The client matches its reply by ``rid``.

Each request is served at most once: the server remembers the ``rid`` of every request it
accepted until the request is too old to be accepted anyway (:class:`SeenRequests`), so a
request recorded off the bus and fired again (a ``remove``, an ``add``) is ignored. The memory
is bounded: at most :data:`MAX_REMEMBERED` requests per window; beyond that new requests are
refused (never forgotten early). It lives in the engine process: a request recorded less than
:data:`MAX_REQUEST_AGE` seconds before an engine restart could be served again after it, but
the master key that signs requests changes with every master restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from saltext_raft.core.types import MEMBERSHIP_OPS
from saltext_raft.master import settings as engine_settings

log = logging.getLogger(__name__)

REQ_PREFIX = "saltext/raft/ctl/req/"
RET_PREFIX = "saltext/raft/ctl/ret/"
#: Requests older than this (seconds, by the request's own clock) are ignored: a replayed or
#: long-queued request must not change membership.
MAX_REQUEST_AGE = 120.0

#: Accepted requests remembered at most (each for its validity window); beyond this new ones
#: are refused until old ones expire. Only holders of the master key can sign requests.
MAX_REMEMBERED = 4096

#: Read-only requests the engine serves at once, beside the one operation that changes
#: something. Each waits on the engine's loop for its result, and a membership change without
#: quorum waits its whole timeout: served one at a time, a pending ``raft.add`` left
#: ``raft.status`` unanswered for as long (when an operator needs it most). More wait for a
#: slot, in order.
MAX_CONCURRENT = 8
#: How often (seconds) the serving thread looks for finished replies while requests run.
REPLY_POLL = 0.02

#: The operations that name a master (``node=<master id>``): the runtime's membership vocabulary.
NODE_OPS = MEMBERSHIP_OPS
OPS = (
    "backup",
    "members",
    "status",
    "leader",
    *NODE_OPS,
    "snapshot",
    "ping",
    "reload_secrets",
)
#: The operations that only look (served :data:`MAX_CONCURRENT` at once); every other one
#: changes something and is served alone, in the order requested, as it always was (two
#: backups to one name, two membership changes, must not race).
READ_OPS = frozenset(("members", "status", "leader", "ping"))


class ControlError(Exception):
    """The engine answered with an error, or could not be reached."""


class ControlTimeout(ControlError):
    """No reply from the local engine in time."""


def request_tag(node_id: str) -> str:
    return f"{REQ_PREFIX}{node_id}"


def reply_tag(rid: str) -> str:
    return f"{RET_PREFIX}{rid}"


def _canonical(rid: str, op: str, args: dict, node: str, ts: float) -> bytes:
    return json.dumps(
        [rid, op, args, node, ts], sort_keys=True, separators=(",", ":"), default=str
    ).encode()


def sign(key: str, rid: str, op: str, args: dict, node: str, ts: float) -> str:
    return hmac.new(key.encode(), _canonical(rid, op, args, node, ts), hashlib.sha256).hexdigest()


def make_request(key: str, node: str, op: str, args: dict | None = None, now=None) -> dict:
    args = dict(args or {})
    rid = uuid.uuid4().hex
    ts = float(now if now is not None else time.time())
    return {
        "rid": rid,
        "op": op,
        "args": args,
        "node": node,
        "ts": ts,
        "mac": sign(key, rid, op, args, node, ts),
    }


def check_request(data, node_id: str, key: str, now: float | None = None) -> str | None:
    """Why a request event must be ignored, or None if it is for us and authentic."""
    if not isinstance(data, dict):
        return "not a mapping"
    if "__peer_id" in data:
        return "forwarded from a peer master"
    if data.get("node") != node_id:
        return f"addressed to {data.get('node')!r}"
    rid, op, args, ts, mac = (data.get(k) for k in ("rid", "op", "args", "ts", "mac"))
    if not isinstance(rid, str) or not isinstance(op, str) or not isinstance(args, dict):
        return "malformed"
    if not isinstance(ts, (int, float)) or not isinstance(mac, str):
        return "malformed"
    if not key:
        return "no master key to check against"
    if not hmac.compare_digest(mac, sign(key, rid, op, args, node_id, ts)):
        return "bad signature"
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_REQUEST_AGE:
        return "too old"
    return None


class SeenRequests:
    """The ids of accepted requests, each until its request could no longer be accepted
    (``ts + MAX_REQUEST_AGE``). Bounded by ``limit``: when full of unexpired ids, a new request
    is refused rather than an old id forgotten (forgetting would re-open its replay)."""

    def __init__(self, limit: int = MAX_REMEMBERED, window: float = MAX_REQUEST_AGE):
        self.limit = limit
        self.window = window
        self._expires: dict[str, float] = {}

    def admit(self, rid: str, ts: float, now: float) -> str | None:
        """Remember ``rid``; why it must be refused (seen before, or too many), or None."""
        if rid in self._expires:
            return "replayed (this request id was served already)"
        if len(self._expires) >= self.limit:
            self._expires = {r: t for r, t in self._expires.items() if t >= now}
            if len(self._expires) >= self.limit:
                return f"more than {self.limit} requests within {self.window:g}s"
        self._expires[rid] = ts + self.window
        return None

    def __len__(self) -> int:
        return len(self._expires)


def master_key(opts: dict) -> str:
    """The master key as ``salt.utils.master.get_master_key`` reads it (``""`` if unreadable)."""
    import salt.utils.master  # pylint: disable=import-outside-toplevel

    return salt.utils.master.get_master_key("root", opts) or ""


def _open_bus(opts: dict, listen: bool):
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    return salt.utils.event.get_event("master", sock_dir=opts["sock_dir"], opts=opts, listen=listen)


def local_node_id(opts: dict) -> str:
    return engine_settings.read(opts).node_id


class ControlClient:
    """Sends one request to the local engine and waits for its reply."""

    def __init__(self, opts: dict, bus_factory: Callable | None = None, key: str | None = None):
        self.opts = opts
        self._bus_factory = bus_factory or (lambda: _open_bus(opts, listen=True))
        self._key = key

    def call(self, op: str, args: dict | None = None, timeout: float = 10.0):
        if op not in OPS:
            raise ControlError(f"unknown operation {op!r}")
        node = local_node_id(self.opts)
        key = self._key if self._key is not None else master_key(self.opts)
        if not key:
            raise ControlError(
                "cannot read the master key (run salt-run as the master's user, on the master)"
            )
        req = make_request(key, node, op, args)
        want = reply_tag(req["rid"])
        bus = self._bus_factory()
        try:
            # Subscribe before firing, or a fast reply is missed.
            if hasattr(bus, "connect_pub"):
                bus.connect_pub()
            bus.fire_event(req, request_tag(node))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ControlTimeout(
                        f"no reply from the raft engine on master {node} within {timeout:g}s: "
                        "is the master running with the raft engine configured (engines: "
                        "[raft]) and is the engine up? See the master log."
                    )
                ev = bus.get_event(wait=min(remaining, 1.0), tag=want, full=True)
                if not ev:
                    continue
                data = ev.get("data") or {}
                if ev.get("tag") != want or data.get("rid") != req["rid"]:
                    continue
                if data.get("ok"):
                    return data.get("result")
                raise ControlError(str(data.get("error") or "the operation failed"))
        finally:
            destroy = getattr(bus, "destroy", None)
            if destroy:
                destroy()


class ControlRelay:
    """The engine's side: ``serve(stop)`` on a dedicated thread (or ``handle`` for one request,
    synchronously).

    ``handler(op, args)`` returns a JSON-able result or raises; it may block (it typically
    waits on the runtime's event loop). ``serve`` runs each authentic request's handler on a
    thread of its own: the operations that change something one at a time, in order, and
    beside them up to :data:`MAX_CONCURRENT` that only look (:data:`READ_OPS`), so a slow
    change never holds up ``status``. The bus is used by the serving thread only (it fires the
    replies).
    """

    def __init__(
        self,
        opts: dict,
        node_id: str,
        handler: Callable[[str, dict], object],
        bus=None,
        key: str | None = None,
    ):
        self.opts = opts
        self.node_id = node_id
        self.handler = handler
        self._bus = bus
        self._key = key
        self._key_from_disk = key is None
        self._ignored_log = 0.0
        self._seen = SeenRequests()
        self.served = 0
        self._replies: queue.SimpleQueue = queue.SimpleQueue()  # from the handler threads
        # one lane for the operations that only look, one (a single slot) for the others
        self._slots = {
            True: threading.BoundedSemaphore(MAX_CONCURRENT),
            False: threading.BoundedSemaphore(1),
        }
        self._waiting: list[tuple] = []  # admitted requests waiting for a slot, in order
        self._running = 0  # handler threads started and not yet replied to

    @property
    def bus(self):
        if self._bus is None:
            self._bus = _open_bus(self.opts, listen=True)
        return self._bus

    def key(self) -> str:
        if self._key is None:
            self._key = master_key(self.opts)
        return self._key

    def poll_once(self, wait: float = 0.5) -> bool:
        """Take at most one request off the bus (start its handler), and fire the replies of
        the handlers that finished. While handlers run, the bus is polled for at most
        :data:`REPLY_POLL` seconds so their replies go out promptly."""
        busy = self._running or self._waiting
        ev = self.bus.get_event(wait=REPLY_POLL if busy else wait, tag=REQ_PREFIX, full=True)
        took = False
        if ev and (ev.get("tag") or "").startswith(REQ_PREFIX):
            request = self.admit(ev.get("data"))
            if request is not None:
                self._waiting.append(request)
            took = True
        self._start_waiting()
        self._fire_finished()
        return took

    def handle(self, data) -> dict | None:
        """Serve one request now, on this thread: the reply fired, and returned (None: the
        request was ignored)."""
        request = self.admit(data)
        if request is None:
            return None
        reply = self.answer(*request)
        self._fire(reply)
        return reply

    def admit(self, data) -> tuple | None:
        """``(rid, op, args)`` of an authentic, fresh, new request for this node; None (and a
        rate-limited warning for what matters) otherwise."""
        why = check_request(data, self.node_id, self.key())
        if why == "bad signature" and self._key_from_disk and self._key is not None:
            # The master key is regenerated at each master start: re-read it once.
            self._key = None
            why = check_request(data, self.node_id, self.key())
        if why is None:  # authentic and fresh: is it new?
            why = self._seen.admit(data["rid"], float(data["ts"]), time.time())
        if why is not None:
            if why not in ("forwarded from a peer master",) and not why.startswith("addressed"):
                now = time.monotonic()
                if now - self._ignored_log > 60:
                    self._ignored_log = now
                    log.warning("saltext-raft: ignored a control request: %s", why)
            return None
        return data["rid"], data["op"], data["args"]

    def answer(self, rid: str, op: str, args: dict) -> dict:
        """The reply to an admitted request (the handler's result or its error)."""
        try:
            if op not in OPS:
                raise ControlError(f"unknown operation {op!r}")
            return {"rid": rid, "ok": True, "result": self.handler(op, args)}
        except Exception as exc:  # pylint: disable=broad-except
            msg = str(exc) or type(exc).__name__
            if not isinstance(exc, (ControlError, ValueError, TimeoutError, LookupError)):
                log.exception("saltext-raft: control operation %s failed", op)
            return {"rid": rid, "ok": False, "error": msg}

    def _start_waiting(self) -> None:
        """Start every waiting request whose lane has a free slot; the others keep their
        order."""
        full = set()
        still = []
        for request in self._waiting:
            lane = request[1] in READ_OPS
            if lane in full or not self._slots[lane].acquire(blocking=False):
                full.add(lane)
                still.append(request)
                continue
            self._running += 1
            # A daemon thread: an operation still waiting when the engine stops must not
            # hold the process's exit (its loop is gone; the runner times out by itself).
            threading.Thread(
                target=self._run, args=(*request, lane), name=f"raft-ctl-{request[1]}", daemon=True
            ).start()
        self._waiting = still

    def _run(self, rid: str, op: str, args: dict, lane: bool) -> None:
        try:
            self._replies.put(self.answer(rid, op, args))
        finally:
            self._slots[lane].release()

    def _fire_finished(self) -> None:
        while True:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                return
            self._running -= 1
            self._fire(reply)

    def _fire(self, reply: dict) -> None:
        self.bus.fire_event(reply, reply_tag(reply["rid"]))
        self.served += 1

    def serve(self, stop) -> None:
        """Serve until ``stop.is_set()`` (a threading.Event)."""
        while not stop.is_set():
            try:
                self.poll_once(0.5)
            except Exception:  # pylint: disable=broad-except
                log.exception("saltext-raft: control loop error; reconnecting")
                self._bus = None
                stop.wait(1.0)

    def close(self) -> None:
        if self._bus is not None and hasattr(self._bus, "destroy"):
            self._bus.destroy()
        self._bus = None
