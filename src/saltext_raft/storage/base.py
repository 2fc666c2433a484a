"""The storage interface the runtime uses, and the errors every store raises.

Lives here: ``RestoredState`` (what a reopened node gets back), the abstract ``LogStore``, and
the storage exceptions. Must not import Salt: the simulator and the in-memory store use this
module without a Salt install.

Contract (every implementation, checked by ``tests/unit/storage/test_contract.py``):

- ``save()`` is one durable group commit. Its effects apply in the order the core's ``Ready``
  demands: the snapshot (one received from the leader) first, then the entries, then the hard
  state. When ``save()`` returns, all of it survives a crash; if the process dies inside
  ``save()``, a reopen yields either the state before the call or the state after it.
- ``entries[0].index`` may be at or below the last stored index: everything from that index on
  is replaced (truncation on conflict, Raft §5.3). Entries must be contiguous and start at most
  one past the last stored index.
- ``compact()`` durably stores a snapshot the local state machine made, then forgets every
  entry at or below its index.
- ``load()`` returns the hard state, the latest durable snapshot and every entry after it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Snapshot


class RestoredState(NamedTuple):
    """What ``LogStore.load()`` returns."""

    hard_state: HardState  # HardState() when fresh
    snapshot: Snapshot | None  # latest durable snapshot (meta + data) or None
    entries: list[Entry]  # every entry after the snapshot index, in order, contiguous


class StorageError(Exception):
    """A store cannot do what was asked (I/O failure, misuse, closed store)."""


class StorageCorruption(StorageError):
    """Stored data is damaged or inconsistent in a way that is not a torn, unsynced tail.

    The node must stop: carrying on could vote twice or invent a committed entry. The message
    names the bank and key and says how to recover.
    """

    def __init__(self, bank: str, key: str, problem: str):
        self.bank = bank
        self.key = key
        self.problem = problem
        super().__init__(
            f"raft storage corrupt: bank {bank!r} key {key!r}: {problem}. "
            "This node's Raft data cannot be trusted. To recover: stop the master, remove the "
            f"node's data (the whole bank {bank.rsplit('/', 1)[0]!r} from the Salt cache), "
            "start it again and re-add it to the cluster as a learner so it copies the log "
            "and a snapshot from the leader. Keep a copy of the damaged data if you want to "
            "investigate."
        )


class LogStore(abc.ABC):
    """Durable hard state, log entries and snapshots of one Raft node."""

    @abc.abstractmethod
    def load(self) -> RestoredState:
        """Read what is stored. Call once, before the first ``save()``."""

    @abc.abstractmethod
    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """One durable group commit: snapshot, then entries, then hard state."""

    @abc.abstractmethod
    def compact(self, snapshot: Snapshot) -> None:
        """Durably store a local snapshot, then delete the entries it covers."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources. Further calls raise ``StorageError``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_entries(entries: Sequence[Entry]) -> None:
    """Reject a batch that is not contiguous: the store would otherwise break log matching."""
    for prev, cur in zip(entries, entries[1:], strict=False):
        if cur.index != prev.index + 1:
            raise StorageError(
                f"entries must be contiguous: index {cur.index} follows {prev.index}"
            )
        if cur.term < prev.term:
            raise StorageError(
                f"entry terms must not decrease: term {cur.term} at index {cur.index} "
                f"follows term {prev.term}"
            )


def check_commit(hard_state: HardState | None, last_index: int) -> None:
    """A commit index past the log would claim committed entries the node does not hold."""
    if hard_state is not None and hard_state.commit > last_index:
        raise StorageError(
            f"hard state commit {hard_state.commit} is beyond the last log index {last_index}"
        )
