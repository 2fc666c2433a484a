"""The record format and the algebra the store relies on: compose and fold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.storage import records
from saltext_raft.storage.records import DamagedRecord
from saltext_raft.storage.records import Op
from saltext_raft.storage.records import SnapEvent


def test_op_round_trips_and_any_flipped_bit_is_detected():
    op = Op(
        a=3,
        b=9,
        first=5,
        terms=[1, 2],
        kinds=bytearray([0, 1]),
        datas=[b"x", b"conf"],
        hard_state=HardState(2, "m1", 5),
        snap=SnapEvent(4, 1, True, "s0000000000000003"),
        low=2,
    )
    blob = records.encode_op(op)
    assert records.decode_op(blob) == op
    for pos in range(len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x40
        with pytest.raises(DamagedRecord):
            records.decode_op(bytes(damaged))
    for cut in range(len(blob)):
        with pytest.raises(DamagedRecord):
            records.decode_op(blob[:cut])
    with pytest.raises(DamagedRecord):
        records.decode_op({})  # what a cache driver returns for a missing key


def test_snapshot_round_trips():
    snap = Snapshot(SnapshotMeta(7, 2, Membership(frozenset({"a"}), frozenset({"b"}))), b"data")
    assert records.decode_snapshot(records.encode_snapshot(snap)) == snap
    with pytest.raises(DamagedRecord):
        records.decode_snapshot(records.encode_snapshot(snap)[:-1])


@st.composite
def op_chains(draw):
    """Valid ops as a store writes them: each starts at most one past the log's end."""
    ops, last, term = [], 0, 1
    for seq in range(1, draw(st.integers(1, 12)) + 1):
        first = draw(st.integers(max(1, last - 5), last + 1))
        term += draw(st.integers(0, 1))
        n = draw(st.integers(0, 4))
        datas = [b"%d.%d" % (seq, i) for i in range(n)]
        hs = HardState(term, "", 0) if draw(st.booleans()) else None
        ops.append(Op(seq, seq, first if n else 0, [term] * n, bytearray(n), datas, hard_state=hs))
        if n:
            last = first + n - 1
    return ops


@given(op_chains(), st.data())
def test_sealing_any_run_of_records_changes_nothing(ops, data):
    """A segment must have exactly the effect of the records it replaces."""
    i = data.draw(st.integers(0, len(ops) - 1))
    j = data.draw(st.integers(i + 1, len(ops)))
    sealed = ops[:i] + [records.compose(ops[i:j])] + ops[j:]
    assert records.fold(sealed) == records.fold(ops)


def test_fold_reports_a_gap_with_the_seq_that_exposes_it():
    ops = [Op(1, 1, 1, [1] * 3, bytearray(3), [b""] * 3), Op(2, 2, 6, [1], bytearray(1), [b""])]
    with pytest.raises(records.FoldError) as err:
        records.fold(ops)
    assert err.value.seq == 2


def test_fold_starts_at_the_latest_snapshot_even_if_older_items_are_gone():
    ops = [
        Op(5, 5, 8, [1, 1, 2], bytearray(3), [b"8", b"9", b"10"]),
        Op(6, 6, hard_state=HardState(2, "", 9), snap=SnapEvent(9, 1, True, "s6")),
    ]
    folded = records.fold(ops)
    assert [(e.index, e.data) for e in folded.entries] == [(10, b"10")]
    assert folded.hard_state.commit == 9
