"""The on-disk shape of the Raft log: checksummed records, how they compose and how they fold.

Lives here, pure (no Salt, no I/O): the ``Op`` a record carries, its encoding (magic, CRC32,
msgpack body), composing consecutive ops into one sealed segment, and folding the live chain of
ops back into hard state + snapshot reference + entries. ``storage/store.py`` decides which
keys to write and read; this module decides what is in them.

Theory of operation
-------------------
The log is a write-ahead sequence of *ops*, one per ``save()``/``compact()``, numbered by a
sequence number ``seq``. An op says, in this order: "move the snapshot base to X (keeping the
entries after X, or dropping them all)", "replace everything from index ``first`` on with these
entries", "the hard state is now H", and, for ops that carry a snapshot, "items older than
``low`` are garbage". Truncation on conflict is an op whose ``first`` is at or below the last
index: it costs the same as an append, and since the op is one atomically written, checksummed
key, a crash leaves either the old log or the new one.

Ops ``a..b`` without snapshot events compose into a single op (``compose``), stored as one
*segment* key covering ``a..b``; that keeps the number of keys a reopen must read small. The
loader prefers the widest intact item at each position, so a crash between writing a segment
and deleting the records it covers loses nothing.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from dataclasses import field
from itertools import repeat

import msgpack

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta

RECORD_MAGIC = b"SRL1"  # saltext-raft log item, format 1
SNAPSHOT_MAGIC = b"SRS1"  # saltext-raft snapshot, format 1
_HEADER = struct.Struct(">4sI")  # magic, CRC32 of the body


class DamagedRecord(ValueError):
    """A blob failed its checksum, magic or shape check."""


@dataclass(frozen=True, slots=True)
class SnapEvent:
    """The snapshot base moved to ``index``; ``keep`` says whether later entries survived."""

    index: int
    term: int
    keep: bool
    key: str  # where the snapshot's meta and data live


@dataclass(slots=True)
class Op:
    """The effect of one save/compact (a record) or of a run of them (a segment)."""

    a: int  # first seq covered
    b: int  # last seq covered
    first: int = 0  # index of the first entry; 0 when there are no entries
    # the entries, column by column (cheap to decode, splice and turn into Entry tuples)
    terms: list = field(default_factory=list)
    kinds: bytearray = field(default_factory=bytearray)
    datas: list = field(default_factory=list)
    hard_state: HardState | None = None
    snap: SnapEvent | None = None
    low: int = 0  # items whose seqs all lie below ``low`` are garbage (after a snapshot)

    @property
    def last_index(self) -> int:
        """Highest entry index this op writes (0 if none): decides when it can be deleted."""
        return self.first + len(self.datas) - 1 if self.datas else 0

    @property
    def count(self) -> int:
        return len(self.datas)

    def cut(self, n: int) -> None:
        """Keep the first ``n`` entries."""
        del self.terms[n:], self.kinds[n:], self.datas[n:]

    def extend(self, other: Op, skip: int = 0) -> None:
        self.terms.extend(other.terms[skip:])
        self.kinds.extend(other.kinds[skip:])
        self.datas.extend(other.datas[skip:])


def _rle(terms: list) -> list:
    """Terms change rarely: store them as [term, count, term, count, ...]."""
    out: list = []
    for term in terms:
        if out and out[-2] == term:
            out[-1] += 1
        else:
            out += [term, 1]
    return out


def _unrle(pairs: list) -> list:
    out: list = []
    for i in range(0, len(pairs), 2):
        out.extend(repeat(pairs[i], pairs[i + 1]))
    return out


def _checked(magic: bytes, body: bytes) -> bytes:
    return _HEADER.pack(magic, zlib.crc32(body)) + body


def _unchecked(magic: bytes, blob) -> bytes:
    if not isinstance(blob, (bytes, bytearray)):
        raise DamagedRecord(f"not a saltext-raft blob (a {type(blob).__name__})")
    if len(blob) < _HEADER.size:
        raise DamagedRecord(f"truncated: {len(blob)} bytes")
    found, crc = _HEADER.unpack_from(blob)
    if found != magic:
        raise DamagedRecord(f"bad magic {found!r}, expected {magic!r}")
    body = bytes(blob[_HEADER.size :])
    if zlib.crc32(body) != crc:
        raise DamagedRecord("checksum mismatch (torn or corrupted write)")
    return body


def encode_op(op: Op) -> bytes:
    hs = list(op.hard_state) if op.hard_state is not None else None
    snap = [op.snap.index, op.snap.term, op.snap.keep, op.snap.key] if op.snap else None
    entries = [_rle(op.terms), bytes(op.kinds), op.datas]
    body = msgpack.packb([op.a, op.b, op.first, entries, hs, snap, op.low], use_bin_type=True)
    return _checked(RECORD_MAGIC, body)


def entry_columns(entries) -> tuple[list, bytearray, list]:
    return (
        [e.term for e in entries],
        bytearray(int(e.kind) for e in entries),
        [bytes(e.data) for e in entries],
    )


def decode_op(blob) -> Op:
    body = _unchecked(RECORD_MAGIC, blob)
    try:
        a, b, first, entries, hs, snap, low = msgpack.unpackb(body, raw=False, use_list=True)
        terms, kinds, datas = entries
        terms = _unrle(terms)
        if not len(terms) == len(kinds) == len(datas):
            raise ValueError("entry columns differ in length")
        op = Op(
            a=a,
            b=b,
            first=first,
            terms=terms,
            kinds=bytearray(kinds),
            datas=datas,
            hard_state=HardState(hs[0], hs[1], hs[2]) if hs is not None else None,
            snap=SnapEvent(snap[0], snap[1], bool(snap[2]), snap[3]) if snap else None,
            low=low,
        )
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise DamagedRecord(f"checksum matched but the body is malformed: {exc}") from exc
    if a > b or (datas and first < 1):
        raise DamagedRecord(f"malformed op: seqs {a}..{b}, first index {first}")
    return op


def encode_snapshot(snapshot: Snapshot) -> bytes:
    meta = snapshot.meta
    body = msgpack.packb(
        [meta.index, meta.term, meta.membership.to_dict(), bytes(snapshot.data)],
        use_bin_type=True,
    )
    return _checked(SNAPSHOT_MAGIC, body)


def decode_snapshot(blob) -> Snapshot:
    body = _unchecked(SNAPSHOT_MAGIC, blob)
    try:
        index, term, membership, data = msgpack.unpackb(body, raw=False)
        return Snapshot(SnapshotMeta(index, term, Membership.from_dict(membership)), data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DamagedRecord(f"checksum matched but the snapshot is malformed: {exc}") from exc


def compose(ops: list[Op]) -> Op:
    """Fold consecutive ops WITHOUT snapshot events into one op with the same effect.

    Replacing from ``f1`` with ``E1`` then from ``f2`` with ``E2`` is: from ``f2`` with ``E2``
    when ``f2 <= f1``, else from ``f1`` with ``E1[:f2 - f1] + E2`` (``f2`` never lies past the
    end of ``E1``: entries are always contiguous with the log).
    """
    out = Op(a=ops[0].a, b=ops[-1].b)
    for op in ops:
        if op.snap is not None:
            raise ValueError("ops with snapshot events are never sealed")
        if op.hard_state is not None:
            out.hard_state = op.hard_state
        if not op.count:
            continue
        if not out.count or op.first <= out.first:
            out.first = op.first
            out.cut(0)
        else:
            keep = op.first - out.first
            if keep > out.count:
                raise ValueError(f"op at seq {op.a} leaves a gap before index {op.first}")
            out.cut(keep)
        out.extend(op)
    return out


class FoldError(ValueError):
    """The live ops do not fit together (a gap or a term going backwards)."""

    def __init__(self, seq: int, problem: str):
        super().__init__(problem)
        self.seq = seq


@dataclass
class Folded:
    hard_state: HardState
    snap: SnapEvent | None
    entries: list[Entry]


def fold(ops: list[Op]) -> Folded:
    """Rebuild the state from the live chain of ops, in seq order.

    The fold starts at the base of the latest snapshot event: everything at or below it is
    covered by that snapshot, and older items may already have been deleted.
    """
    snap = None
    hard_state = HardState()
    for op in ops:
        if op.snap is not None:
            snap = op.snap
        if op.hard_state is not None:
            hard_state = op.hard_state
    base = snap.index if snap else 0
    log = Op(0, 0)  # columns for indices base+1 ...
    for op in ops:
        if op.snap is not None and not op.snap.keep:
            log.cut(0)
        if not op.count:
            continue
        last = base + log.count
        if op.first > last + 1:
            raise FoldError(op.a, f"entries start at index {op.first} but the log ends at {last}")
        if op.first <= base:
            log.cut(0)
            log.extend(op, skip=base + 1 - op.first)
        else:
            log.cut(op.first - base - 1)
            log.extend(op)
    # tuple.__new__ skips Entry's Python-level __new__: a third of the cost of a 100k reopen
    out = list(
        map(
            tuple.__new__,
            repeat(Entry),
            zip(
                log.terms, range(base + 1, base + 1 + log.count), log.kinds, log.datas, strict=True
            ),
        )
    )
    prev = snap.term if snap else 0
    for e in out:
        if e.term < prev:
            raise FoldError(ops[-1].a if ops else 0, f"term goes backwards at index {e.index}")
        prev = e.term
    return Folded(hard_state, snap, out)
