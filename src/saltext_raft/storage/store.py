"""CacheStore: the durable ``LogStore`` over a ``salt.cache.Cache`` (any cache driver).

Lives here: the node's banks and the snapshot keys, the choice between the two log schemes,
the snapshot writes, the load/repair path, the migration from keys to segment files, and the
store's in-memory mirror of what is durable. Elsewhere: the record-per-key scheme and its key
names (``storage/keyjournal.py``), writing a key durably (fsync for drivers whose files we can
reach: ``storage/durable.py``), the encoding and the fold (``storage/records.py``), the
segment files of the localfs fast path (``storage/segments.py``). See docs/storage.md for the
design and the guarantees.

Layout, for cluster ``c`` and node ``n`` (never under ``cluster/``, which Salt 3008 core uses)::

    saltext_raft/c/n/wal   <seq>.wal       localfs: append-only segment files of records
    saltext_raft/c/n/log   r<seq>          other drivers: one record per save()/compact()
                           g<a>_<b>        a sealed segment: records a..b composed
    saltext_raft/c/n/snap  s<seq>          snapshot meta + data, referenced by record <seq>

Key names end in a digit on purpose: Salt 3007's localfs ``list`` strips a trailing ``.p``
with ``str.rstrip`` and would mangle keys ending in "p" or ".". Segment files do not end in
``.p``, so localfs ``fetch`` never parses them as a key's payload (it returns ``{}``).

One store per node bank at a time: the runtime owns its node's bank exclusively.
"""

from __future__ import annotations

import gc
import logging
import re
from array import array
from collections.abc import Sequence

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Snapshot
from saltext_raft.storage import records
from saltext_raft.storage.base import LogStore
from saltext_raft.storage.base import RestoredState
from saltext_raft.storage.base import StorageCorruption
from saltext_raft.storage.base import StorageError
from saltext_raft.storage.base import check_commit
from saltext_raft.storage.base import check_entries
from saltext_raft.storage.durable import DurableKeys
from saltext_raft.storage.keyjournal import KeyJournal
from saltext_raft.storage.records import DamagedRecord
from saltext_raft.storage.records import Op
from saltext_raft.storage.records import SnapEvent
from saltext_raft.storage.segments import SEGMENT_BYTES
from saltext_raft.storage.segments import SegmentJournal

log = logging.getLogger(__name__)

BANK_ROOT = "saltext_raft"
LOG_BANK = "log"
SNAP_BANK = "snap"
WAL_BANK = "wal"
LOG_FORMATS = ("auto", "keys", "segments")
#: Seal this many consecutive records into one segment: a reopen then reads about
#: (records / SEAL_RECORDS) keys, and each entry is written at most twice.
SEAL_RECORDS = 64

_SNAPSHOT_RE = re.compile(r"^s(\d{16})$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]+$")


def snapshot_key(seq: int) -> str:
    return f"s{seq:016d}"


def node_bank(cluster_id: str, node_id: str) -> str:
    for what, value in (("cluster id", cluster_id), ("node id", node_id)):
        if not value or not _ID_RE.match(value) or value in (".", ".."):
            raise StorageError(
                f"{what} {value!r} cannot name a cache bank: use letters, digits and _ . : @ -"
            )
    return f"{BANK_ROOT}/{cluster_id}/{node_id}"


def open_store(opts: dict, cluster_id: str, node_id: str, **kwargs) -> CacheStore:
    """Build the node's store over ``salt.cache.Cache(opts)`` (option ``cache``: localfs)."""
    import salt.cache  # pylint: disable=import-outside-toplevel

    return CacheStore(salt.cache.Cache(opts), cluster_id, node_id, **kwargs)


