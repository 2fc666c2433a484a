"""The localfs fast path for the Raft log: append-only segment files, one fdatasync per save.

Lives here: the frame format, the segment files of one node (``<dir>/<first seq>.wal``), the
append path (one ``os.write`` + one ``os.fdatasync`` per record; the directory is fsynced only
when a segment file is created), reading the tail back at start-up with torn-tail repair, and
deleting whole segments a snapshot covers. What a record *means* (an ``Op``) is
``storage/records.py``; which snapshot key it points to and the mirror of the log are
``storage/store.py``. No Salt here: the directory is handed in.

Theory of operation
-------------------
The records are the same ``Op`` blobs the record-per-key scheme stores (magic, CRC32, msgpack
body), numbered by the same ``seq``. Each is written as one *frame*::

    b"SRW1" | CRC32 of the next 20 bytes | blob length | seq | low | blob (encode_op)

``low`` is the first seq still needed at the time of the write (moved by snapshot records), so
the last frame on disk says where start-up must begin reading: the loader reads segments from
the newest backwards until it reaches the one holding ``low``, and decodes only frames from
``low`` on. Segments below it are garbage (compaction deleted them; a power loss may bring a
deletion back) and are removed.

Only the frame of the ``save()`` in flight can be torn: every earlier one was fdatasynced
before its ``save()`` returned, and a new segment is created only after the previous one is
complete. So a damaged region at the end of the *newest* segment with no intact frame after it
is a torn tail (never reported persisted): it is cut off with ``ftruncate`` + fsync before the
next append. Anything else (a damaged frame followed by an intact one, damage in an older
segment, a seq out of order, a missing segment) is corruption.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from array import array
from dataclasses import dataclass

from saltext_raft.storage import records
from saltext_raft.storage.base import StorageCorruption
from saltext_raft.storage.base import StorageError
from saltext_raft.storage.records import DamagedRecord
from saltext_raft.storage.records import Op
from saltext_raft.storage.records import SnapEvent

log = logging.getLogger(__name__)

#: Roll over to a new segment file once the current one holds this many bytes.
SEGMENT_BYTES = 32 << 20
FRAME_MAGIC = b"SRW1"  # saltext-raft WAL frame, format 1
_FRAME = struct.Struct(">4sIIQQ")  # magic, CRC32 of the rest of the header, length, seq, low
_REST = struct.Struct(">IQQ")
_MAX_BLOB = 1 << 31
_NAME_RE = re.compile(r"^(\d{16})\.wal$")


def segment_name(first_seq: int) -> str:
    # Not ending in ".p": Salt's localfs never takes these files for cache keys' payloads.
    return f"{first_seq:016d}.wal"


def encode_frame(seq: int, low: int, blob: bytes) -> bytes:
    rest = _REST.pack(len(blob), seq, low)
    return FRAME_MAGIC + zlib.crc32(rest).to_bytes(4, "big") + rest + blob


def _header_at(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """(length, seq, low) of an intact frame header at ``pos``, else None."""
    if len(buf) - pos < _FRAME.size:
        return None
    magic, crc, length, seq, low = _FRAME.unpack_from(buf, pos)
    if magic != FRAME_MAGIC or zlib.crc32(buf[pos + 8 : pos + _FRAME.size]) != crc:
        return None
    if length > _MAX_BLOB:
        return None
    return length, seq, low


def _intact_frame_after(buf: bytes, pos: int) -> int | None:
    """Offset of an intact frame header after ``pos``: proof that damage is not a torn tail."""
    pos = buf.find(FRAME_MAGIC, pos + 1)
    while pos != -1:
        if _header_at(buf, pos) is not None:
            return pos
        pos = buf.find(FRAME_MAGIC, pos + 1)
    return None


@dataclass(slots=True)
class _Frame:
    seq: int
    low: int
    start: int  # offset of the frame header
    end: int  # offset just past the blob


@dataclass(slots=True)
class _Segment:
    first: int
    name: str
    buf: bytes
    frames: list[_Frame]
    good: int  # bytes holding intact frames; the rest is a torn tail (newest segment only)


class SegmentJournal:
    """The segment files of one node: append records, read the tail, drop covered segments."""

    def __init__(self, directory: str, bank: str, segment_bytes: int = SEGMENT_BYTES):
        self.dir = directory
        self.bank = bank  # the Salt cache bank the directory is, for error messages
        self.segment_bytes = max(1, segment_bytes)
        self.writes = 0
        self.fdatasyncs = 0
        self.fsyncs = 0
        self.bytes_written = 0
        self._fd: int | None = None
        self._firsts: list[int] = []  # first seq of each live segment, ascending
        self._size = 0  # bytes in the newest segment
        self._low = 0
        self._broken = ""
        # (seq, last index) of live records that write entries: where a snapshot's low-water
        # mark falls. Two flat arrays rather than one object per save.
        self._entry_seqs = array("q")
        self._entry_lasts = array("q")
        self._torn: tuple[str, int] | None = None  # (name, good length) to cut at loaded()
        self._garbage: list[str] = []

    # ---------------------------------------------------------------- reading

    def segment_names(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _NAME_RE.match(n))

    def _corrupt(self, name: str, problem: str) -> StorageCorruption:
        return StorageCorruption(
            self.bank, name, f"{problem} (file {os.path.join(self.dir, name)})"
        )

    def _read(self, first: int, name: str, newest: bool) -> _Segment:
        try:
            with open(os.path.join(self.dir, name), "rb") as fh:
                buf = fh.read()
        except OSError as exc:
            raise self._corrupt(name, f"segment unreadable: {exc}") from exc
        frames: list[_Frame] = []
        pos, expect = 0, first
        while pos < len(buf):
            header = _header_at(buf, pos)
            end = pos + _FRAME.size + header[0] if header else 0
            if header is None or end > len(buf):
                # Damaged header, or an intact one whose blob never fully arrived.
                later = _intact_frame_after(buf, pos)
                if not newest or later is not None:
                    where = f"an intact frame follows at byte {later}" if later else "not the end"
                    raise self._corrupt(
                        name, f"damaged frame at byte {pos} (seq {expect} expected; {where})"
                    )
                break
            _, seq, low = header
            if seq != expect:
                raise self._corrupt(name, f"frame at byte {pos} holds seq {seq}, not {expect}")
            frames.append(_Frame(seq, low, pos, end))
            pos, expect = end, expect + 1
        good = pos
        if newest and frames and frames[-1].end == len(buf):
            # The last frame's blob may be the torn part of a write whose header landed.
            last = frames[-1]
            try:
                records.decode_op(buf[last.start + _FRAME.size : last.end])
            except DamagedRecord:
                frames.pop()
                good = last.start
        return _Segment(first, name, buf, frames, good)

    def load(self) -> list[Op]:
        """Read the live tail: every record from the last frame's low-water mark on."""
        names = self.segment_names()
        firsts = [int(_NAME_RE.match(n).group(1)) for n in names]
        read: list[_Segment] = []
        low = None
        for i in range(len(names) - 1, -1, -1):
            seg = self._read(firsts[i], names[i], newest=i == len(names) - 1)
            if low is None and seg.frames:
                low = seg.frames[-1].low
            elif not seg.frames and i != len(names) - 1:
                raise self._corrupt(names[i], "segment holds no intact frame")
            read.append(seg)
            if low is not None and seg.first <= max(low, 1):
                self._garbage = names[:i]
                break
        else:
            if low is not None:
                raise self._corrupt(
                    names[0],
                    f"the log starts at seq {firsts[0]}, but its records say seq {max(low, 1)} "
                    "is still needed (a segment file was lost)",
                )
        read.reverse()
        newest = read[-1] if read else None
        if newest is not None and newest.good < len(newest.buf):
            log.warning(
                "raft storage: discarding torn tail of %s at byte %d (%d bytes; a save() that "
                "never returned)",
                os.path.join(self.dir, newest.name),
                newest.good,
                len(newest.buf) - newest.good,
            )
            self._torn = (newest.name, newest.good)
        if newest is not None and not newest.frames:
            read.pop()  # created but nothing durable in it: removed at loaded()
            self._garbage.append(newest.name)
        for prev, seg in zip(read, read[1:], strict=False):
            if seg.first != prev.frames[-1].seq + 1:
                raise self._corrupt(
                    seg.name,
                    f"starts at seq {seg.first} but {prev.name} ends at seq "
                    f"{prev.frames[-1].seq} (a segment file was lost?)",
                )
        ops: list[Op] = []
        low = low or 0
        for seg in read:
            for frame in seg.frames:
                if frame.seq < low:
                    continue  # covered by a snapshot: garbage in a segment still in use
                blob = seg.buf[frame.start + _FRAME.size : frame.end]
                try:
                    op = records.decode_op(blob)
                except DamagedRecord as exc:
                    raise self._corrupt(
                        seg.name, f"record seq {frame.seq} at byte {frame.start}: {exc}"
                    ) from exc
                if op.a != frame.seq or op.b != frame.seq:
                    raise self._corrupt(
                        seg.name, f"frame seq {frame.seq} holds record {op.a}..{op.b}"
                    )
                ops.append(op)
            seg.buf = b""
        self._firsts = [seg.first for seg in read]
        self._low = low
        return ops

    def locate(self, seq: int) -> str:
        """The segment file a seq lives in (for error messages)."""
        name = "?"
        for first in self._firsts:
            if first <= seq:
                name = segment_name(first)
        return name

    def loaded(self, ops: list[Op]) -> None:
        """The tail was accepted: repair it and get ready to append."""
        if self._torn is not None:
            name, good = self._torn
            if name in self._garbage:
                pass  # the whole file goes below
            else:
                fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, good)
                    os.fsync(fd)
                    self.fsyncs += 1
                finally:
                    os.close(fd)
            self._torn = None
        for name in self._garbage:
            try:
                os.remove(os.path.join(self.dir, name))
            except OSError as exc:
                log.warning("raft storage: could not delete %s: %s", name, exc)
        if self._garbage:
            self._fsync_dir()  # an empty newest segment must not come back before a new one
        self._garbage = []
        for op in ops:
            if op.count:
                self._entry_seqs.append(op.a)
                self._entry_lasts.append(op.last_index)
        if self._firsts:
            path = os.path.join(self.dir, segment_name(self._firsts[-1]))
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._size = os.fstat(self._fd).st_size

    # ---------------------------------------------------------------- writing

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.fsyncs += 1

    def append(self, op: Op) -> None:
        """Write one record durably: one write and one fdatasync (plus a new file's fsyncs)."""
        if self._broken:
            raise StorageError(
                f"raft storage {self.dir}: an earlier write failed ({self._broken}); what is on "
                "disk is unknown until the node restarts and reloads it"
            )
        low = op.low or self._low
        frame = encode_frame(op.a, low, records.encode_op(op))
        new_file = self._fd is None or self._size >= self.segment_bytes
        try:
            if new_file:
                self._roll(op.a)
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            self.writes += 1
            if new_file:
                os.fsync(self._fd)  # the new file's size and blocks
                self.fsyncs += 1
                self._fsync_dir()  # its directory entry
            else:
                os.fdatasync(self._fd)
                self.fdatasyncs += 1
        except OSError as exc:
            # After a failed write or fdatasync the page cache may hold anything: stop.
            self._broken = f"{type(exc).__name__}: {exc}"
            try:
                if self._fd is not None:
                    os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise StorageError(f"raft storage {self.dir}: write failed: {exc}") from exc
        self._size += len(frame)
        self.bytes_written += len(frame)
        self._low = low
        if op.count:
            self._entry_seqs.append(op.a)
            self._entry_lasts.append(op.last_index)

    def _roll(self, first_seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = os.path.join(self.dir, segment_name(first_seq))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        self._firsts.append(first_seq)
        self._size = 0

    def low_water(self, event: SnapEvent, seq: int) -> int:
        """The first seq still needed once ``event`` (written as record ``seq``) is durable."""
        if event.keep:
            for a, last in zip(self._entry_seqs, self._entry_lasts, strict=True):
                if last > event.index:
                    return a
        return seq

    def compacted(self, low: int) -> None:
        """A snapshot record with low-water mark ``low`` is durable: drop what lies below."""
        keep = next((i for i, a in enumerate(self._entry_seqs) if a >= low), len(self._entry_seqs))
        del self._entry_seqs[:keep], self._entry_lasts[:keep]
        # A segment is garbage when the next one starts at or below low. Deletions are not
        # fsynced: a segment that comes back lies below every later frame's low.
        while len(self._firsts) > 1 and self._firsts[1] <= low:
            name = segment_name(self._firsts.pop(0))
            try:
                os.remove(os.path.join(self.dir, name))
            except OSError as exc:
                log.warning("raft storage: could not delete %s: %s", name, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
