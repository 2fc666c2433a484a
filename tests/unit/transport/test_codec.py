"""Codec: round trips of every core type it carries, and strict rejection of anything else."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.transport import codec
from saltext_raft.transport.codec import CodecError
from tests.unit.transport.strategies import messages
from tests.unit.transport.strategies import snapshot_metas


@given(messages())
def test_every_message_round_trips(msg):
    decoded = codec.decode_message(codec.encode_message(msg))
    assert decoded == msg
    assert type(decoded.type) is MsgType
    assert all(type(e) is Entry for e in decoded.entries)


def test_entries_given_as_a_list_decode_as_a_tuple():
    msg = Message(MsgType.APPEND, "b", "a", 2, entries=[Entry(2, 5, EntryKind.CONF, b"c")])
    decoded = codec.decode_message(codec.encode_message(msg))
    assert decoded.entries == (Entry(2, 5, EntryKind.CONF, b"c"),)
    assert decoded.entries[0].kind is EntryKind.CONF


def test_snapshot_chunk_with_membership_round_trips():
    meta = SnapshotMeta(
        9,
        3,
        Membership(frozenset({"a", "b"}), frozenset({"c"}), (("a", "10.0.0.1:4606"), ("c", "h:1"))),
    )
    msg = Message(
        MsgType.SNAPSHOT, "c", "a", 3, snapshot=SnapshotChunk(meta, 1024, b"xyz", False, 4096)
    )
    assert codec.decode_message(codec.encode_message(msg)) == msg


@given(snapshot_metas)
def test_snapshot_meta_round_trips_in_a_snapshot_chunk(meta):
    msg = Message(MsgType.SNAPSHOT, "b", "a", 1, snapshot=SnapshotChunk(meta, 0, b"", True, 0))
    assert codec.decode_message(codec.encode_message(msg)).snapshot.meta == meta


# --- strict rejection --------------------------------------------------------------------------

GOOD = [1, 1, "b", "a", 3, 2, 10, [[3, 11, 0, b"x"]], 9, False, 0, 0, b"", None]


def _fields(**changes):
    names = [
        "v",
        "type",
        "to",
        "frm",
        "term",
        "log_term",
        "index",
        "entries",
        "commit",
        "reject",
        "hint_index",
        "hint_term",
        "context",
        "snapshot",
    ]
    fields = list(GOOD)
    for name, value in changes.items():
        fields[names.index(name)] = value
    return msgpack.packb(fields, use_bin_type=True)


def test_the_reference_message_is_valid():
    assert codec.decode_message(_fields()).entries == (Entry(3, 11, 0, b"x"),)


@pytest.mark.parametrize(
    "changes",
    [
        {"type": 0},
        {"type": 99},
        {"type": True},
        {"type": "1"},
        {"term": -1},
        {"term": 1 << 63},
        {"term": True},
        {"term": 1.0},
        {"index": None},
        {"commit": "9"},
        {"to": b"b"},
        {"frm": 7},
        {"to": "x" * 256},
        {"reject": 0},
        {"context": "text"},
        {"context": b"x" * (codec.MAX_CONTEXT_LEN + 1)},
        {"entries": [[3, 11, 0]]},
        {"entries": [[3, 11, 0, "text"]]},
        {"entries": [[3, 11, 7, b""]]},
        {"entries": [[3, -1, 0, b""]]},
        {"entries": [[3, 11, False, b""]]},
        {"entries": {"a": 1}},
        {"entries": b""},
        {"entries": 0},
        {"type": int(MsgType.HEARTBEAT)},  # HEARTBEAT cannot carry entries
        {"snapshot": [[1, 1, [], [], []], 0, b"", True, 0]},  # APPEND cannot carry a chunk
        {"type": int(MsgType.SNAPSHOT), "entries": []},  # SNAPSHOT without a chunk
    ],
    ids=repr,
)
def test_malformed_fields_are_rejected(changes):
    with pytest.raises(CodecError) as info:
        codec.decode_message(_fields(**changes))
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "chunk",
    [
        [[1, 1, ["a"], ["a"], []], 0, b"", True, 0],  # voter and learner at once
        [[1, 1, ["a", "a"], [], []], 0, b"", True, 0],  # duplicate voter
        [[1, 1, ["a"], [], [["a", "x"], ["a", "y"]]], 0, b"", True, 0],  # duplicate address
        [[1, 1, ["a"], [], [["a"]]], 0, b"", True, 0],
        [[1, 1, "a", [], []], 0, b"", True, 0],
        [[1, 1, ["a"], [], []], 0, b"", 1, 0],
        [[1, 1, ["a"], [], []], -5, b"", True, 0],
        [[1, 1, ["a"], [], []], 0, "", True, 0],
        [[1, 1, ["a"], [], []], 0, b"", True],
    ],
    ids=repr,
)
def test_malformed_snapshot_chunks_are_rejected(chunk):
    data = _fields(type=int(MsgType.SNAPSHOT), entries=[], snapshot=chunk)
    with pytest.raises(CodecError, match="malformed"):
        codec.decode_message(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used by msgpack
        b"\x91",  # truncated array
        msgpack.packb(GOOD) + b"\x00",  # trailing bytes
        msgpack.packb({"type": 1}),
        msgpack.packb([]),
        msgpack.packb(GOOD[:-1]),
        msgpack.packb([*GOOD, None]),
        msgpack.packb(msgpack.ExtType(5, b"abc")),
        msgpack.packb([msgpack.ExtType(5, b"")] + GOOD[1:]),
        b"\x91" * 100_000,  # nesting deeper than msgpack's stack
        "text",
        None,
    ],
    ids=lambda d: repr(d)[:40],
)
def test_garbage_raises_codec_error_only(data):
    with pytest.raises(CodecError) as info:
        codec.decode_message(data)
    assert info.value.reason == "malformed"


def test_unknown_codec_version_is_reported_as_version():
    with pytest.raises(CodecError) as info:
        codec.decode_message(_fields(v=2))
    assert info.value.reason == "version"


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(CodecError) as info:
        codec.decode_message(_fields(), max_bytes=10)
    assert info.value.reason == "oversize"


def test_unencodable_message_raises_codec_error():
    with pytest.raises(CodecError) as info:
        codec.encode_message(Message(MsgType.APPEND, "b", "a", 1, context=object()))
    assert info.value.reason == "unencodable"


# --- application payloads ------------------------------------------------------------------------

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(payloads)
def test_payloads_round_trip(obj):
    assert codec.decode_payload(codec.encode_payload(obj)) == obj


@pytest.mark.parametrize(
    "data, reason",
    [
        (msgpack.packb({1.5: "float key"}), "malformed"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "malformed"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "malformed"),
        (msgpack.packb([[[[1]]]]), "malformed"),  # deeper than max_depth=3 below
        (b"\x92\x01", "malformed"),
        (b"x" * 65, "oversize"),
    ],
)
def test_payload_decoding_is_strict(data, reason):
    with pytest.raises(CodecError) as info:
        codec.decode_payload(data, max_bytes=64, max_depth=3)
    assert info.value.reason == reason


def test_payload_encoding_refuses_unknown_types_and_oversize():
    with pytest.raises(CodecError, match="unencodable"):
        codec.encode_payload({"x": object()})
    with pytest.raises(CodecError, match="oversize"):
        codec.encode_payload(b"x" * 100, max_bytes=50)


def test_app_messages_may_carry_a_large_runtime_payload_in_context():
    payload = codec.encode_payload({"op": "join", "blob": b"x" * (codec.MAX_CONTEXT_LEN + 10)})
    msg = Message(MsgType.APP, "b", "a", 0, context=payload)
    assert codec.decode_message(codec.encode_message(msg)) == msg
