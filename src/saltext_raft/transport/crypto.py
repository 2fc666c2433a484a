"""Frame authentication, encryption and replay protection between masters.

Lives here: key derivation from the cluster secret, the frame header, sealing (encrypt +
authenticate) and opening (parse, check, authenticate, decrypt, replay-check) of frames.
Must not live here: sockets, message encoding (``codec``), Salt.

Theory of operation
-------------------
Frame (version 1)::

    "SRF" | version u8 | epoch u64 | counter u64 |
    len u8 | cluster id | len u8 | sender id | len u8 | receiver id | AEAD ciphertext+tag

Everything before the ciphertext is the header and is the AEAD's associated data, so the
cluster id, sender, receiver, protocol version, epoch and counter are all authenticated.

Keys (HKDF-SHA256; every key derivation of the project lives here)::

    secret      = HKDF(cluster.pem, salt="saltext-raft/v1 secret", info=...)  when no secret file

    cluster_key = HKDF(secret, salt="saltext-raft/v1", info="cluster" | cluster_id)
    frame_key   = HKDF(cluster_key, info="frame" | sender | receiver | epoch)

One key per (direction, sender boot epoch), so the 96-bit AEAD nonce is just the 64-bit
counter: the pair (epoch, counter) is the logical 128-bit nonce the design asks for, and a
(key, nonce) pair is never reused as long as a sender never reuses an epoch. The epoch is the
boot time in milliseconds shifted left 22 bits plus 22 random bits, and never below the
previous boot's epoch plus one when the owner persists it (``new_epoch(after=...)``): unique per
boot and increasing across restarts even when the clock steps back.

Receiver checks, in order (cheapest first, nothing stateful before authentication):
size → magic/version → cluster id → receiver id → sender known (a sender that is no peer
only for small frames, before any key derivation) → replay pre-check → AEAD open → commit
replay state.

Secret rotation: a receiver may accept frames under further secrets (``accept_secrets``,
``set_secrets``); the key that authenticated a sender's epoch is cached, so a frame costs one
AEAD pass normally and one per accepted secret when forged or when its sender switched.

Replay state per sender: the current epoch, the highest counter seen in it and a 64-frame
sliding window (tolerates reordering). A higher epoch is
adopted once a frame in it authenticates (the sender restarted). A lower epoch is always
refused as a replay, however long the current one has been silent: epochs only grow, so a
lower one is a recording (docs/transport.md).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from saltext_raft.transport.codec import CodecError

__all__ = [
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "FrameCrypto",
    "FrameRejected",
    "MAX_EPOCH",
    "MIN_SECRET_BYTES",
    "frame_bytes_for",
    "new_epoch",
]

FRAME_MAGIC = b"SRF"
FRAME_VERSION = 1
MIN_SECRET_BYTES = 16
TAG_BYTES = 16
REPLAY_WINDOW = 64
_FIXED = struct.Struct(">3sBQQ")  # magic, version, epoch, counter
_FIXED_SIZE = _FIXED.size
_EPOCH_COUNTER = struct.Struct(">QQ")
_NONCE_PAD = b"\x00\x00\x00\x00"
_MAX_COUNTER = (1 << 64) - 1
#: The highest boot epoch :func:`new_epoch` gives (epochs fit in 63 bits); none follows it.
MAX_EPOCH = (1 << 63) - 1
_AEADS = {"chacha20poly1305": ChaCha20Poly1305, "aesgcm": AESGCM}
#: Frames up to this size are never throttled (heartbeats, votes, acknowledgements, small
#: appends): a forger cannot cut a peer off, only delay its large frames.
THROTTLE_MIN_BYTES = 64 << 10
#: Bytes per second of frames failing authentication a claimed sender may cost a receiver
#: (leaky bucket; burst: one maximum frame). About 5 ms of ChaCha20-Poly1305 per second.
AUTH_FAILURE_RATE = 8 << 20
#: The longest header: the fixed part and three length-prefixed ids of at most 255 bytes.
MAX_HEADER_BYTES = _FIXED_SIZE + 3 * 256


def frame_bytes_for(message_bytes: int) -> int:
    """The size of the frame that carries a message of ``message_bytes``, at most."""
    return message_bytes + MAX_HEADER_BYTES + TAG_BYTES


class FrameRejected(CodecError):
    """A frame failed a check. ``reason`` is one of: malformed, version, oversize, wrong_cluster,
    wrong_receiver, unknown_sender, replay, auth. ``sender`` is the id the header claims ("" if
    the header did not get that far): unauthenticated, use it for rate-limited logging only."""

    def __init__(self, reason: str, detail: str = "", sender: str = ""):
        super().__init__(reason, detail)
        self.sender = sender


def new_epoch(after: int = -1) -> int:
    """A fresh boot epoch: milliseconds since 1970 << 22 | 22 random bits (< 2**63 until 2248),
    and at least ``after + 1``: give it the previous boot's epoch (persisted) and epochs only
    grow, even across a clock that stepped back. Receivers refuse every lower epoch, so a
    sender whose epoch went down cannot talk until each receiver restarts."""
    ms = time.time_ns() // 1_000_000
    fresh = ((ms << 22) | int.from_bytes(os.urandom(3), "big") & 0x3FFFFF) & MAX_EPOCH
    if after >= MAX_EPOCH:
        raise ValueError(f"no epoch left after {after}")
    return max(fresh, after + 1)


def _peek_sender(frame: bytes, pos: int) -> str:
    """The sender id a header claims (for logging a frame we reject before parsing it all)."""
    try:
        return frame[pos + 1 : pos + 1 + frame[pos]].decode()
    except Exception:
        return ""


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _derive_cluster_key(secret: bytes, cluster_id: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"saltext-raft/v1",
        info=b"cluster" + _lp(cluster_id.encode()),
    ).derive(secret)


def derive_secret_from_cluster_key(material: bytes) -> bytes:
    """The cluster secret of masters that set no ``secret_file``: HKDF-SHA256 of Salt's shared
    cluster key (``cluster.pem``, every master of a Salt cluster holds the same one), under its
    own label, so the secret changes when that key does and is never the key itself."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"saltext-raft/v1 secret",
        info=b"saltext-raft transport secret from cluster.pem",
    ).derive(material)


