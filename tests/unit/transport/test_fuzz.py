"""Fuzzing the frame decoder (open + decode): only CodecError escapes, and nothing that was not
validly sealed for this receiver is ever accepted.

Default: a few thousand examples per test. ``SALTEXT_RAFT_FUZZ_EXAMPLES=100000`` (the nox fuzz
session) raises it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from saltext_raft.core.types import Entry
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.transport.codec import CodecError
from saltext_raft.transport.codec import decode_message
from saltext_raft.transport.codec import encode_message
from saltext_raft.transport.crypto import FrameCrypto
from tests.unit.transport.strategies import messages

EXAMPLES = int(os.environ.get("SALTEXT_RAFT_FUZZ_EXAMPLES") or 2000)

# pytest-timeout's default (300 s per test) is too short at 100,000 examples on a small shared
# machine (one test took 310 s there); allow ~20 ms per example on top of it.
pytestmark = pytest.mark.timeout(300 + EXAMPLES // 50)
SECRET = b"fuzz-secret-fuzz-secret-fuzz-sec"
PEERS = frozenset({"a", "b"})

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Valid messages to mutate: fixed, so that hypothesis spends its budget on the mutations.
_META = SnapshotMeta(40, 3, Membership(frozenset({"a", "b"}), frozenset({"c"}), (("a", "h:1"),)))
POOL = [
    Message(MsgType.HEARTBEAT, "b", "a", 3, commit=7, context=b"r1"),
    Message(MsgType.APPEND, "b", "a", 3, log_term=2, index=9, commit=8, entries=()),
    Message(
        MsgType.APPEND,
        "b",
        "a",
        3,
        log_term=3,
        index=9,
        commit=9,
        entries=tuple(Entry(3, 10 + i, i % 2, bytes(range(i * 7 % 50))) for i in range(5)),
    ),
    Message(MsgType.APPEND_RESP, "b", "a", 3, index=12, reject=True, hint_index=4, hint_term=2),
    Message(MsgType.VOTE, "b", "a", 4, log_term=3, index=12, context=b"transfer"),
    Message(MsgType.PRE_VOTE_RESP, "b", "a", 5, reject=True),
    Message(
        MsgType.SNAPSHOT, "b", "a", 3, snapshot=SnapshotChunk(_META, 4096, b"s" * 100, True, 4196)
    ),
    Message(MsgType.PROPOSE, "b", "a", 0, entries=(Entry(0, 0, 0, b"proposal"),)),
    Message(MsgType.APP, "b", "a", 0, context=b"\x82\xa2op\xa4join\xa4node\xa1a"),
    Message(
        MsgType.READ_INDEX_RESP, "b", "a", (1 << 63) - 1, index=(1 << 63) - 1, context=b"\x00" * 16
    ),
]


def decode_frame(receiver: FrameCrypto, frame: bytes):
    """The receive path of ZmqTransport minus the socket."""
    sender, plaintext = receiver.open(frame, PEERS)
    return sender, decode_message(plaintext)


@fuzz
@given(st.binary(max_size=512))
def test_random_bytes_are_rejected_with_codec_error(data):
    receiver = FrameCrypto(SECRET, "cl", "b")
    try:
        decode_frame(receiver, data)
    except CodecError:
        return
    raise AssertionError("random bytes were accepted as a frame")


@fuzz
@given(
    st.sampled_from(POOL),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
    st.integers(0, 3),
    st.binary(max_size=8),
)
def test_mutated_valid_frames_are_rejected_with_codec_error(msg, flips, truncate, suffix):
    sender = FrameCrypto(SECRET, "cl", "a")
    receiver = FrameCrypto(SECRET, "cl", "b")
    frame = sender.seal("b", encode_message(msg))
    mutated = bytearray(frame)
    for pos, xor in flips:
        mutated[pos % len(mutated)] ^= xor
    if truncate:
        del mutated[-truncate:]
    mutated = bytes(mutated) + suffix
    if mutated == frame:
        return
    try:
        decode_frame(receiver, mutated)
    except CodecError:
        pass
    else:
        raise AssertionError("a mutated frame was accepted")
    # the untouched frame still opens afterwards: rejected input left no state behind
    assert decode_frame(receiver, frame) == ("a", msg)


@settings(max_examples=max(200, EXAMPLES // 10), deadline=None)
@given(messages(to=st.just("b"), frm=st.just("a")))
def test_arbitrary_valid_messages_survive_seal_and_open(msg):
    sender = FrameCrypto(SECRET, "cl", "a")
    receiver = FrameCrypto(SECRET, "cl", "b")
    assert decode_frame(receiver, sender.seal("b", encode_message(msg))) == ("a", msg)


@fuzz
@given(st.binary(max_size=300))
def test_authenticated_garbage_plaintext_raises_codec_error_only(plaintext):
    # A peer holding the key but sending garbage (a bug, or version skew) must not crash us.
    sender = FrameCrypto(SECRET, "cl", "a")
    receiver = FrameCrypto(SECRET, "cl", "b")
    try:
        decode_frame(receiver, sender.seal("b", plaintext))
    except CodecError:
        pass


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
# Cheap near-miss field values: scalars of every msgpack type, or short arrays of them (entries,
# snapshot chunks and memberships are arrays of arrays).
_small = st.integers(0, 20) | st.sampled_from([-1, 1 << 63, True, False, None, b"", "", 1.0])
_field = _small | _leaf | st.lists(_small | st.lists(_small | _leaf, max_size=5), max_size=5)


@fuzz
@given(st.lists(_field, min_size=13, max_size=13), st.sampled_from([1, 1, 1, 2, 0]))
def test_message_shaped_trees_are_either_valid_messages_or_codec_errors(fields, version):
    # Near-miss envelopes exercise every field check behind an authenticated frame.
    import msgpack  # pylint: disable=import-outside-toplevel

    data = msgpack.packb([version, *fields], use_bin_type=True)
    try:
        msg = decode_message(data)
    except CodecError:
        return
    assert decode_message(encode_message(msg)) == msg
