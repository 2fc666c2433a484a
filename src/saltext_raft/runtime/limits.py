"""How large a message between masters can really be, and so how large a frame may be.

Lives here: the rule that derives the largest message a node ever sends from the configured
sizes (the core's ``max_msg_bytes`` and ``snapshot_chunk_bytes``, the runtime's
``max_entry_bytes`` and the proposal batch size) and the frame size that follows; the proposal
batch size itself. Must not live here: enforcing the limits (the runtime refuses oversized
proposals, the transport refuses oversized frames), Salt.

Why: a receiver cannot authenticate a frame without an AEAD pass over all of it, so the frame
size cap is the price an attacker who can reach the Raft port (and holds no secret) makes a
node pay per forged frame. The cap is therefore set to what a legitimate node can send, not
to a round number (docs/security.md, "Network attacker").

The bound, message by message (``o`` = per-entry encoding overhead, :data:`ENTRY_OVERHEAD`):

- APPEND with several entries: the core stops adding entries once their ``len + 16`` sum
  passes ``max_msg_bytes`` (``core.log.RaftLog.slice``), so they encode to at most
  ``max_msg_bytes * o / 16``; APPEND with one entry: one entry (``max_entry_bytes`` of payload
  plus the runtime's envelope);
- PROPOSE (a follower forwarding): the driver's batches stop before their encoded size passes
  :data:`PROPOSAL_BATCH_BYTES`, or hold a single entry;
- SNAPSHOT: one ``snapshot_chunk_bytes`` chunk plus the snapshot's membership;
- everything else (votes, heartbeats, APP requests and replies) is smaller than these;

plus the message's other fields (ids, indexes, a context of at most ``MAX_CONTEXT_LEN``).
"""

from __future__ import annotations

from saltext_raft.core.nodeid import MAX_NODE_ID_LEN
from saltext_raft.runtime import envelope
from saltext_raft.transport.codec import MAX_ADDRESS_LEN
from saltext_raft.transport.codec import MAX_CONTEXT_LEN
from saltext_raft.transport.codec import MAX_MEMBERS
from saltext_raft.transport.crypto import frame_bytes_for

__all__ = [
    "DEFAULT_MAX_ENTRY_BYTES",
    "ENTRY_OVERHEAD",
    "PROPOSAL_BATCH_BYTES",
    "max_frame_bytes",
    "max_message_bytes",
]

#: Default largest payload of one proposal (one log entry), bytes. A write larger than this is
#: refused with a clear error when proposed; the replicated cache closes a batch before it
#: would pass it.
DEFAULT_MAX_ENTRY_BYTES = 4 << 20
#: Encoded bytes one batch of forwarded or locally proposed entries stops before (a single
#: larger entry still goes alone).
PROPOSAL_BATCH_BYTES = 1 << 20
#: msgpack overhead of one entry in a message: array header (1), term and index (9 each),
#: kind (1), bin header (5).
ENTRY_OVERHEAD = 25
#: The runtime's envelope around a proposal (version, id length, id, boot nonce, sequence).
ENVELOPE_MAX = 2 + MAX_NODE_ID_LEN + envelope.NONCE_BYTES + envelope.SEQ_BYTES
#: A snapshot chunk's membership: voters, learners, demoted (ids) and addresses (id, address),
#: each string with its msgpack header (3), for the most members the codec accepts.
MEMBERSHIP_MAX = MAX_MEMBERS * (4 * (MAX_NODE_ID_LEN + 3) + MAX_ADDRESS_LEN + 3 + 1) + 64
#: Every other field of a message: version, type, two ids, six integers, the context.
FIELDS_MAX = 64 + 2 * (MAX_NODE_ID_LEN + 3) + 6 * 9 + MAX_CONTEXT_LEN + 5


def max_message_bytes(
    *,
    max_msg_bytes: int,
    snapshot_chunk_bytes: int,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> int:
    """The largest encoded message a node sends with these settings (see the module doc)."""
    one_entry = max_entry_bytes + ENVELOPE_MAX + ENTRY_OVERHEAD
    many_entries = -(-max_msg_bytes * ENTRY_OVERHEAD // 16)
    snapshot = snapshot_chunk_bytes + MEMBERSHIP_MAX
    return max(one_entry, many_entries, PROPOSAL_BATCH_BYTES, snapshot) + FIELDS_MAX


def max_frame_bytes(core_config, runtime_config) -> int:
    """The frame size cap for a node running with ``core_config`` and ``runtime_config``: the
    largest message it (or a peer with the same settings) sends, sealed."""
    return frame_bytes_for(
        max_message_bytes(
            max_msg_bytes=core_config.max_msg_bytes,
            snapshot_chunk_bytes=core_config.snapshot_chunk_bytes,
            max_entry_bytes=runtime_config.max_entry_bytes,
        )
    )