def derive_backup_key(secret: bytes) -> bytes:
    """The key that authenticates backup files (HMAC-SHA256): from the cluster secret, under
    its own label, so it is never a frame key and a frame key never authenticates a backup."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"saltext-raft/v1", info=b"backup file"
    ).derive(secret)


def _derive_frame_key(cluster_key: bytes, sender: bytes, receiver: bytes, epoch: int) -> bytes:
    info = b"frame" + _lp(sender) + _lp(receiver) + epoch.to_bytes(8, "big")
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(cluster_key)


class _Replay:
    """Replay state for one sender: current epoch, highest counter, window bitmap."""

    __slots__ = ("epoch", "high", "mask")

    def __init__(self, epoch: int, counter: int):
        self.epoch = epoch
        self.high = counter
        self.mask = 1


class FrameCrypto:
    """Seals frames from ``node_id`` and opens frames addressed to it, for one cluster.

    ``known_senders`` (a set the owner keeps current) limits who may send; ``None`` accepts any
    sender that authenticates. ``accept_secrets``: further secrets frames may be sealed with
    (never used to seal): a secret rotation in progress. Not thread-safe: use from one thread
    (the event loop).
    """

    def __init__(
        self,
        secret: bytes | str,
        cluster_id: str,
        node_id: str,
        *,
        epoch: int | None = None,
        aead: str = "chacha20poly1305",
        replay_window: int = REPLAY_WINDOW,
        max_frame_bytes: int = 16 << 20,
        clock: Callable[[], float] = time.monotonic,
        accept_secrets: Sequence[bytes | str] = (),
        auth_failure_rate: float = AUTH_FAILURE_RATE,
    ):
        if aead not in _AEADS:
            raise ValueError(f"aead must be one of {sorted(_AEADS)}")
        if not 1 <= replay_window <= 1024:
            raise ValueError("replay_window must be in [1, 1024]")
        self.cluster_id = cluster_id
        self.node_id = node_id
        self._cluster_b = cluster_id.encode()
        self._node_b = node_id.encode()
        for name, value in (("cluster_id", self._cluster_b), ("node_id", self._node_b)):
            if not 0 < len(value) <= 255:
                raise ValueError(f"{name} must be 1 to 255 bytes of UTF-8")
        self.epoch = new_epoch() if epoch is None else epoch
        if not 0 <= self.epoch <= _MAX_COUNTER:
            raise ValueError("epoch must fit in 64 bits")
        self._aead_cls = _AEADS[aead]
        self._cluster_key = b""
        self._open_keys: tuple[bytes, ...] = ()
        self.set_secrets(secret, accept_secrets)
        self._counter = 0
        self._window = replay_window
        self._window_mask = (1 << replay_window) - 1
        self._max_frame = max_frame_bytes
        self._clock = clock
        # what a frame for us must carry, byte for byte
        self._cluster_tail = bytes([len(self._cluster_b)]) + self._cluster_b
        self._receiver_tail = bytes([len(self._node_b)]) + self._node_b
        # sender side: receiver id -> (header tail bytes, AEAD) for our epoch
        self._seal_cache: dict[str, tuple[bytes, object]] = {}
        # receiver side: (sender bytes, epoch) -> (index in _open_keys, AEAD), only for
        # authenticated epochs
        self._open_cache: dict[tuple[bytes, int], tuple[int, object]] = {}
        self._replay: dict[bytes, _Replay] = {}
        # claimed sender -> (bytes of failed authentication not yet drained, when): a leaky
        # bucket that drains at auth_failure_rate bytes/s (see _throttled)
        self._auth_debt: dict[bytes, tuple[float, float]] = {}
        self._debt_rate = float(auth_failure_rate)

    def set_secrets(self, secret: bytes | str, accept_secrets: Sequence[bytes | str] = ()):
        """Seal with ``secret`` from now on; open frames sealed with it or any of
        ``accept_secrets`` (a rotation in progress: docs/operations.md). Replay state is kept:
        only keys change. Raises ``ValueError`` for a secret shorter than MIN_SECRET_BYTES."""
        keys = []
        for value in (secret, *accept_secrets):
            if isinstance(value, str):
                value = value.encode()
            if not isinstance(value, bytes) or len(value) < MIN_SECRET_BYTES:
                raise ValueError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")
            key = _derive_cluster_key(value, self.cluster_id)
            if key not in keys:
                keys.append(key)
        self._cluster_key = keys[0]
        self._open_keys = tuple(keys)
        self._seal_cache = {}
        self._open_cache = {}
        self._auth_debt = {}  # frames failing under the old keys say nothing about the new

    # --- sending ------------------------------------------------------------------------------

    def seal(self, receiver: str, plaintext: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` for ``receiver``; returns the whole frame.

        Raises :class:`CodecError` ("unencodable") for a receiver id that cannot be framed.
        """
        cached = self._seal_cache.get(receiver)
        if cached is None:
            recv_b = receiver.encode() if isinstance(receiver, str) else b""
            if not 0 < len(recv_b) <= 255:
                raise CodecError("unencodable", "receiver id must be 1 to 255 bytes of UTF-8")
            tail = (
                bytes([len(self._cluster_b)])
                + self._cluster_b
                + bytes([len(self._node_b)])
                + self._node_b
                + bytes([len(recv_b)])
                + recv_b
            )
            key = _derive_frame_key(self._cluster_key, self._node_b, recv_b, self.epoch)
            cached = (tail, self._aead_cls(key))
            self._seal_cache[receiver] = cached
        tail, aead = cached
        counter = self._counter = self._counter + 1
        if counter > _MAX_COUNTER:  # pragma: no cover - 2**64 frames
            raise RuntimeError("frame counter exhausted; restart the transport for a new epoch")
        header = _FIXED.pack(FRAME_MAGIC, FRAME_VERSION, self.epoch, counter) + tail
        return header + aead.encrypt(_NONCE_PAD + header[12:20], plaintext, header)

    # --- receiving ----------------------------------------------------------------------------

    def open(
        self, frame: bytes, known_senders=None, unknown_max_bytes: int = 0
    ) -> tuple[str, bytes]:
        """Check and decrypt ``frame``; returns ``(sender id, plaintext)``.

        ``known_senders`` (a container of ids) limits who may send: a frame from anyone else is
        refused before any key derivation or decryption, unless it is at most
        ``unknown_max_bytes`` long (a JOIN request from a node nobody lists yet). ``None``
        accepts any sender that authenticates.

        Raises only :class:`FrameRejected` (a :class:`CodecError`) with the reason.
        """
        if type(frame) is not bytes:
            try:
                frame = bytes(frame)
            except Exception:
                raise FrameRejected("malformed", "frame is not bytes") from None
        size = len(frame)
        if size > self._max_frame:
            raise FrameRejected("oversize", f"frame of {size} bytes")
        if size < _FIXED.size + 3 + TAG_BYTES:
            raise FrameRejected("malformed", "frame too short")
        if frame[3] != FRAME_VERSION or frame[:3] != FRAME_MAGIC:
            if frame[:3] != FRAME_MAGIC:
                raise FrameRejected("malformed", "bad magic")
            raise FrameRejected("version", f"frame version {frame[3]}")
        pos = _FIXED_SIZE
        n = frame[pos]
        end = pos + 1 + n
        if frame[pos:end] != self._cluster_tail:
            if end >= size:
                raise FrameRejected("malformed", "truncated header")
            raise FrameRejected(
                "wrong_cluster", "frame for another cluster", _peek_sender(frame, end)
            )
        n = frame[end]
        pos = end + 1 + n
        sender = frame[end + 1 : pos]
        n = frame[pos] if pos < size else 0
        end = pos + 1 + n
        if size - end < TAG_BYTES or len(sender) == 0:
            raise FrameRejected("malformed", "truncated header")
        try:
            sender_id = sender.decode()
        except UnicodeDecodeError:
            raise FrameRejected("malformed", "sender id is not UTF-8") from None
        if frame[pos:end] != self._receiver_tail:
            raise FrameRejected("wrong_receiver", "frame addressed to another node", sender_id)
        if (
            known_senders is not None
            and sender_id not in known_senders
            and size > unknown_max_bytes
        ):
            raise FrameRejected(
                "unknown_sender",
                f"sender {sender_id!r} is not a peer (frame of {size} bytes)",
                sender_id,
            )
        epoch, counter = _EPOCH_COUNTER.unpack_from(frame, 4)
        pos = end
        now = self._clock()
        state = self._replay.get(sender)
        # Fast path: the sender's current epoch, the next counter (in-order delivery).
        in_order = state is not None and epoch == state.epoch and counter > state.high
        if not in_order and state is not None:
            if epoch < state.epoch:
                raise FrameRejected(
                    "old_epoch",
                    f"epoch {epoch} is older than the sender's current {state.epoch}: a recorded "
                    "frame, or the sender lost its persisted epoch and restarted with its clock "
                    "behind (restart this node to accept it)",
                    sender_id,
                )
            if not self._fresh(state, epoch, counter):
                raise FrameRejected("replay", f"epoch {epoch} counter {counter}", sender_id)
        if size > THROTTLE_MIN_BYTES and sender in self._auth_debt and self._throttled(sender, now):
            raise FrameRejected(
                "throttled",
                f"frame of {size} bytes: frames claiming this sender keep failing authentication",
                sender_id,
            )
        nonce, body, header = _NONCE_PAD + frame[12:20], frame[pos:], frame[:pos]
        cached = self._open_cache.get((sender, epoch))
        plaintext = None
        if cached is not None:
            try:
                plaintext = cached[1].decrypt(nonce, body, header)
            except InvalidTag:
                pass
        if plaintext is None:
            # No key cached for this epoch yet, or the sender switched secrets (a rotation):
            # try each accepted secret once, the sending one first (one pass normally).
            for k, cluster_key in enumerate(self._open_keys):
                if cached is not None and cached[0] == k:
                    continue
                aead = self._aead_cls(_derive_frame_key(cluster_key, sender, self._node_b, epoch))
                try:
                    plaintext = aead.decrypt(nonce, body, header)
                except InvalidTag:
                    continue
                self._open_cache[(sender, epoch)] = (k, aead)
                if state is not None and state.epoch != epoch:
                    self._open_cache.pop((sender, state.epoch), None)
                break
            else:
                if size > THROTTLE_MIN_BYTES:
                    self._charge(sender, size, now)
                raise FrameRejected("auth", "authentication failed", sender_id)
        if in_order:
            shift = counter - state.high
            state.mask = (
                ((state.mask << shift) | 1) & self._window_mask if shift < self._window else 1
            )
            state.high = counter
        else:
            self._commit(sender, state, epoch, counter)
        return sender_id, plaintext

    # --- forged-frame budget ------------------------------------------------------------------
    # A genuine frame never fails authentication, so failures for a claimed sender mean someone
    # forges its frames. Each failed frame above THROTTLE_MIN_BYTES adds its size to the
    # sender's debt, which drains at auth_failure_rate bytes/s; while the debt exceeds the
    # largest frame, that sender's large frames are refused unread ("throttled"). Small frames
    # (heartbeats, votes, acknowledgements) always get through, so a forger costs the receiver
    # at most about auth_failure_rate bytes of AEAD work per second per claimed peer, and the
    # genuine peer keeps its place in the cluster (only its large appends wait for the attack
    # to stop). docs/security.md, "Network attacker".

    def _throttled(self, sender: bytes, now: float) -> bool:
        debt, when = self._auth_debt[sender]
        debt -= (now - when) * self._debt_rate
        if debt <= 0:
            del self._auth_debt[sender]
            return False
        return debt > self._max_frame

    def _charge(self, sender: bytes, size: int, now: float) -> None:
        debt, when = self._auth_debt.get(sender, (0.0, now))
        debt = max(0.0, debt - (now - when) * self._debt_rate) + size
        if len(self._auth_debt) >= 4096 and sender not in self._auth_debt:
            self._auth_debt.clear()  # only peers get here: a map this large is stale ids
        self._auth_debt[sender] = (debt, now)

    def _fresh(self, state: _Replay, epoch: int, counter: int) -> bool:
        """A frame in the sender's current epoch or a later one (never an older one) that is
        not a replay."""
        if epoch > state.epoch:
            return True  # a restarted sender; adopted only if the frame authenticates
        if counter > state.high:
            return True
        offset = state.high - counter
        return offset < self._window and not (state.mask >> offset) & 1

    def _commit(self, sender: bytes, state: _Replay | None, epoch: int, counter: int):
        if state is None or state.epoch != epoch:
            self._replay[sender] = _Replay(epoch, counter)
            return
        if counter > state.high:
            shift = counter - state.high
            state.mask = (
                ((state.mask << shift) | 1) & self._window_mask if shift < self._window else 1
            )
            state.high = counter
        else:
            state.mask |= 1 << (state.high - counter)