class CacheStore(LogStore):
    """The durable ``LogStore`` over ``salt.cache.Cache``.

    ``log_format``: ``"auto"`` (default) writes the log to segment files on localfs and one key
    per record on every other driver; ``"keys"`` forces one key per record on localfs too;
    ``"segments"`` insists on segment files (localfs only).
    """

    def __init__(
        self,
        cache,
        cluster_id: str,
        node_id: str,
        *,
        seal_records: int = SEAL_RECORDS,
        segment_bytes: int = SEGMENT_BYTES,
        log_format: str = "auto",
    ):
        self.cache = cache
        self.bank = node_bank(cluster_id, node_id)
        self.log_bank = f"{self.bank}/{LOG_BANK}"
        self.snap_bank = f"{self.bank}/{SNAP_BANK}"
        self.wal_bank = f"{self.bank}/{WAL_BANK}"
        if log_format not in LOG_FORMATS:
            raise StorageError(f"log_format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
        self._io = DurableKeys(cache)
        self.driver = self._io.driver
        if self._io.files is None and log_format == "segments":
            raise StorageError(
                f"log_format 'segments' needs the localfs cache driver, not {self.driver!r}"
            )
        self._keys = KeyJournal(self._io, self.log_bank, seal_records)
        self._wal: SegmentJournal | None = None
        if self._io.files is not None and log_format != "keys":
            self._wal = SegmentJournal(
                self._io.files.bank_dir(self.wal_bank), self.wal_bank, segment_bytes
            )
        self.log_format = "segments" if self._wal is not None else "keys"
        self._journal = self._wal if self._wal is not None else self._keys
        self._loaded = False
        self._closed = False
        # in-memory mirror of what is durable
        self._next_seq = 1
        self._hs = HardState()
        self._base = 0  # snapshot index
        self._base_term = 0
        self._snap_key = ""
        self._terms = array("q")  # terms of entries base+1 .. last

    # ---------------------------------------------------------------- helpers

    @property
    def seal_records(self) -> int:
        """Records sealed into one segment key (record-per-key scheme)."""
        return self._keys.seal_records

    @seal_records.setter
    def seal_records(self, value: int) -> None:
        self._keys.seal_records = max(2, value)

    @property
    def keys_written(self) -> int:
        return self._io.keys_written

    @property
    def fsyncs(self) -> int:
        """Full fsyncs (files and directories); fdatasyncs of segment appends not included."""
        return self._io.fsyncs + (self._wal.fsyncs if self._wal else 0)

    @property
    def fdatasyncs(self) -> int:
        return self._wal.fdatasyncs if self._wal else 0

    @property
    def segment_writes(self) -> int:
        return self._wal.writes if self._wal else 0

    @property
    def bytes_written(self) -> int:
        return self._io.bytes_written + (self._wal.bytes_written if self._wal else 0)

    @property
    def last_index(self) -> int:
        return self._base + len(self._terms)

    def _check_ready(self):
        if self._closed:
            raise StorageError(f"store {self.bank!r} is closed")
        if not self._loaded:
            raise StorageError(f"store {self.bank!r}: call load() before writing")

    def _corrupt(self, key: str, problem: str, bank: str | None = None) -> StorageCorruption:
        return StorageCorruption(bank or self._journal.bank, key, problem)

    # ---------------------------------------------------------------- load

    def load(self) -> RestoredState:
        if self._closed:
            raise StorageError(f"store {self.bank!r} is closed")
        # Decoding 100k entries allocates 100k+ containers: without this, the cyclic GC runs
        # full collections over everything Salt has loaded, which doubles the reopen time.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._load()
        finally:
            if was_enabled:
                gc.enable()

    def _load(self) -> RestoredState:
        banks = [self.log_bank, self.snap_bank]
        if self._wal is not None:
            banks.append(self.wal_bank)
        self._io.prepare(banks)
        migrate = False
        if self._wal is None:
            self._refuse_segments()
            ops = self._keys.load()
        else:
            ops = self._wal.load()
            if not ops and self._keys.keys():
                # Written by the record-per-key scheme: fold it, then rewrite it below as one
                # segment record.
                ops = self._keys.load()
                migrate = True
        folded = self._fold(ops, self._keys if self._wal is None or migrate else self._wal)
        snapshot = None
        if folded.snap is not None:
            snapshot = self._read_snapshot(folded.snap)
        entries = folded.entries
        hs = folded.hard_state
        # install the mirror
        self._next_seq = ops[-1].b + 1 if ops else 1
        self._hs = hs
        self._base = folded.snap.index if folded.snap else 0
        self._base_term = folded.snap.term if folded.snap else 0
        self._snap_key = folded.snap.key if folded.snap else ""
        self._terms = array("q", (e.term for e in entries))
        if migrate:
            self._keys.loaded(ops)
            self._migrate(folded)
        else:
            self._journal.loaded(ops)
            if self._wal is not None and self._keys.keys():
                self._keys.remove_all()  # left over by a migration interrupted after its record
        self._loaded = True
        for name in self._io.list(self.snap_bank):
            if _SNAPSHOT_RE.match(name) and name != self._snap_key:
                self._io.delete(self.snap_bank, name)  # superseded, or written by a torn save
        return RestoredState(hs, snapshot, entries)

    def _fold(self, ops: list[Op], journal) -> records.Folded:
        try:
            folded = records.fold(ops)
        except records.FoldError as exc:
            raise self._corrupt(journal.locate(exc.seq), str(exc), journal.bank) from exc
        last = (folded.snap.index if folded.snap else 0) + len(folded.entries)
        if folded.hard_state.commit > last:
            raise self._corrupt(
                journal.locate(ops[-1].b),
                f"hard state commit {folded.hard_state.commit} lies beyond the last stored "
                f"entry {last}",
                journal.bank,
            )
        return folded

    def _refuse_segments(self) -> None:
        """A node written in segment files cannot be read back by the record-per-key scheme."""
        if self._io.files is None:
            return
        wal = SegmentJournal(self._io.files.bank_dir(self.wal_bank), self.wal_bank)
        if wal.segment_names():
            raise StorageError(
                f"raft storage {self.bank!r}: the log is in segment files under "
                f"{wal.dir} (the localfs fast path), but log_format='keys' was asked for. "
                "Open it with log_format='auto' (the default); to go back to one key per "
                "record, stop the master, remove the bank and re-add the node as a learner"
            )

    def _migrate(self, folded: records.Folded) -> None:
        """Rewrite a log kept one key per record as one segment record, then drop the keys.

        The record is the whole state: the snapshot reference (with ``keep=False``: the
        entries follow in the same record), every entry after it, the hard state, and a
        low-water mark of its own seq. Until it is durable the keys stay the truth; once it is,
        a crash before the keys are gone leaves keys the next load deletes.
        """
        seq = self._next_seq
        op = Op(a=seq, b=seq, hard_state=self._hs, low=seq)
        if folded.snap is not None:
            op.snap = SnapEvent(folded.snap.index, folded.snap.term, False, folded.snap.key)
        if folded.entries:
            op.first = folded.entries[0].index
            op.terms, op.kinds, op.datas = records.entry_columns(folded.entries)
        log.warning(
            "raft storage: moving %s from one key per record to segment files (%d entries)",
            self.log_bank,
            len(folded.entries),
        )
        self._wal.loaded([])
        self._wal.append(op)
        self._next_seq = seq + 1
        self._keys.remove_all()
        self._journal = self._wal

    def _read_snapshot(self, event: SnapEvent) -> Snapshot:
        try:
            blob = self._io.fetch(self.snap_bank, event.key)
            if blob == {}:
                raise DamagedRecord("missing")
            snapshot = records.decode_snapshot(blob)
        except DamagedRecord as exc:
            raise self._corrupt(event.key, f"snapshot {exc}", self.snap_bank) from exc
        except Exception as exc:  # pylint: disable=broad-except
            raise self._corrupt(event.key, f"snapshot unreadable: {exc}", self.snap_bank) from exc
        if (snapshot.meta.index, snapshot.meta.term) != (event.index, event.term):
            raise self._corrupt(
                event.key,
                f"snapshot is at index {snapshot.meta.index} term {snapshot.meta.term}, the log "
                f"expects index {event.index} term {event.term}",
                self.snap_bank,
            )
        return snapshot

    # ---------------------------------------------------------------- writes

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        self._check_ready()
        check_entries(entries)
        seq = self._next_seq
        op = Op(a=seq, b=seq)
        base, base_term, last = self._base, self._base_term, self.last_index
        if snapshot is not None:
            index, term = snapshot.meta.index, snapshot.meta.term
            if index < base or (index == base and term != base_term):
                raise StorageError(
                    f"snapshot at index {index} term {term} is older than the stored one "
                    f"at index {base} term {base_term}"
                )
            if index > base:
                keep = index <= last and self._terms[index - base - 1] == term
                op.snap = SnapEvent(index, term, keep, snapshot_key(seq))
                base, base_term = index, term
                last = max(last, index) if keep else index
        if entries and entries[-1].index > base:
            first = entries[0].index
            if first > last + 1:
                raise StorageError(f"entries start at index {first} but the log ends at {last}")
            if first <= base:
                entries = entries[base + 1 - first :]
                first = base + 1
            prev_term = self._term_at(first - 1, base, base_term, op.snap)
            if entries[0].term < prev_term:
                raise StorageError(
                    f"entry term {entries[0].term} at index {first} is below the term "
                    f"{prev_term} of the entry before it"
                )
            op.first = first
            op.terms, op.kinds, op.datas = records.entry_columns(entries)
            last = first + len(entries) - 1
        check_commit(hard_state, last)
        if hard_state is not None:
            op.hard_state = hard_state
        if op.snap is not None:
            op.hard_state = op.hard_state or self._hs
            op.low = self._journal.low_water(op.snap, seq)
        if op.snap is None and not op.count and op.hard_state is None:
            return  # nothing to persist
        if op.snap is not None:
            self._io.put(self.snap_bank, op.snap.key, records.encode_snapshot(snapshot))
        self._journal.append(op)
        # Durable: bring the mirror up to date (suffix work only, except on a snapshot).
        self._next_seq = seq + 1
        if op.snap is not None:
            if op.snap.keep:
                del self._terms[: op.snap.index - self._base]
            else:
                del self._terms[:]
            self._moved_base(op.snap, op.low)
        if op.count:
            del self._terms[op.first - self._base - 1 :]
            self._terms.extend(op.terms)
        if op.hard_state is not None:
            self._hs = op.hard_state
        if self._journal is self._keys:
            self._keys.appended(op)

    def _term_at(self, index: int, base: int, base_term: int, snap: SnapEvent | None) -> int:
        """Term of ``index`` as it will be once a pending snapshot event applies."""
        if index <= base:
            return base_term
        if snap is not None and not snap.keep:
            return 0
        return self._terms[index - self._base - 1]

    def compact(self, snapshot: Snapshot) -> None:
        self._check_ready()
        index, term = snapshot.meta.index, snapshot.meta.term
        if index <= self._base:
            return
        if index > self.last_index:
            raise StorageError(
                f"cannot compact to index {index}: the log ends at {self.last_index}"
            )
        if self._terms[index - self._base - 1] != term:
            raise StorageError(
                f"snapshot term {term} at index {index} does not match the log "
                f"(term {self._terms[index - self._base - 1]})"
            )
        seq = self._next_seq
        event = SnapEvent(index, term, True, snapshot_key(seq))
        op = Op(a=seq, b=seq, hard_state=self._hs, snap=event)
        op.low = self._journal.low_water(event, seq)
        # The new snapshot goes under a new key; until the record naming it is durable the
        # previous snapshot stays the live one.
        self._io.put(self.snap_bank, event.key, records.encode_snapshot(snapshot))
        self._journal.append(op)
        self._next_seq = seq + 1
        del self._terms[: index - self._base]
        self._moved_base(event, op.low)

    def _moved_base(self, event: SnapEvent, low: int) -> None:
        """The snapshot record is durable: forget and delete what it made garbage."""
        old_snap = self._snap_key
        self._base, self._base_term, self._snap_key = event.index, event.term, event.key
        self._journal.compacted(low)
        if old_snap:
            self._io.delete(self.snap_bank, old_snap)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wal is not None:
            self._wal.close()
        destroy = getattr(self.cache, "destroy", None)
        if destroy is not None:
            try:
                destroy()
            except Exception:  # pylint: disable=broad-except
                pass
