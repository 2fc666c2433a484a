"""The pyzmq transport between masters (``zmq.asyncio``).

Lives here: :class:`ZmqTransport` — one bound PULL socket for everything inbound, one
connecting PUSH socket per peer for everything outbound, each frame sealed by
:mod:`~saltext_raft.transport.crypto` around a :mod:`~saltext_raft.transport.codec` message.
Must not live here: Salt, message encoding, key handling.

Why this shape: a PULL socket accepts any number of peers on one port, fair-queues between
them and hands over single-part messages (no routing-id part to realign: every zmq message
part is treated as one frame, so a raw client sending multi-part garbage gets each part
counted as malformed). The sender is never taken from the connection, only from the sealed
header. (A ROUTER would tell us nothing we could trust and costs a second ``recv`` plus a
``RCVMORE`` check per frame.) One PUSH per peer gives per-peer queues, so a slow or dead peer
fills only its own queue (SNDHWM) and
``send`` drops for it alone. Sends are synchronous non-blocking zmq calls (zmq's I/O thread does
the socket work), so the event loop never waits on the network. Reads drain every readable
frame at once after one wake-up (up to ``drain_max`` frames, ``drain_bytes`` or
``drain_seconds``, whichever comes first), then hand messages to the handler or the inbox in a
batch.

Against a network attacker (docs/security.md, "Network attacker"): a frame from a sender that
is not a peer is refused before any key derivation or AEAD work unless it is small (a JOIN);
zmq discards frames above ``max_frame_bytes`` before we read them (MAXMSGSIZE) and holds at
most ``recv_hwm`` per connection; each wake-up is bounded in frames, bytes and time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.transport.base import Transport
from saltext_raft.transport.base import log as base_log
from saltext_raft.transport.codec import CodecError
from saltext_raft.transport.codec import decode_message
from saltext_raft.transport.codec import encode_message
from saltext_raft.transport.config import TransportConfig
from saltext_raft.transport.config import TransportConfigError
from saltext_raft.transport.config import endpoint
from saltext_raft.transport.crypto import FrameCrypto
from saltext_raft.transport.crypto import FrameRejected

__all__ = ["ZmqTransport"]

log = logging.getLogger(__name__)

#: Frames up to this size are copied into zmq (cheaper than zero-copy tracking for small ones).
_COPY_THRESHOLD = 64 << 10
#: zmq itself cuts connections that send a frame larger than MAXMSGSIZE; we set it a little
#: above max_frame_bytes so that slightly oversized frames reach our check and get counted.
_MAXMSGSIZE_SLACK = 64 << 10
#: Plain ints: pyzmq's enums cost an enum construction and a Flag.__and__ per test.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


class ZmqTransport(Transport):
    """Encrypted, authenticated Raft transport over pyzmq. Use from one event loop thread."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        context: zmq.asyncio.Context | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = base_log,
        epoch: int | None = None,
    ):
        config.validate()
        super().__init__(
            config.node_id,
            max_inbound=config.max_inbound,
            log_interval=config.log_interval,
            clock=clock,
            logger=logger,
        )
        self.config = config
        self._crypto = FrameCrypto(
            config.secret,
            config.cluster_id,
            config.node_id,
            epoch=epoch,
            aead=config.aead,
            replay_window=config.replay_window,
            max_frame_bytes=config.max_frame_bytes,
            clock=clock,
            accept_secrets=tuple(config.accept_secrets),
            auth_failure_rate=config.auth_failure_bytes_per_second,
        )
        self._own_context = context is None
        self._ctx = context if context is not None else zmq.asyncio.Context()
        self._sync_ctx = zmq.Context.shadow(self._ctx.underlying)
        self._inbound: zmq.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd: int | None = None  # the PULL socket's FD, watched by the loop
        self._peer_endpoints: dict[str, str] = {}
        self._known: frozenset[str] = frozenset()
        self._dealers: dict[str, zmq.Socket] = {}
        self._reader: asyncio.Task | None = None
        self._bytes_sent = 0
        self._bytes_received = 0
        self._drains_cut = 0  # wake-ups that stopped on the byte or time bound
        self._drain_longest = 0.0  # seconds, the longest one wake-up spent reading frames
        #: The endpoint actually bound ("tcp://127.0.0.1:34567"), known after start().
        self.bound_endpoint: str | None = None

    @property
    def epoch(self) -> int:
        return self._crypto.epoch

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("a closed transport cannot be restarted; create a new one")
        if self._inbound is not None:
            return
        cfg = self.config
        # A plain (not zmq.asyncio) socket: the loop watches its FD directly (_on_readable).
        sock = self._sync_ctx.socket(zmq.PULL)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, cfg.recv_hwm)
            sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame_bytes + _MAXMSGSIZE_SLACK)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if cfg.heartbeat_ivl_ms:
                sock.setsockopt(zmq.HEARTBEAT_IVL, cfg.heartbeat_ivl_ms)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, cfg.heartbeat_timeout_ms)
            bind_to = endpoint(cfg.listen)
            if bind_to.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            if bind_to.endswith(":0"):
                bind_to = bind_to[:-1] + "*"
            sock.bind(bind_to)
        except BaseException:
            sock.close(linger=0)
            raise
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._inbound = sock
        self._connect_missing(self._peer_endpoints)
        loop = self._loop = asyncio.get_running_loop()
        fd = sock.getsockopt(zmq.FD)
        try:
            loop.add_reader(fd, self._on_readable)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            self._reader = loop.create_task(
                self._read_loop(), name=f"raft-transport-reader-{self.node_id}"
            )
            self._reader.add_done_callback(self._reader_done)
        else:
            self._reader_fd = fd
            loop.call_soon(self._on_readable)  # frames may be queued already
        log.debug(
            "raft transport %s listening on %s (epoch %d)",
            self.node_id,
            self.bound_endpoint,
            self.epoch,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._mark_closed()
        if self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        for sock in self._dealers.values():
            sock.close(linger=0)
        self._dealers.clear()
        if self._inbound is not None:
            self._inbound.close(linger=0)
            self._inbound = None
        if self._own_context:
            self._ctx.term()

    def _reader_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and not self._closed:
            log.error(
                "raft transport %s: the reader stopped: %r",
                self.node_id,
                task.exception(),
                exc_info=task.exception(),
            )

    def set_secrets(self, secret: bytes, accept_secrets=()) -> None:
        """Send under ``secret`` from now on and accept frames under it or any of
        ``accept_secrets`` (a secret rotation without a restart: docs/operations.md)."""
        self._crypto.set_secrets(secret, tuple(accept_secrets))
        self.config.secret = secret
        self.config.accept_secrets = tuple(accept_secrets)
        log.info(
            "raft transport %s: cluster secret replaced (%d more accepted)",
            self.node_id,
            len(accept_secrets),
        )

    # --- peers --------------------------------------------------------------------------------

    def set_peers(self, addresses: dict[str, str]) -> None:
        # A committed membership may carry an address zmq cannot use (one proposed before
        # addresses were checked, or "tcp://<no such host>"): every node applies it, so it
        # must cost that one peer its link, logged and counted (``bad_address``), never the
        # node (docs/security.md, "Node addresses").
        wanted = {}
        for nid, addr in addresses.items():
            if nid == self.node_id:
                continue
            try:
                wanted[nid] = endpoint(addr)
            except TransportConfigError as exc:
                self._drop("bad_address", nid, str(exc))
        for node_id in list(self._peer_endpoints):
            if wanted.get(node_id) != self._peer_endpoints[node_id]:
                sock = self._dealers.pop(node_id, None)
                if sock is not None:
                    sock.close(linger=0)
        if self._inbound is not None and not self._closed:
            self._connect_missing(wanted)
        self._peer_endpoints = wanted
        self._known = frozenset(wanted)

    def _connect_missing(self, endpoints: dict[str, str]) -> None:
        """Connect to each peer in ``endpoints`` not connected yet; a peer zmq refuses to
        connect to is left out of ``endpoints`` (dropped as ``bad_address``)."""
        for node_id, ep in list(endpoints.items()):
            if node_id not in self._dealers:
                try:
                    self._connect(node_id, ep)
                except zmq.ZMQError as exc:
                    self._drop("bad_address", node_id, f"cannot connect to {ep}: {exc}")
                    del endpoints[node_id]

    def _connect(self, node_id: str, ep: str) -> None:
        cfg = self.config
        sock = self._sync_ctx.socket(zmq.PUSH)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, cfg.send_hwm)
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, 1024)  # we never read from a PUSH
            sock.setsockopt(zmq.IMMEDIATE, 1 if cfg.immediate else 0)
            sock.setsockopt(zmq.RECONNECT_IVL, cfg.reconnect_ivl_ms)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, cfg.reconnect_ivl_max_ms)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            if cfg.heartbeat_ivl_ms:
                sock.setsockopt(zmq.HEARTBEAT_IVL, cfg.heartbeat_ivl_ms)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, cfg.heartbeat_timeout_ms)
            if ep.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(ep)
        except BaseException:
            sock.close(linger=0)
            raise
        self._dealers[node_id] = sock

    # --- sending ------------------------------------------------------------------------------

    def send(self, msg: Message) -> bool:
        to = msg.to
        sock = self._dealers.get(to)
        if sock is None:
            if not self._closed:
                self._drop("unknown_peer", to, "no address for this peer (or not started)")
            return False
        if msg.frm != self.node_id:
            self._drop("unencodable", to, f"message claims to be from {msg.frm!r}")
            return False
        try:
            frame = self._crypto.seal(to, encode_message(msg))
        except CodecError as exc:
            self._drop("unencodable", to, exc.detail)
            return False
        size = len(frame)
        if size > self.config.max_frame_bytes:
            self._drop("oversize", to, f"outbound frame of {size} bytes")
            return False
        try:
            sock.send(frame, zmq.NOBLOCK, copy=size < _COPY_THRESHOLD)
        except zmq.Again:
            self._drop("queue_full", to, "peer queue full or peer not connected")
            return False
        except zmq.ZMQError as exc:
            self._drop("queue_full", to, f"zmq error {exc}")
            return False
        self._sent += 1
        self._bytes_sent += size
        return True

    # --- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        """The PULL socket's FD is readable: drain every frame waiting (up to ``drain_max``).

        Called by the loop's selector directly: no task, future or zmq poller per wake-up,
        which the zmq.asyncio ``poll`` path cost (~40 µs per wake-up and one more loop pass
        before a frame reached the core). zmq's FD only says "look at the socket" (edge
        triggered), so frames are read while ``EVENTS`` says more are waiting: the last check
        that says none also re-arms the FD.
        """
        sock = self._inbound
        if sock is None or self._closed:
            return
        recv = sock.recv
        events = sock.get
        cfg = self.config
        clock = time.monotonic
        started = clock()
        stop_at = started + cfg.drain_seconds
        budget = cfg.drain_bytes
        try:
            for _ in range(cfg.drain_max):
                # Ask EVENTS before each recv instead of reading until Again: EVENTS keeps the
                # GIL (recv drops and retakes it, a thread switch when the storage thread is
                # waiting for it) and costs no exception per wake-up.
                if not events(_EVENTS) & _POLLIN:
                    return
                try:
                    frame = recv(_NOBLOCK)
                except zmq.Again:
                    continue
                self._handle_frame(frame)
                # Bounded by bytes and time too: frames of a flood can each cost an AEAD pass
                # over max_frame_bytes, and the loop must keep ticking (docs/security.md).
                budget -= len(frame)
                now = clock()
                if now - started > self._drain_longest:
                    self._drain_longest = now - started
                if budget <= 0 or now >= stop_at:
                    self._drains_cut += 1
                    break
        except zmq.ZMQError:
            if self._closed:
                return
            raise
        self._loop.call_soon(self._on_readable)  # more is waiting: let other callbacks run

    def _handle_frame(self, frame: bytes) -> None:
        try:
            self._on_frame(frame)
        except Exception:  # a bug here must not leave the node deaf
            self._dropped["malformed"] += 1
            log.exception("raft transport %s: unexpected error handling a frame", self.node_id)

    async def _read_loop(self) -> None:
        """The same through zmq.asyncio, for loops that cannot watch a file descriptor."""
        asock = zmq.asyncio.Socket.shadow(self._inbound.underlying)
        recv = self._inbound.recv
        while True:
            try:
                await asock.poll(None, zmq.POLLIN)
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            cfg = self.config
            stop_at = time.monotonic() + cfg.drain_seconds
            budget = cfg.drain_bytes
            for _ in range(cfg.drain_max):
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle_frame(frame)
                budget -= len(frame)
                if budget <= 0 or time.monotonic() >= stop_at:
                    self._drains_cut += 1
                    await asyncio.sleep(0)
                    break
            else:
                await asyncio.sleep(0)  # more is waiting: let other tasks run, then continue

    def _on_frame(self, frame: bytes) -> None:
        self._bytes_received += len(frame)
        try:
            # Peers only, checked before any key derivation or decryption; a node that is no
            # peer yet (JOIN) gets small frames authenticated, and only APP ones through below.
            sender, plaintext = self._crypto.open(
                frame, self._known, self.config.unknown_sender_max_bytes
            )
        except FrameRejected as exc:
            self._drop(
                exc.reason, exc.sender if exc.sender in self._known else "unknown", exc.detail
            )
            return
        try:
            msg = decode_message(plaintext, self.config.max_frame_bytes)
        except CodecError as exc:  # authenticated but undecodable: a peer bug or version skew
            self._drop(exc.reason, sender if sender in self._known else "unknown", exc.detail)
            return
        if sender not in self._known and msg.type is not MsgType.APP:
            # A node that is not (yet) a peer may only talk to the runtime (its JOIN request);
            # Raft messages from it never reach the core.
            self._drop("unknown_sender", "unknown", f"sender {sender!r} is not a peer")
            return
        if msg.frm != sender:
            self._drop("malformed", sender, f"message claims to be from {msg.frm!r}")
            return
        if msg.to != self.node_id:
            self._drop("wrong_receiver", sender, f"message addressed to {msg.to!r}")
            return
        self._deliver(msg)

    def stats(self) -> dict:
        out = super().stats()
        out["bytes_sent"] = self._bytes_sent
        out["bytes_received"] = self._bytes_received
        out["peers"] = len(self._dealers)
        out["drains_cut"] = self._drains_cut
        out["drain_longest_ms"] = round(self._drain_longest * 1000, 3)
        return out
