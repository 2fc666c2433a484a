"""Transport configuration: one dataclass with defaults and ``validate()``.

Lives here: every transport option, its default and its bounds; the rule for a node address
(:func:`address_problem`) and turning one into a zmq endpoint. Must not live here: parsing of
Salt master opts (the engine does that and builds a ``TransportConfig``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.transport.codec import MAX_ID_LEN
from saltext_raft.transport.crypto import AUTH_FAILURE_RATE
from saltext_raft.transport.crypto import MIN_SECRET_BYTES


class TransportConfigError(ValueError):
    """A transport option is invalid; the message names it and says why."""


@dataclass
class TransportConfig:
    #: This cluster's id (bound into every frame and into the key derivation).
    cluster_id: str
    #: This node's id (Salt master id).
    node_id: str
    #: Shared cluster secret, at least 16 bytes (32 random bytes recommended).
    secret: bytes = field(repr=False)
    #: Further secrets accepted on frames (never used to send): a rotation in progress
    #: (docs/operations.md, "Rotating the cluster secret"). Each at least 16 bytes.
    accept_secrets: tuple = field(default=(), repr=False)
    #: Where to bind: "host:port" ("0.0.0.0:4606", "[::1]:4606") or a zmq endpoint "tcp://...".
    listen: str = "127.0.0.1:4606"
    #: Largest frame accepted or sent, header and tag included. zmq discards a larger one
    #: before it is read (MAXMSGSIZE). The engine and the standalone node set it to what a
    #: node really sends (``runtime.limits.max_frame_bytes``: about 4 MiB with the defaults);
    #: every byte above that is AEAD work an attacker can make a node do per forged frame.
    max_frame_bytes: int = 16 << 20
    #: Frames queued per peer before send() drops (counted as queue_full).
    send_hwm: int = 1000
    #: Frames queued by zmq per inbound connection before it stops reading from it (TCP
    #: back-pressure, then the sender's own queue drops). Bounds what one connection can make
    #: a node hold: at most ``recv_hwm * max_frame_bytes`` (docs/security.md).
    recv_hwm: int = 32
    #: Decoded messages buffered for recv() before new ones are dropped (inbound_full).
    max_inbound: int = 100_000
    #: Reconnect backoff: first retry after reconnect_ivl_ms, doubling up to reconnect_ivl_max_ms.
    #: The cap bounds how long a restarted peer stays unreachable: with 2000 ms, a node that came
    #: back could miss (pre-)votes for up to 2 s and a failover right after a restart took over
    #: a second. A retry every 400 ms towards a dead peer costs nothing worth saving.
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 400
    #: ZMTP heartbeats: detect a dead connection (peer host gone) within heartbeat_timeout_ms.
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000
    #: Queue only to connected peers (zmq IMMEDIATE): a down peer drops at once instead of
    #: filling its queue with heartbeats that are stale by the time it returns.
    immediate: bool = True
    #: "chacha20poly1305" (constant time everywhere) or "aesgcm" (faster with AES-NI).
    aead: str = "chacha20poly1305"
    #: Frames of reordering tolerated per sender.
    replay_window: int = 64
    #: At most one log line per peer per this many seconds about dropped frames.
    log_interval: float = 60.0
    #: Frames read per wake-up before yielding to the event loop...
    drain_max: int = 1024
    #: ...or bytes read (after the frame that passes it)...
    drain_bytes: int = 4 << 20
    #: ...or seconds spent: a flood of frames costs the loop at most this plus one frame per
    #: turn, so ticks, heartbeats and client requests keep running.
    drain_seconds: float = 0.01
    #: Bytes per second of frames failing authentication that one claimed sender may cost
    #: this node; beyond that its frames above 64 KiB are refused unread ("throttled") until
    #: the forging stops. Small frames always get through (docs/security.md).
    auth_failure_bytes_per_second: int = AUTH_FAILURE_RATE
    #: Frames from a sender that is not a peer (a node asking to JOIN) are authenticated only up
    #: to this size; larger ones are refused as ``unknown_sender`` before any crypto work.
    unknown_sender_max_bytes: int = 4096

    def validate(self) -> TransportConfig:
        def bad(name, why):
            raise TransportConfigError(f"transport option {name}: {why}")

        value = self.cluster_id
        if not isinstance(value, str) or not 0 < len(value.encode()) <= MAX_ID_LEN:
            bad("cluster_id", f"must be a non-empty string of at most {MAX_ID_LEN} bytes")
        problem = node_id_problem(self.node_id)
        if problem:
            bad("node_id", problem)
        secret = self.secret.encode() if isinstance(self.secret, str) else self.secret
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            bad("secret", f"must be at least {MIN_SECRET_BYTES} bytes")
        if not isinstance(self.accept_secrets, (tuple, list)):
            bad("accept_secrets", "must be a list of secrets")
        for extra in self.accept_secrets:
            extra = extra.encode() if isinstance(extra, str) else extra
            if not isinstance(extra, bytes) or len(extra) < MIN_SECRET_BYTES:
                bad("accept_secrets", f"each must be at least {MIN_SECRET_BYTES} bytes")
        if not isinstance(self.listen, str) or not self.listen:
            bad("listen", "must be 'host:port'")
        ints = {
            "max_frame_bytes": (1024, 1 << 30),
            "send_hwm": (1, 1 << 24),
            "recv_hwm": (1, 1 << 24),
            "max_inbound": (1, 1 << 26),
            "reconnect_ivl_ms": (1, 600_000),
            "reconnect_ivl_max_ms": (0, 3_600_000),
            "heartbeat_ivl_ms": (0, 600_000),
            "heartbeat_timeout_ms": (0, 3_600_000),
            "replay_window": (1, 1024),
            "drain_max": (1, 1 << 20),
            "drain_bytes": (1, 1 << 30),
            "unknown_sender_max_bytes": (0, 1 << 20),
            "auth_failure_bytes_per_second": (1024, 1 << 34),
        }
        for name, (low, high) in ints.items():
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                bad(name, f"must be an integer in [{low}, {high}]")
        if self.reconnect_ivl_max_ms and self.reconnect_ivl_max_ms < self.reconnect_ivl_ms:
            bad("reconnect_ivl_max_ms", "must be 0 or at least reconnect_ivl_ms")
        if self.aead not in ("chacha20poly1305", "aesgcm"):
            bad("aead", "must be 'chacha20poly1305' or 'aesgcm'")
        if (
            isinstance(self.drain_seconds, bool)
            or not isinstance(self.drain_seconds, (int, float))
            or not 0 < self.drain_seconds <= 1
        ):
            bad("drain_seconds", "must be a number in (0, 1]")
        value = self.log_interval
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            bad("log_interval", "must be a number >= 0")
        return self


#: Longest node address accepted (a host name is at most 253 characters, plus the port).
MAX_ADDRESS_LEN = 300

_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")


def address_problem(address, *, bind: bool = False) -> str:
    """Why ``address`` is not a node address ("" if it is): "host:port" with a port in 1-65535
    (0 too with ``bind``: any free port)
    ("10.0.0.4:4606", "[::1]:4606") or a zmq endpoint ("tcp://...", "ipc://..."); printable
    ASCII without whitespace. The one rule for an address that enters a membership (runner,
    state, admin request, JOIN): a committed address is applied by every node."""
    if not isinstance(address, str) or not address:
        return f"an address must be a non-empty 'host:port' string, got {address!r}"
    if len(address) > MAX_ADDRESS_LEN or not all(0x21 <= ord(c) < 0x7F for c in address):
        return (
            f"address {address[:64]!r} must be at most {MAX_ADDRESS_LEN} printable ASCII "
            "characters without whitespace"
        )
    if "://" in address:
        return "" if _ENDPOINT.fullmatch(address) else f"address {address!r} is no zmq endpoint"
    host, sep, port = address.rpartition(":")
    lowest = 0 if bind else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        return f"address {address!r} is not 'host:port' (a port from {lowest} to 65535)"
    return ""


def endpoint(address: str) -> str:
    """ "host:port" -> "tcp://host:port"; zmq endpoints ("tcp://...", "ipc://...") pass through."""
    problem = address_problem(address, bind=True)
    if problem:
        raise TransportConfigError(problem)
    if "://" in address:
        return address
    host, _, port = address.rpartition(":")
    return f"tcp://{host}:{port}"
