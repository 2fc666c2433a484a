"""The transport interface, its counters, inbound buffering and rate-limited drop logging.

Lives here: :class:`Transport` (the abstract API the runtime uses; implemented by the pyzmq
transport and the in-memory one), the drop reasons, :class:`RateLimitedLog`. Must not live here:
sockets, crypto, encodings.

Delivery model: the transport is lossy and unordered across reconnects — the Raft layer
tolerates loss, duplication and reordering (it must: the network may do all three). ``send``
never blocks the event loop: it queues or drops and counts. Inbound messages are either
handed to a handler callback (``set_handler``; cheapest, one call per message, from the event
loop) or buffered for ``recv`` / ``recv_batch``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from saltext_raft.core.types import Message

__all__ = ["DROP_REASONS", "RateLimitedLog", "Transport", "TransportClosed"]

log = logging.getLogger(__name__)

#: Why a frame or message was dropped. Inbound: malformed .. wrong_receiver, inbound_full.
#: Outbound: queue_full (peer queue full or peer not connected), unknown_peer (no address),
#: unencodable (a message the codec cannot pack: a bug in the caller), oversize (both ways).
#: throttled: a large inbound frame refused unread while its claimed sender's frames keep
#: failing authentication (someone forges them; docs/security.md). partitioned (both ways): a
#: link cut on purpose by test-only fault injection (transport.faults). old_epoch: a frame in an
#: epoch older than the sender's current one (a recording; epochs only grow). bad_address: a
#: peer whose address (in the membership) zmq cannot use, counted each time the peers are set;
#: messages to it then count as unknown_peer.
DROP_REASONS = (
    "malformed",
    "version",
    "auth",
    "throttled",
    "oversize",
    "replay",
    "old_epoch",
    "unknown_sender",
    "wrong_cluster",
    "wrong_receiver",
    "queue_full",
    "unknown_peer",
    "unencodable",
    "inbound_full",
    "partitioned",
    "bad_address",
)


class TransportClosed(Exception):
    """The transport was closed while (or before) waiting for a message."""


class RateLimitedLog:
    """Log at most one line per key per ``interval`` seconds; count what was suppressed.

    Keys are peers (or "unknown" for unauthenticated senders), so the table stays small.
    """

    def __init__(
        self,
        logger: logging.Logger = log,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ):
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, fmt: str, *args) -> bool:
        """Log ``fmt % args`` for ``key`` unless logged within the interval. True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self._max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fmt += " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.warning(fmt, *args)
        return True


class Transport(abc.ABC):
    """Moves Raft messages between this node and its peers. Use from one event loop thread."""

    node_id: str

    def __init__(
        self,
        node_id: str,
        *,
        max_inbound: int = 100_000,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ):
        self.node_id = node_id
        self._max_inbound = max_inbound
        self._inbox: deque[Message] = deque()
        self._waiters: list[asyncio.Future] = []
        self._handler: Callable[[Message], None] | None = None
        self._closed = False
        self._sent = 0
        self._received = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._drop_log = RateLimitedLog(logger, log_interval, clock)

    # --- the API ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind/listen and connect to the current peers."""

    @abc.abstractmethod
    def send(self, msg: Message) -> bool:
        """Queue ``msg`` for ``msg.to``. Never blocks. Returns False if it was dropped (counted)."""

    def send_many(self, msgs) -> int:
        """Send each message; returns how many were queued."""
        send = self.send
        return sum(1 for m in msgs if send(m))

    @abc.abstractmethod
    def set_peers(self, addresses: dict[str, str]) -> None:
        """Node id -> "host:port" of every peer (this node's own entry is ignored).

        Replaces the previous map: new peers are connected, removed ones disconnected, changed
        addresses reconnected. Only these peers may send to this node.
        """

    async def recv(self) -> Message:
        """The next valid inbound message. Raises :class:`TransportClosed` once closed."""
        while not self._inbox:
            await self._wait()
        return self._inbox.popleft()

    async def recv_batch(self, max_messages: int = 4096) -> list[Message]:
        """Wait for at least one message, then return up to ``max_messages`` buffered ones."""
        while not self._inbox:
            await self._wait()
        inbox = self._inbox
        if len(inbox) <= max_messages:
            batch = list(inbox)
            inbox.clear()
            return batch
        return [inbox.popleft() for _ in range(max_messages)]

    def set_handler(self, handler: Callable[[Message], None] | None) -> None:
        """Deliver inbound messages by calling ``handler(msg)`` on the event loop instead of
        buffering them for ``recv``. Already-buffered messages are handed over first. The handler
        must not block; an exception it raises is logged and the message counted as received."""
        self._handler = handler
        if handler is not None:
            while self._inbox:
                self._call_handler(self._inbox.popleft())

    def stats(self) -> dict:
        """Counters: sent, received, dropped (per reason), plus implementation extras."""
        return {"sent": self._sent, "received": self._received, "dropped": dict(self._dropped)}

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop, drop queued frames (linger 0) and wake ``recv`` waiters with TransportClosed."""

    # --- for implementations ----------------------------------------------------------------

    def _deliver(self, msg: Message) -> None:
        self._received += 1
        if self._handler is not None:
            self._call_handler(msg)
            return
        if len(self._inbox) >= self._max_inbound:
            self._received -= 1
            self._drop("inbound_full", msg.frm, "inbound buffer full")
            return
        self._inbox.append(msg)
        if self._waiters:
            self._wake()

    def _call_handler(self, msg: Message) -> None:
        try:
            self._handler(msg)
        except Exception:  # the handler's bug must not kill the reader
            log.exception(
                "transport message handler failed on a %s from %s", msg.type.name, msg.frm
            )

    def _wake(self, exc: BaseException | None = None) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    async def _wait(self) -> None:
        if self._closed:
            raise TransportClosed(f"transport of {self.node_id} is closed")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def _drop(self, reason: str, peer: str, detail: str) -> None:
        self._dropped[reason] += 1
        self._drop_log.warning(
            peer or "unknown",
            "raft transport %s: dropped a frame from/to %s: %s (%s)",
            self.node_id,
            peer or "unknown",
            reason,
            detail,
        )

    def _mark_closed(self) -> None:
        self._closed = True
        self._wake(TransportClosed(f"transport of {self.node_id} is closed"))
