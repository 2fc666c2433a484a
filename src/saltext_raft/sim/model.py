"""What a simulated master keeps: its "disk" and its state machine.

Lives here: ``Disk`` (hard state, log entries after the latest snapshot, the snapshot; written
only by the driver, survives crashes) and ``StateMachine`` (the applied entries, lost on a
crash and rebuilt from the disk snapshot on restart). Nothing here talks to the network or
decides what to do next; the simulator and the driver do.

The state machine is a record of applied payloads plus a running CRC chain over every applied
entry (index, term, kind, data). Two state machines with the same ``(applied, chain)`` applied
the same entries, so state-machine safety is an O(1) check per applied entry instead of a log
comparison. Its snapshot carries the chain and a window of the latest writes whose length
follows the chain (none in a third of them, else up to ``SNAPSHOT_WINDOW_MAX - 1`` writes), so
consecutive snapshots shrink and grow as a real state machine's do (keys deleted, values
rewritten).

A save can fail (the driver raises ``DiskFailure`` and stops the node) or be torn by a crash (the
driver writes only a prefix of the save's entries). ``truncated`` lists the entries the last
write removed without writing them back, for the check that no committed entry is ever lost.
"""

from __future__ import annotations

import bisect
import zlib

from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Snapshot


def chain_hash(prev: int, entry: Entry) -> int:
    """Fold one applied entry into the running hash of everything applied before it."""
    head = f"{entry.index}:{entry.term}:{int(entry.kind)}:".encode()
    return zlib.crc32(entry.data, zlib.crc32(head, prev))


#: A snapshot of the plain state machine keeps at most this many of the latest writes.
SNAPSHOT_WINDOW_MAX = 96


class DiskFailure(Exception):
    """A write to the simulated disk failed (the save raised, as a full or broken disk does)."""


class Disk:
    """Stable storage of one node. Entries are kept contiguous after the snapshot index."""

    __slots__ = ("hs", "snap", "entries", "conf_indices", "truncated")

    def __init__(self):
        self.hs = HardState()
        self.snap: Snapshot | None = None
        self.entries: list[Entry] = []
        #: indices of CONF entries in ``entries`` (sorted): for the pending-change checker
        self.conf_indices: list[int] = []
        #: entries the last write removed and did not write back (for the checkers)
        self.truncated: list[Entry] = []

    @property
    def offset(self) -> int:
        return self.snap.meta.index if self.snap is not None else 0

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def term_at(self, index: int) -> int | None:
        off = self.offset
        if index == off:
            return self.snap.meta.term if self.snap is not None else 0
        if off < index <= off + len(self.entries):
            return self.entries[index - off - 1].term
        return None

    def append(self, entries: list[Entry]) -> int | None:
        """Persist ``entries``, replacing any suffix from the first one not already on disk.

        Returns the term of the entry just before the first written one (for log matching),
        or None when nothing was written.
        """
        off = self.offset
        self.truncated = []
        k = 0
        while k < len(entries) and entries[k].index <= off:
            k += 1  # already covered by the snapshot
        have = self.entries
        while k < len(entries) and entries[k].index - off <= len(have):
            if have[entries[k].index - off - 1] != entries[k]:
                break
            k += 1  # already on disk, the same entry (log matching): nothing to rewrite
        if k == len(entries):
            return None
        first = entries[k].index
        if first > self.last_index + 1:
            raise ValueError(f"gap in persisted log: last {self.last_index}, next {first}")
        gone = have[first - off - 1 :]
        if gone:
            self.truncated = gone
            del have[first - off - 1 :]
        cut = bisect.bisect_left(self.conf_indices, first)
        del self.conf_indices[cut:]
        prev_term = self.term_at(first - 1)
        for e in entries[k:]:
            self.entries.append(e)
            if e.kind == EntryKind.CONF:
                self.conf_indices.append(e.index)
        return prev_term

    def install_snapshot(self, snap: Snapshot) -> None:
        """A snapshot received from the leader replaces the whole log (the core restores it)."""
        idx = snap.meta.index
        self.truncated = [e for e in self.entries if e.index > idx]
        self.snap = snap
        self.entries = []
        self.conf_indices = []

    def compact(self, snap: Snapshot) -> None:
        """A snapshot taken locally: keep the entries after its index."""
        old_off = self.offset
        idx = snap.meta.index
        self.snap = snap
        del self.entries[: max(0, idx - old_off)]
        cut = bisect.bisect_right(self.conf_indices, idx)
        del self.conf_indices[:cut]


class StateMachine:
    """Applied entries of one node: the CRC chain plus the list of applied client payloads."""

    __slots__ = ("applied", "chain", "writes")

    def __init__(self):
        self.applied = 0
        self.chain = 0
        self.writes: list[bytes] = []

    def apply(self, entry: Entry) -> None:
        self.applied = entry.index
        self.chain = chain_hash(self.chain, entry)
        if entry.kind == EntryKind.NORMAL and entry.data:
            self.writes.append(entry.data)

    def encode(self) -> bytes:
        head = f"{self.applied}:{self.chain}:".encode()
        # a third of the snapshots hold no writes (a few bytes), the others up to
        # SNAPSHOT_WINDOW_MAX - 1: a newer snapshot is often much smaller than an older one
        keep = self.chain % SNAPSHOT_WINDOW_MAX if self.chain % 3 else 0
        return head + b",".join(self.writes[len(self.writes) - keep :] if keep else ())

    @classmethod
    def decode(cls, data: bytes) -> StateMachine:
        sm = cls()
        if not data:
            return sm
        applied, chain, writes = data.split(b":", 2)
        sm.applied = int(applied)
        sm.chain = int(chain)
        sm.writes = writes.split(b",") if writes else []
        return sm
