"""The envelope the runtime wraps around every proposed payload, and its parsing.

Lives here: the envelope's layout (the only code that knows it): building a node's prefix,
wrapping a payload, and taking an applied entry apart again. Must not live here: what the
runtime does with a sequence number (``runtime.proposals``), the payload's own format.

An entry's data is ``0x01 | u8 len | proposer id | 8-byte boot nonce | u64 sequence | payload``.
The proposer recognises its own entries when they are applied (the core forwards follower
proposals to the leader and gives no index back), so ``propose()`` can return the state
machine's result. The boot nonce keeps a restarted node from matching an entry proposed by its
previous incarnation to a new request with the same sequence number.
An empty entry (the leader's no-op, Raft §8) carries no envelope and is not applied.
"""

from __future__ import annotations

import os

VERSION = 1
NONCE_BYTES = 8
SEQ_BYTES = 8


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def prefix(node_id: str, nonce: bytes) -> bytes:
    """The bytes every entry this node (in this boot) proposes starts with."""
    ident = node_id.encode()
    if len(ident) > 255 or len(nonce) != NONCE_BYTES:
        raise ValueError("node id longer than 255 bytes or bad nonce")
    return bytes([VERSION, len(ident)]) + ident + nonce


def wrap(pfx: bytes, seq: int, payload: bytes) -> bytes:
    return pfx + seq.to_bytes(SEQ_BYTES, "big") + payload


def unwrap(data: bytes) -> bytes:
    """The payload of any node's entry (data without an envelope is returned as is)."""
    if len(data) >= 2 and data[0] == VERSION:
        start = 2 + data[1] + NONCE_BYTES + SEQ_BYTES
        if len(data) >= start:
            return data[start:]
    return data


def split(pfx: bytes, data: bytes) -> tuple[int | None, bytes]:
    """``(sequence, payload)`` of an applied entry's data: the sequence number when the entry
    was proposed by the node (and boot) whose prefix is ``pfx``, else None."""
    if data.startswith(pfx):
        end = len(pfx) + SEQ_BYTES
        return int.from_bytes(data[len(pfx) : end], "big"), data[end:]
    return None, unwrap(data)
