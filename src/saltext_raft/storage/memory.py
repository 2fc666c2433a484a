"""MemoryStore: the reference ``LogStore``, in memory, for the simulator and unit tests.

No Salt, no I/O. "Durable" here means "kept in the ``MemoryDisk`` object": hand the same disk to
a new ``MemoryStore`` to model a restart. Its behaviour is the contract the cache-backed store is
tested against (``tests/unit/storage/test_contract.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Snapshot
from saltext_raft.storage.base import LogStore
from saltext_raft.storage.base import RestoredState
from saltext_raft.storage.base import StorageError
from saltext_raft.storage.base import check_commit
from saltext_raft.storage.base import check_entries


@dataclass
class MemoryDisk:
    """What survives a simulated restart."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # after the snapshot index


class MemoryStore(LogStore):
    def __init__(self, disk: MemoryDisk | None = None):
        self.disk = disk if disk is not None else MemoryDisk()
        self._closed = False

    def _check_open(self):
        if self._closed:
            raise StorageError("store is closed")

    @property
    def _base(self) -> int:
        return self.disk.snapshot.meta.index if self.disk.snapshot else 0

    def load(self) -> RestoredState:
        self._check_open()
        d = self.disk
        return RestoredState(d.hard_state, d.snapshot, list(d.entries))

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        self._check_open()
        check_entries(entries)
        d = self.disk
        if snapshot is None:
            # The common case, in place and O(batch): a copy of the whole log per save made
            # the crash tests' model quadratic once the log reached a few 100k entries.
            base = self._base
            last = base + len(d.entries)
            kept = trim_to_base(base, entries)
            if entries and entries[0].index > last + 1:
                raise StorageError(
                    f"entries start at index {entries[0].index} but the log ends at {last}"
                )
            check_commit(hard_state, kept[-1].index if kept else last)
            if kept:
                del d.entries[kept[0].index - base - 1 :]
                d.entries.extend(kept)
            if hard_state is not None:
                d.hard_state = hard_state
            return
        log = list(d.entries)
        snap = d.snapshot
        if snapshot is not None:
            keep = apply_snapshot_rule(self._base, log, snapshot)
            log = log[snapshot.meta.index - self._base :] if keep else []
            snap = snapshot
        base = snap.meta.index if snap else 0
        if entries:
            log = splice(base, log, entries)
        check_commit(hard_state, base + len(log))
        # Commit all at once: a failure above leaves the disk untouched.
        d.snapshot, d.entries = snap, log
        if hard_state is not None:
            d.hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        self._check_open()
        d = self.disk
        index = snapshot.meta.index
        if index <= self._base:
            return
        check_local_snapshot(self._base, [e.term for e in d.entries], snapshot)
        d.entries = d.entries[index - self._base :]
        d.snapshot = snapshot

    def close(self) -> None:
        self._closed = True


def apply_snapshot_rule(base: int, log: list[Entry], snapshot: Snapshot) -> bool:
    """For a snapshot received from the leader: do the entries after it survive?

    They do only when our log holds the snapshot's last entry with the same term (log
    matching then says everything before it matches too; Raft §7, "if the follower receives a
    snapshot that describes a prefix of its log, entries following the snapshot are retained").
    """
    index, term = snapshot.meta.index, snapshot.meta.term
    if index < base:
        raise StorageError(f"snapshot at index {index} is older than the stored one at {base}")
    pos = index - base - 1
    if index == base:
        return True
    return 0 <= pos < len(log) and log[pos].term == term


def splice(base: int, log: list[Entry], entries: Sequence[Entry]) -> list[Entry]:
    """Replace everything from ``entries[0].index`` on; entries at or below ``base`` are skipped."""
    last = base + len(log)
    first = entries[0].index
    if first > last + 1:
        raise StorageError(f"entries start at index {first} but the log ends at {last}")
    entries = trim_to_base(base, entries)
    if not entries:
        # A batch wholly at or below the snapshot is covered by it (committed, so identical):
        # it does not truncate what follows the snapshot.
        return log
    return log[: entries[0].index - base - 1] + list(entries)


def trim_to_base(base: int, entries: Sequence[Entry]) -> Sequence[Entry]:
    """Drop the entries a snapshot at ``base`` already covers."""
    if entries and entries[0].index <= base:
        return entries[base + 1 - entries[0].index :]
    return entries


def check_local_snapshot(base: int, terms: Sequence[int], snapshot: Snapshot) -> None:
    index, term = snapshot.meta.index, snapshot.meta.term
    last = base + len(terms)
    if index > last:
        raise StorageError(f"cannot compact to index {index}: the log ends at {last}")
    if terms[index - base - 1] != term:
        raise StorageError(
            f"snapshot term {term} at index {index} does not match the log "
            f"(term {terms[index - base - 1]})"
        )
