"""The in-memory Raft log: entries after the last compaction point, plus what is stable.

``RaftLog`` holds the entries from ``offset + 1`` to ``last_index`` (``offset`` is the index the
in-memory log was compacted to; its term is ``offset_term``), the index up to which entries are
known to be on stable storage (``stable``), and the commit index. It does no I/O: the node
hands unstable entries out in a Ready and marks them stable when the driver says they are.

The entries are kept column by column (terms in an ``array``, kinds in a ``bytearray``, data in
a list of ``bytes``) and turned into ``Entry`` tuples only when handed out. A list of 100k
``Entry`` tuples is 100k objects Python's cyclic GC must walk on every full collection (tuple
subclasses are never untracked): 100-200 ms pauses of the event loop with a long log on a busy
machine. The columns are three objects, whatever the length.

Invariants:
- entries are contiguous: the entry at position ``k`` has index ``offset + 1 + k``;
- terms never decrease along the log (used for binary search in conflict hints);
- ``committed`` never decreases and never exceeds ``last_index``.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence

from saltext_raft.core.types import Entry
from saltext_raft.core.types import RaftError

_tuple_new = tuple.__new__


class RaftLog:
    __slots__ = ("offset", "offset_term", "_terms", "_kinds", "_datas", "stable", "committed")

    def __init__(
        self, offset: int = 0, offset_term: int = 0, entries: Sequence[Entry] = (), commit: int = 0
    ):
        self.offset = offset
        self.offset_term = offset_term
        self._terms = array("q")
        self._kinds = bytearray()
        self._datas: list[bytes] = []
        for k, e in enumerate(entries):
            if e.index != offset + 1 + k:
                raise RaftError(f"log entries are not contiguous at position {k}: index {e.index}")
        self._extend(entries)
        self.stable = self.last_index
        self.committed = max(offset, min(commit, self.last_index))

    def _extend(self, entries: Sequence[Entry]) -> None:
        self._terms.extend([e.term for e in entries])
        self._kinds.extend([e.kind for e in entries])
        self._datas.extend([e.data for e in entries])

    def _make(self, a: int, b: int) -> list[Entry]:
        """Entries at positions a..b-1, as new tuples (plain int kinds)."""
        first = self.offset + 1 + a
        return [
            _tuple_new(Entry, row)
            for row in zip(
                self._terms[a:b],
                range(first, first + b - a),
                self._kinds[a:b],
                self._datas[a:b],
                strict=True,
            )
        ]

    # --- reading ------------------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_index(self) -> int:
        return self.offset + len(self._datas)

    @property
    def last_term(self) -> int:
        return self._terms[-1] if self._datas else self.offset_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        k = index - self.offset - 1
        if 0 <= k < len(self._datas):
            return self._terms[k]
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        k = index - self.offset - 1
        if not 0 <= k < len(self._datas):
            raise IndexError(f"no entry {index} in memory")
        return _tuple_new(Entry, (self._terms[k], index, self._kinds[k], self._datas[k]))

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, at most ``max_bytes`` of data (but at least one)."""
        if lo <= self.offset:
            raise RaftError(f"entries from {lo} are compacted (log starts at {self.offset + 1})")
        a = lo - self.offset - 1
        b = min(hi, self.last_index + 1) - self.offset - 1
        if b <= a:
            return []
        if max_bytes is not None:
            datas = self._datas
            size = 0
            for k in range(a, b):
                size += len(datas[k]) + 16
                if size > max_bytes and k > a:
                    b = k
                    break
        return self._make(a, b)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used for fast backtracking (§5.3): the follower answers a rejected append with it, the
        leader uses it to skip a whole term of mismatching entries at once. Terms never
        decrease along the log, so this is a binary search.
        """
        index = min(index, self.last_index)
        if index <= self.offset:
            return self.offset, self.offset_term
        hi = index - self.offset  # search positions [0, hi)
        k = bisect.bisect_right(self._terms, term, 0, hi)
        if k == 0:
            return self.offset, self.offset_term
        return self.offset + k, self._terms[k - 1]

    # --- writing ------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that directly follow the current last entry (leader path)."""
        if entries and entries[0].index != self.last_index + 1:
            raise RaftError(
                f"append at {entries[0].index} does not follow last index {self.last_index}"
            )
        self._extend(entries)

    def truncate_and_append(self, entries: Sequence[Entry]) -> int:
        """Replace everything from ``entries[0].index`` on. Returns the truncation point."""
        first = entries[0].index
        if first <= self.committed:
            raise RaftError(
                f"refusing to overwrite committed entry {first} (commit {self.committed})"
            )
        if first > self.last_index + 1:
            raise RaftError(f"gap: append at {first} after last index {self.last_index}")
        k = first - self.offset - 1
        del self._terms[k:], self._kinds[k:], self._datas[k:]
        self._extend(entries)
        if self.stable >= first:
            self.stable = first - 1
        return first

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if all match."""
        for e in entries:
            if e.index <= self.offset:
                continue  # compacted, hence committed, hence matching
            t = self.term_at(e.index)
            if t != e.term:
                return e.index
        return 0

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index)
        if index > self.committed:
            self.committed = index
            return True
        return False

    def unstable(self) -> list[Entry]:
        lo = max(self.stable, self.offset)
        return self._make(lo - self.offset, len(self._datas))

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` from memory."""
        if index <= self.offset:
            return
        if index > self.last_index:
            raise RaftError(f"cannot compact to {index} beyond last index {self.last_index}")
        term = self.term_at(index)
        k = index - self.offset
        del self._terms[:k], self._kinds[:k], self._datas[:k]
        self.offset = index
        self.offset_term = term

    def reset_to(self, index: int, term: int) -> None:
        """Discard the whole log: it now starts after (index, term) (snapshot install)."""
        self._terms = array("q")
        self._kinds = bytearray()
        self._datas = []
        self.offset = index
        self.offset_term = term
        self.committed = max(self.committed, index)
        self.stable = min(self.stable, index)
