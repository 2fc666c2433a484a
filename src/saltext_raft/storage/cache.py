"""CacheStore: the durable ``LogStore`` over a ``salt.cache.Cache`` (any cache driver).

Lives here: bank and key names (the only place that names them), the choice between the two
log schemes, the record-per-key scheme (one key per ``save()``, sealed into segment keys), the
snapshot keys, the load/repair path, the migration from keys to segment files, and the
durability layer (fsync for drivers whose files we can reach). The encoding and the fold are in
``storage/records.py``; the segment files of the localfs fast path in ``storage/segments.py``.
See docs/storage.md for the design and the guarantees.

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
import os
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

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

_RECORD_RE = re.compile(r"^r(\d{16})$")
_SEGMENT_RE = re.compile(r"^g(\d{16})_(\d{16})$")
_SNAPSHOT_RE = re.compile(r"^s(\d{16})$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]+$")

#: Drivers whose files live under ``cachedir`` at ``<bank>/<key>.p``, so we can fsync them.
FILE_DRIVERS = frozenset({"localfs"})


def record_key(seq: int) -> str:
    return f"r{seq:016d}"


def segment_key(a: int, b: int) -> str:
    return f"g{a:016d}_{b:016d}"


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


@dataclass(slots=True)
class _Item:
    """One live key of the log bank, in seq order."""

    key: str
    a: int
    b: int
    last_index: int  # highest entry index it writes, 0 if none


class _FileSync:
    """Durability for drivers that write ``<cachedir>/<bank>/<key>.p`` (localfs).

    localfs writes a temp file and renames it, so readers never see half a file, but it never
    fsyncs: after a power loss the file may be empty or missing. We fsync the file and then its
    directory (which makes the rename durable) before reporting a write persisted.
    """

    def __init__(self, cachedir: str):
        self.cachedir = cachedir
        self.fsyncs = 0

    def bank_dir(self, bank: str) -> str:
        return os.path.join(self.cachedir, os.path.normpath(bank))

    def path(self, bank: str, key: str) -> str:
        return os.path.join(self.bank_dir(bank), f"{key}.p")

    def _fsync(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.fsyncs += 1

    def stored(self, bank: str, key: str) -> None:
        self._fsync(self.path(bank, key))
        self._fsync(self.bank_dir(bank))

    def prepare(self, banks: Sequence[str]) -> None:
        """Create the bank directories durably and clear temp files a SIGKILL left behind."""
        for bank in banks:
            path = self.bank_dir(bank)
            os.makedirs(path, exist_ok=True)
            while True:  # fsync every directory up to cachedir: new directory entries
                self._fsync(path)
                if os.path.samefile(path, self.cachedir):
                    break
                path = os.path.dirname(path)
            for name in os.listdir(self.bank_dir(bank)):
                # localfs names its temp files with tempfile.mkstemp: "tmp" + random, no ".p".
                if name.startswith("tmp") and not name.endswith(".p"):
                    try:
                        os.remove(os.path.join(self.bank_dir(bank), name))
                    except OSError:
                        pass


class _DriverSync:
    """Durability is whatever the driver (and its server) guarantees once ``store`` returns."""

    fsyncs = 0

    def stored(self, bank: str, key: str) -> None:
        pass

    def prepare(self, banks: Sequence[str]) -> None:
        pass


class _KeyJournal:
    """The record-per-key scheme (any driver): one key per record, sealed into segment keys.

    Owns the list of live keys of the log bank and the records not yet sealed; writes go
    through the store's ``_put``/``_delete`` so the driver's durability layer applies.
    """

    def __init__(self, store: CacheStore):
        self.store = store
        self.bank = store.log_bank
        self.items: list[_Item] = []
        self.pending: list[Op] = []  # trailing records not yet sealed (no snapshot events)
        self._found: dict[tuple[int, int], str] = {}
        self._garbage: list[str] = []

    def keys(self) -> list[str]:
        """Names in the log bank that belong to this scheme."""
        return [
            n
            for n in self.store.cache.list(self.bank)
            if _RECORD_RE.match(n) or _SEGMENT_RE.match(n)
        ]

    def load(self) -> list[Op]:
        found: dict[tuple[int, int], str] = {}
        for name in self.store.cache.list(self.bank):
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
            self.store._delete(self.bank, key)  # pylint: disable=protected-access
        self._garbage = []

    def remove_all(self) -> None:
        for key in self.keys():
            self.store._delete(self.bank, key)  # pylint: disable=protected-access

    def _fetch_op(self, key: str) -> Op:
        try:
            blob = self.store.cache.fetch(self.bank, key)
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
        self.store._put(self.bank, record_key(op.a), records.encode_op(op))  # pylint: disable=protected-access
        self.items.append(_Item(record_key(op.a), op.a, op.b, op.last_index))

    def appended(self, op: Op) -> None:
        """The store's mirror is up to date: seal if enough records piled up."""
        if op.snap is None:
            self.pending.append(op)
            if len(self.pending) >= self.store.seal_records:
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
                self.store._delete(self.bank, it.key)  # pylint: disable=protected-access
        self.items = keep
        self.pending = []

    def _seal(self) -> None:
        """Write the pending records as one segment, then delete them."""
        pending, self.pending = self.pending, []
        seg = records.compose(pending)
        key = segment_key(seg.a, seg.b)
        self.store._put(self.bank, key, records.encode_op(seg))  # pylint: disable=protected-access
        n = len(pending)
        self.items[-n:] = [_Item(key, seg.a, seg.b, seg.last_index)]
        for op in pending:
            self.store._delete(self.bank, record_key(op.a))  # pylint: disable=protected-access

    def close(self) -> None:
        pass


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
        self.driver = getattr(cache, "driver", None) or "unknown"
        if log_format not in LOG_FORMATS:
            raise StorageError(f"log_format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
        if self.driver in FILE_DRIVERS:
            self._sync = _FileSync(cache.cachedir)
        else:
            self._sync = _DriverSync()
            if log_format == "segments":
                raise StorageError(
                    f"log_format 'segments' needs the localfs cache driver, not {self.driver!r}"
                )
        self.seal_records = max(2, seal_records)
        self._keys = _KeyJournal(self)
        self._wal: SegmentJournal | None = None
        if self.driver in FILE_DRIVERS and log_format != "keys":
            self._wal = SegmentJournal(
                self._sync.bank_dir(self.wal_bank), self.wal_bank, segment_bytes
            )
        self.log_format = "segments" if self._wal is not None else "keys"
        self._journal = self._wal if self._wal is not None else self._keys
        self._bytes_written = 0
        self.keys_written = 0
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
    def fsyncs(self) -> int:
        """Full fsyncs (files and directories); fdatasyncs of segment appends not included."""
        return self._sync.fsyncs + (self._wal.fsyncs if self._wal else 0)

    @property
    def fdatasyncs(self) -> int:
        return self._wal.fdatasyncs if self._wal else 0

    @property
    def segment_writes(self) -> int:
        return self._wal.writes if self._wal else 0

    @property
    def bytes_written(self) -> int:
        return self._bytes_written + (self._wal.bytes_written if self._wal else 0)

    @property
    def last_index(self) -> int:
        return self._base + len(self._terms)

    def _check_ready(self):
        if self._closed:
            raise StorageError(f"store {self.bank!r} is closed")
        if not self._loaded:
            raise StorageError(f"store {self.bank!r}: call load() before writing")

    def _put(self, bank: str, key: str, blob: bytes) -> None:
        self.cache.store(bank, key, blob)
        self._sync.stored(bank, key)
        self._bytes_written += len(blob)
        self.keys_written += 1

    def _delete(self, bank: str, key: str) -> None:
        # Deletions need no fsync: a key that comes back after a power loss is either covered
        # by a segment or older than the chain's low-water mark, and the loader ignores it.
        try:
            self.cache.flush(bank, key)
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("raft storage: could not delete %s/%s: %s", bank, key, exc)

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
        self._sync.prepare(banks)
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
        for name in self.cache.list(self.snap_bank):
            if _SNAPSHOT_RE.match(name) and name != self._snap_key:
                self._delete(self.snap_bank, name)  # superseded, or written by a torn save
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
        if not isinstance(self._sync, _FileSync):
            return
        wal = SegmentJournal(self._sync.bank_dir(self.wal_bank), self.wal_bank)
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
            blob = self.cache.fetch(self.snap_bank, event.key)
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
            self._put(self.snap_bank, op.snap.key, records.encode_snapshot(snapshot))
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
        self._put(self.snap_bank, event.key, records.encode_snapshot(snapshot))
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
            self._delete(self.snap_bank, old_snap)

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
