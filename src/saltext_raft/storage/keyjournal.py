"""The record-per-key log scheme: one key per ``save()``, sealed into segment keys.

Lives here: the names of the log bank's keys (``r<seq>`` records, ``g<a>_<b>`` sealed
segments) and :class:`KeyJournal`, which loads the live chain of them (picking the widest
readable key, repairing a torn tail, naming the key at fault otherwise), appends records,
seals them and deletes what a snapshot made garbage. Used by ``store.CacheStore`` on every
driver but localfs (which gets segment files: ``segments``). Must not live here: the other
banks and the snapshot keys (``cache``), how a key is written durably (``durable``), the
record encoding and the fold (``records``). docs/storage.md has the design.

Key names end in a digit on purpose: Salt 3007's localfs ``list`` strips a trailing ``.p``
with ``str.rstrip`` and would mangle keys ending in "p" or ".".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from saltext_raft.storage import records
from saltext_raft.storage.base import StorageCorruption
from saltext_raft.storage.durable import DurableKeys
from saltext_raft.storage.records import DamagedRecord
from saltext_raft.storage.records import Op
from saltext_raft.storage.records import SnapEvent

log = logging.getLogger(__name__)

_RECORD_RE = re.compile(r"^r(\d{16})$")
_SEGMENT_RE = re.compile(r"^g(\d{16})_(\d{16})$")


def record_key(seq: int) -> str:
    return f"r{seq:016d}"


def segment_key(a: int, b: int) -> str:
    return f"g{a:016d}_{b:016d}"


@dataclass(slots=True)
class _Item:
    """One live key of the log bank, in seq order."""

    key: str
    a: int
    b: int
    last_index: int  # highest entry index it writes, 0 if none


class KeyJournal:
    """The record-per-key scheme (any driver): one key per record, sealed into segment keys.

    Owns the list of live keys of the log bank ``bank`` and the records not yet sealed; every
    read and write goes through ``keys`` (:class:`~saltext_raft.storage.durable.DurableKeys`),
    so the driver's durability layer applies. ``seal_records``: how many records make a
    segment (at least 2).
    """

    def __init__(self, keys: DurableKeys, bank: str, seal_records: int):
        self.io = keys
        self.bank = bank
        self.seal_records = max(2, seal_records)
        self.items: list[_Item] = []
        self.pending: list[Op] = []  # trailing records not yet sealed (no snapshot events)
        self._found: dict[tuple[int, int], str] = {}
        self._garbage: list[str] = []

    def keys(self) -> list[str]:
        """Names in the log bank that belong to this scheme."""
        return [n for n in self.io.list(self.bank) if _RECORD_RE.match(n) or _SEGMENT_RE.match(n)]

    def load(self) -> list[Op]:
        found: dict[tuple[int, int], str] = {}
        for name in self.io.list(self.bank):
            m = _RECORD_RE.match(name)
            if m:
                seq = int(m.group(1))
                found[(seq, seq)] = name
                continue
            m = _SEGMENT_RE.match(name)
            if m:
                found[(int(m.group(1)), int(m.group(2)))] = name
                continue
            if not name.startswith("tmp"):
                log.warning("raft storage: ignoring unknown key %s/%s", self.bank, name)
        self._found = found
        ops, self._garbage = self._read_chain(found)
        self.items = [_Item(found[(o.a, o.b)], o.a, o.b, o.last_index) for o in ops]
        return ops

    def locate(self, seq: int) -> str:
        return next((k for (a, b), k in self._found.items() if a <= seq <= b), "?")

    def loaded(self, ops: list[Op]) -> None:
        self.pending = []
        for op in reversed(ops):
            if op.a != op.b or op.snap is not None:
                break
            self.pending.insert(0, op)
        for key in self._garbage:
            self.io.delete(self.bank, key)
        self._garbage = []

    def remove_all(self) -> None:
        for key in self.keys():
            self.io.delete(self.bank, key)

    def _fetch_op(self, key: str) -> Op:
        try:
            blob = self.io.fetch(self.bank, key)
        except Exception as exc:  # pylint: disable=broad-except
            # localfs raises from msgpack when a file is torn; other drivers on I/O errors
            raise DamagedRecord(f"unreadable: {exc}") from exc
        return records.decode_op(blob)

    def _corrupt(self, key: str, problem: str) -> StorageCorruption:
        return StorageCorruption(self.bank, key, problem)

    def _read_chain(self, found: dict[tuple[int, int], str]) -> tuple[list[Op], list[str]]:
        """Pick and decode the live chain of items; return it and the keys that are garbage."""
        if not found:
            return [], []
        decoded: dict[tuple[int, int], Op] = {}
        damaged: dict[tuple[int, int], str] = {}
        covered: set[tuple[int, int]] = set()
        # Widest first: records a sealed segment covers need not be read at all.
        for span in sorted(found, key=lambda s: (s[0] - s[1], s[0])):
            if any(c[0] <= span[0] and span[1] <= c[1] for c in decoded):
                covered.add(span)
                continue
            try:
                op = self._fetch_op(found[span])
            except DamagedRecord as exc:
                damaged[span] = str(exc)
                continue
            if (op.a, op.b) != span:
                damaged[span] = f"holds seqs {op.a}..{op.b}, not what its name says"
                continue
            decoded[span] = op
        low = max((op.low for op in decoded.values()), default=0)
        top = max(b for _, b in found)
        garbage = [found[s] for s in found if s[1] < low or s in covered]
        starts: dict[int, list[tuple[int, int]]] = {}
        for span in found:
            if span[1] >= low and span not in covered:
                starts.setdefault(span[0], []).append(span)
        if not starts:
            return [], garbage
        pos = low if low else 1
        if low == 0 and min(starts) != 1:
            raise self._corrupt(
                found[min(found)],
                f"the log starts at seq {min(starts)} but no snapshot record says the items "
                "before it were compacted (data lost by the cache backend?)",
            )
        chain: list[Op] = []
        while pos <= top:
            spans = sorted(starts.get(pos, ()), key=lambda s: -s[1])
            if not spans:
                later = min((a for a in starts if a > pos), default=None)
                key = found[starts[later][0]] if later is not None else "?"
                raise self._corrupt(key, f"record seq {pos} is missing before this key")
            good = next((s for s in spans if s in decoded), None)
            if good is None:
                span = spans[0]
                if span[0] == span[1] == top and len(spans) == 1:
                    # The last record and damaged: a save() that never returned (torn,
                    # unsynced tail). It was never reported persisted: drop it.
                    log.warning(
                        "raft storage: discarding torn tail record %s/%s (%s)",
                        self.bank,
                        found[span],
                        damaged[span],
                    )
                    garbage.append(found[span])
                    break
                raise self._corrupt(found[span], damaged[span])
            garbage.extend(found[s] for s in spans if s != good)
            chain.append(decoded[good])
            pos = good[1] + 1
        on_chain = {(op.a, op.b) for op in chain}
        for spans in starts.values():
            for span in spans:
                if span in on_chain or found[span] in garbage:
                    continue
                if any(c[0] <= span[0] and span[1] <= c[1] for c in on_chain):
                    garbage.append(found[span])
                elif span[0] > top or not chain or span[0] > chain[-1].b:
                    continue  # beyond a discarded torn tail: cannot happen, left alone
                else:
                    raise self._corrupt(found[span], "overlaps the record chain only partly")
        return chain, garbage

    def append(self, op: Op) -> None:
        self.io.put(self.bank, record_key(op.a), records.encode_op(op))
        self.items.append(_Item(record_key(op.a), op.a, op.b, op.last_index))

    def appended(self, op: Op) -> None:
        """The store's mirror is up to date: seal if enough records piled up."""
        if op.snap is None:
            self.pending.append(op)
            if len(self.pending) >= self.seal_records:
                self._seal()

    def low_water(self, event: SnapEvent, seq: int) -> int:
        """The first seq still needed once ``event`` is durable (a prefix of items goes)."""
        for item in self.items:
            if event.keep and item.last_index > event.index:
                return item.a
        return seq

    def compacted(self, low: int) -> None:
        keep = [it for it in self.items if it.b >= low]
        for it in self.items:
            if it.b < low:
                self.io.delete(self.bank, it.key)
        self.items = keep
        self.pending = []

    def _seal(self) -> None:
        """Write the pending records as one segment, then delete them."""
        pending, self.pending = self.pending, []
        seg = records.compose(pending)
        key = segment_key(seg.a, seg.b)
        self.io.put(self.bank, key, records.encode_op(seg))
        n = len(pending)
        self.items[-n:] = [_Item(key, seg.a, seg.b, seg.last_index)]
        for op in pending:
            self.io.delete(self.bank, record_key(op.a))

    def close(self) -> None:
        pass
