"""Durable Raft storage: hard state, log entries and snapshots.

Curated exports. ``MemoryStore`` needs nothing but the standard library and msgpack;
``CacheStore``/``open_store`` (over ``salt.cache.Cache``) are imported lazily so that importing
this package never imports Salt.
"""

from saltext_raft.storage.base import LogStore
from saltext_raft.storage.base import RestoredState
from saltext_raft.storage.base import StorageCorruption
from saltext_raft.storage.base import StorageError
from saltext_raft.storage.memory import MemoryDisk
from saltext_raft.storage.memory import MemoryStore

__all__ = [
    "CacheStore",
    "LogStore",
    "MemoryDisk",
    "MemoryStore",
    "RestoredState",
    "StorageCorruption",
    "StorageError",
    "open_store",
]


def __getattr__(name):
    if name in ("CacheStore", "open_store"):
        from saltext_raft.storage import store  # pylint: disable=import-outside-toplevel

        return getattr(store, name)
    raise AttributeError(name)
