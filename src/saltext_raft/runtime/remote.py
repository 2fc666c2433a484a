"""Runtime-to-runtime request/reply over ``MsgType.APP`` messages (never stepped into the core).

Lives here: :class:`Remote` — request ids, reply matching with timeouts, and the server side
that answers ``admin`` requests (membership, transfer: run on the leader or refused with a
leader hint), ``join`` requests (a node in no membership asks to be added as a learner; the
receiver adds it through the leader, unless the membership tombstones it: removed) and
``committed`` requests (is entry (index, term) committed? asked by a leader that removed itself
and lost leadership before it could see the commit). Payloads are ``codec.encode_payload``
maps in the APP message's ``context``. The layers above may add requests of their own
(:meth:`Remote.serve`: the cache service's relayed writes), served to members only. Must not
live here: what the operations do
(``runtime.admin``, the core), proposals and reads (the core forwards those).

A request is ``{"k": "req", "id": n, "op": ..., ...}``; a reply is ``{"k": "rep", "id": n,
"ok": True, "result": ...}`` or ``{"k": "rep", "id": n, "ok": False, "error": {code, message,
leader}}``. Ids are unique per boot (a boot nonce is part of them), so a reply meant for an
earlier incarnation of this node never matches a new request. A request the transport drops
instead of sending (its queue to that member is full, or it has no address) fails at once with
:class:`~saltext_raft.runtime.errors.Unsent`: no answer can come, and the caller retries or
falls back without waiting out its timeout.

Replay (docs/security.md, "Replay"): the transport refuses a replayed frame only while it
remembers the sender's epoch, and forgets on a restart (or adopts an older epoch after a long
silence). So a membership request must be worthless once recorded: every ``admin`` request
carries its *binding* — the sender's term, the index of the membership it was issued against
and an expiry (sender's wall clock + timeout) — and the leader serves it only in that same term,
against that same membership, before expiry plus :data:`MAX_CLOCK_SKEW`. Term and membership
index live in the log, so neither a receiver restart nor any silence re-opens the window; any
membership change or election makes every earlier request stale. A node that finds its own
request stale (it lagged behind the leader) retries with a fresh binding. ``admin`` requests
are served only from current members. A ``join`` (from a node in no membership: it has no term
or membership to bind to) carries the expiry only; a node removed on purpose is refused by the
removal tombstones, not here.

:class:`Remote` sees the node it serves only through a :class:`RemotePort`: its id, sending a
message, whether it runs, its membership, the operations a request may ask for (``admin``,
``learn_joiner_address``, ``entry_committed``) and the default request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass

from saltext_raft.core import Membership
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.runtime import errors
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.errors import StaleRequest
from saltext_raft.runtime.errors import Unsent
from saltext_raft.transport.base import RateLimitedLog
from saltext_raft.transport.codec import CodecError
from saltext_raft.transport.codec import decode_payload
from saltext_raft.transport.codec import encode_payload
from saltext_raft.transport.config import address_problem

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


def removed_message(node_id: str, index: int) -> str:
    """What a node removed from the cluster, and a node refusing its JOIN, both log."""
    return (
        f"{node_id} was removed from the cluster at index {index}; it stays out until "
        f"re-added with: salt-run raft.add node={node_id} address=<host:port>"
    )


class RemoteNotLeader(NoLeader):
    """The node asked is not the leader; ``leader`` is its hint ("" if none)."""

    code = "not_leader"

    def __init__(self, leader: str, msg: str = ""):
        super().__init__(
            msg
            or (
                f"not the leader; leader is {leader}"
                if leader
                else "not the leader; no leader known"
            )
        )
        self.leader = leader


#: Seconds a request stays acceptable past its expiry: how far two masters' wall clocks may
#: differ (keep them NTP-synchronised). A recorded request is worthless after expiry + this
#: even when no term or membership change made it stale first.
MAX_CLOCK_SKEW = 30.0


def binding(node, timeout: float, now: float) -> dict:
    """What a membership request from ``node`` is bound to (see the module docstring)."""
    return {"term": node.term, "conf": node.membership_at(node.last_index)[0], "exp": now + timeout}


def check_expiry(body: dict, now: float) -> None:
    exp = body.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise StaleRequest("request without an expiry (sent by an older version?)")
    if now > exp + MAX_CLOCK_SKEW:
        raise StaleRequest(
            f"request expired {now - exp:.0f}s ago (a replay, or clocks more than "
            f"{MAX_CLOCK_SKEW:g}s apart)"
        )


def check_binding(node, body: dict, now: float) -> None:
    """Raise :class:`StaleRequest` unless ``body`` was issued in ``node``'s (the leader's)
    current term, against its current membership, and has not expired."""
    check_expiry(body, now)
    term, conf = body.get("term"), body.get("conf")
    if type(term) is not int or type(conf) is not int:
        raise StaleRequest("request without its term and membership index")
    current = node.membership_at(node.last_index)[0]
    if term != node.term or conf != current:
        raise StaleRequest(
            f"request issued in term {term} against the membership of entry {conf}; "
            f"now term {node.term}, membership of entry {current}"
        )


#: The requests :class:`Remote` itself serves (:meth:`Remote.serve` may not take them).
_BUILT_IN = frozenset({"admin", "join", "committed"})


@dataclass(frozen=True)
class RemotePort:
    """What :class:`Remote` may use of the node it serves (``RaftRuntime`` builds it)."""

    node_id: str
    #: Send one message to a peer (the transport's ``send``): False if it was dropped.
    send: Callable[[Message], bool]
    running: Callable[[], bool]
    #: The node's current membership (the core's, as of the latest step).
    membership: Callable[[], Membership]
    #: ``RaftRuntime.admin``: run a leader operation (here ``forward=False``, with a binding).
    admin: Callable[..., Awaitable[dict]]
    learn_joiner_address: Callable[[str, str], None]
    entry_committed: Callable[[int, int], bool | None]
    #: The runtime's default request timeout, seconds.
    request_timeout: Callable[[], float]


class Remote:
    def __init__(self, port: RemotePort, clock=time.time):
        self.port = port
        self._clock = clock  # wall clock: expiries are compared across masters
        self._boot = int.from_bytes(os.urandom(4), "big") << 32
        self._next = 0
        self._calls: dict[int, asyncio.Future] = {}
        #: Requests served for the layers above the runtime (:meth:`serve`): op -> handler.
        self._handlers: dict[str, Callable[[str, dict], Awaitable[object]]] = {}
        self._serving: set[asyncio.Task] = set()
        self._counters = {
            "requests_sent": 0,
            "requests_unsent": 0,
            "requests_served": 0,
            "replies_unmatched": 0,
            "bad_payloads": 0,
            "stale_requests": 0,
        }

    def stats(self) -> dict:
        return dict(self._counters, in_flight=len(self._calls), serving=len(self._serving))

    def serve(self, op: str, handler: Callable[[str, dict], Awaitable[object]]) -> None:
        """Answer requests ``op`` from current members with ``await handler(sender, body)``
        (its result must be encodable; a RaftRuntimeError it raises is the error answered).
        Members only: a removed or unknown node is refused before the handler runs."""
        if op in _BUILT_IN or op in self._handlers:
            raise ValueError(f"request {op!r} is already served")
        self._handlers[op] = handler

    # --- client side --------------------------------------------------------------------------
    async def request(self, to: str, body: dict, timeout: float) -> dict:
        self._next += 1
        rid = self._boot | self._next
        fut = asyncio.get_running_loop().create_future()
        self._calls[rid] = fut
        try:
            if not self._send(to, dict(body, k="req", id=rid)):
                # Dropped (queue full, no address): no answer can come, so waiting for one
                # would only delay the caller's retry or fallback by the whole timeout.
                self._counters["requests_unsent"] += 1
                raise Unsent(f"{body.get('op')} request to {to} not sent: the transport dropped it")
            self._counters["requests_sent"] += 1
            return await asyncio.wait_for(fut, max(timeout, 0.001))
        except asyncio.TimeoutError:
            raise CommitTimeout(
                f"no answer from {to} to {body.get('op')} within {timeout:.3g}s"
            ) from None
        finally:
            self._calls.pop(rid, None)

    async def committed(self, members: list[str], index: int, term: int, timeout: float):
        """Ask ``members`` in turn whether entry ``(index, term)`` is committed: True, False
        (replaced), or None (nobody could tell within ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for nid in members:
            remaining = deadline - loop.time()
            if remaining <= 0 or nid == self.port.node_id:
                continue
            try:
                reply = await self.request(
                    nid, {"op": "committed", "index": index, "term": term}, min(remaining, 1.0)
                )
            except RaftRuntimeError:
                continue
            answer = reply.get("committed") if isinstance(reply, dict) else None
            if answer is not None:
                return bool(answer)
        return None

    def _send(self, to: str, body: dict) -> bool:
        """Hand ``body`` to the transport; False if it dropped the message (counted there)."""
        try:
            ctx = encode_payload(body)
        except CodecError as exc:
            raise Rejected(f"request cannot be encoded: {exc}") from None
        return self.port.send(Message(MsgType.APP, to, self.port.node_id, 0, context=ctx))

    # --- receiving ----------------------------------------------------------------------------
    def on_message(self, m: Message) -> None:
        try:
            body = decode_payload(m.context)
            if not isinstance(body, dict):
                raise CodecError("malformed", "APP payload is not a map")
            kind, rid = body.get("k"), body.get("id")
            if type(rid) is not int:
                raise CodecError("malformed", "APP payload without an integer id")
        except CodecError as exc:
            self._counters["bad_payloads"] += 1
            _rl.warning(
                m.frm, "raft %s: bad APP payload from %s: %s", self.port.node_id, m.frm, exc
            )
            return
        if kind == "rep":
            fut = self._calls.get(rid)
            if fut is None or fut.done():
                self._counters["replies_unmatched"] += 1
                return
            if body.get("ok"):
                fut.set_result(body.get("result"))
            else:
                err = body.get("error") or {}
                if err.get("code") == RemoteNotLeader.code:
                    fut.set_exception(
                        RemoteNotLeader(str(err.get("leader") or ""), str(err.get("message", "")))
                    )
                else:
                    fut.set_exception(errors.from_dict(err))
        elif kind == "req":
            self._counters["requests_served"] += 1
            task = asyncio.get_running_loop().create_task(self._serve(m.frm, rid, body))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, frm: str, rid: int, body: dict) -> None:
        port = self.port
        op = body.get("op")
        try:
            if op == "admin":
                args = body.get("args")
                if not isinstance(args, dict) or not isinstance(body.get("cmd"), str):
                    raise Rejected("admin request without cmd/args")
                if frm not in port.membership().members:
                    raise Rejected(f"admin requests are served for members only, not {frm}")
                # No second hop: a follower answers with its leader hint instead of forwarding.
                # The leader checks the binding right before it acts (RaftRuntime.admin).
                result = await port.admin(
                    body["cmd"],
                    args,
                    port.request_timeout(),
                    forward=False,
                    bound=lambda node: check_binding(node, body, self._clock()),
                )
            elif op == "join":
                problem = node_id_problem(frm)
                if problem:
                    raise Rejected(f"join refused: {problem}")
                check_expiry(body, self._clock())
                address = str(body.get("address") or "")
                problem = address_problem(address) if address else ""
                if problem:
                    raise Rejected(f"join refused: {problem}")
                log.info(
                    "raft %s: %s asks to join at %s", port.node_id, frm, address or "(no address)"
                )
                port.learn_joiner_address(frm, address)  # so that the answer can reach it
                removed_at = port.membership().removed_at(frm)
                if removed_at:  # the leader checks again (its membership may be newer)
                    msg = removed_message(frm, removed_at)
                    _rl.warning(frm, "raft %s: JOIN refused: %s", port.node_id, msg)
                    raise Rejected(msg)
                # "join": the leader refuses a removed node (an operator's add is not refused)
                result = await port.admin(
                    "add_learner", {"node": frm, "address": address, "join": True}
                )
            elif op == "committed":  # read-only: may this node tell that an entry committed?
                index, term = body.get("index"), body.get("term")
                if type(index) is not int or type(term) is not int:
                    raise Rejected("committed request without an integer index and term")
                result = {"committed": port.entry_committed(index, term)}
            elif op in self._handlers:
                if frm not in port.membership().members:
                    raise Rejected(f"{op} requests are served for members only, not {frm}")
                result = await self._handlers[op](frm, body)
            else:
                raise Rejected(f"unknown request {op!r}")
            reply = {"k": "rep", "id": rid, "ok": True, "result": result}
        except RemoteNotLeader as exc:
            reply = {
                "k": "rep",
                "id": rid,
                "ok": False,
                "error": dict(exc.to_dict(), leader=exc.leader),
            }
        except RaftRuntimeError as exc:
            if isinstance(exc, StaleRequest):
                self._counters["stale_requests"] += 1
                _rl.warning(
                    frm, "raft %s: %s request from %s refused: %s", port.node_id, op, frm, exc
                )
            reply = {"k": "rep", "id": rid, "ok": False, "error": exc.to_dict()}
        except Exception as exc:
            log.exception("raft %s: request %s from %s failed", port.node_id, op, frm)
            reply = {
                "k": "rep",
                "id": rid,
                "ok": False,
                "error": {"code": "error", "message": str(exc)},
            }
        if port.running():
            try:
                self._send(frm, reply)
            except RaftRuntimeError as exc:
                log.warning("raft %s: cannot answer %s: %s", port.node_id, frm, exc)

    def fail_all(self, exc: BaseException) -> None:
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(exc)

    def close(self) -> None:
        for task in list(self._serving):
            task.cancel()
