"""runtime.limits: the frame size cap covers every message a node really sends, and no more
than that by much (M1 of issue 18: the cap is what a forged frame can cost a receiver)."""

from __future__ import annotations

import pytest

from saltext_raft.core import Config
from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.core import Membership
from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core import SnapshotChunk
from saltext_raft.core import SnapshotMeta
from saltext_raft.core.log import RaftLog
from saltext_raft.core.nodeid import MAX_NODE_ID_LEN
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime import envelope
from saltext_raft.runtime.limits import PROPOSAL_BATCH_BYTES
from saltext_raft.runtime.limits import max_frame_bytes
from saltext_raft.transport.codec import MAX_ADDRESS_LEN
from saltext_raft.transport.codec import MAX_CONTEXT_LEN
from saltext_raft.transport.codec import encode_message
from saltext_raft.transport.crypto import FrameCrypto

SECRET = b"limits-test-secret-limits-test-s"
LONG = "n" * MAX_NODE_ID_LEN


def sealed(msg: Message) -> int:
    return len(FrameCrypto(SECRET, "c" * 255, msg.frm).seal(msg.to, encode_message(msg)))


def largest_entry(rt: RuntimeConfig) -> bytes:
    pfx = envelope.prefix(LONG, envelope.new_nonce())
    return envelope.wrap(pfx, 2**63, b"x" * rt.max_entry_bytes)


@pytest.mark.parametrize(
    "core_kw,rt_kw",
    [({}, {}), ({"max_msg_bytes": 64 << 10, "snapshot_chunk_bytes": 4 << 20}, {})],
)
def test_the_cap_covers_the_largest_message_of_each_kind(core_kw, rt_kw):
    core, rt = Config(LONG, **core_kw), RuntimeConfig(**rt_kw)
    cap = max_frame_bytes(core, rt)
    big = 2**63 - 1
    # APPEND with one entry of the largest proposal
    one = Message(
        MsgType.APPEND,
        LONG,
        LONG,
        big,
        log_term=big,
        index=big,
        commit=big,
        entries=(Entry(big, big, EntryKind.NORMAL, largest_entry(rt)),),
    )
    # APPEND with as many empty entries as the core's byte accounting lets through
    many = tuple(Entry(big, big, EntryKind.NORMAL, b"") for _ in range(core.max_msg_bytes // 16))
    # PROPOSE with a full batch of small entries, as the driver builds it
    small = b"y" * 100
    batch = tuple(
        Entry(0, 0, EntryKind.NORMAL, small) for _ in range(PROPOSAL_BATCH_BYTES // (100 + 25))
    )
    # SNAPSHOT chunk with a large membership of long ids and addresses
    ids = [f"{i:0{MAX_NODE_ID_LEN}d}" for i in range(300)]
    members = Membership(
        voters=frozenset(ids[:150]),
        learners=frozenset(ids[150:]),
        addresses=tuple((i, "a" * MAX_ADDRESS_LEN) for i in ids),
        demoted=frozenset(ids[150:]),
    )
    chunk = SnapshotChunk(
        SnapshotMeta(big, big, members), big, b"z" * core.snapshot_chunk_bytes, True, big
    )
    for msg in (
        one,
        Message(MsgType.APPEND, LONG, LONG, big, entries=many, context=b"c" * MAX_CONTEXT_LEN),
        Message(MsgType.PROPOSE, LONG, LONG, 0, entries=batch),
        Message(MsgType.SNAPSHOT, LONG, LONG, big, snapshot=chunk),
    ):
        assert sealed(msg) <= cap, (msg.type, sealed(msg), cap)


def test_the_default_cap_is_near_the_largest_proposal_not_a_round_16_mib():
    core, rt = Config("n1"), RuntimeConfig()
    cap = max_frame_bytes(core, rt)
    assert rt.max_entry_bytes < cap < rt.max_entry_bytes + (256 << 10)


def test_the_core_never_slices_an_append_past_what_the_cap_assumes():
    """The rule leans on RaftLog.slice stopping once len + 16 per entry passes max_msg_bytes."""
    max_msg = 4096
    log = RaftLog(entries=[Entry(1, k, EntryKind.NORMAL, b"q" * 7) for k in range(1, 2001)])
    ents = log.slice(1, 2001, max_msg)
    assert 1 < len(ents) < 2000
    assert sum(len(e.data) + 16 for e in ents) <= max_msg
    # one entry larger than the budget still goes, alone
    log.append([Entry(1, 2001, EntryKind.NORMAL, b"r" * (2 * max_msg))])
    assert len(log.slice(2001, 2002, max_msg)) == 1
