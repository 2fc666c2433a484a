"""Writing keys durably through a ``salt.cache.Cache``: the one port key writes go through.

Lives here: :class:`DurableKeys` (store, delete, fetch and list keys through the cache, each
store followed by the driver's durability step; counts of keys, bytes and fsyncs),
:class:`FileSync` (localfs: fsync the file and its directory), :class:`DriverSync` (other
drivers: what the driver guarantees once ``store`` returns) and :data:`FILE_DRIVERS`. Must not
live here: key names and which keys make up the log (``cache``, ``keyjournal``), the store's
in-memory mirror (``store.CacheStore``), segment files (``segments``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Cache drivers whose files we can reach (``<cachedir>/<bank>/<key>.p``) and fsync ourselves.
FILE_DRIVERS = frozenset({"localfs"})


class FileSync:
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


class DriverSync:
    """Durability is whatever the driver (and its server) guarantees once ``store`` returns."""

    fsyncs = 0

    def stored(self, bank: str, key: str) -> None:
        pass

    def prepare(self, banks: Sequence[str]) -> None:
        pass


class DurableKeys:
    """Keys in a ``salt.cache.Cache``, each write durable when :meth:`put` returns.

    ``files`` is the :class:`FileSync` of a file driver (its bank directories are where the
    segment files go), None for any other driver.
    """

    def __init__(self, cache):
        self.cache = cache
        self.driver = getattr(cache, "driver", None) or "unknown"
        self.files = FileSync(cache.cachedir) if self.driver in FILE_DRIVERS else None
        self._sync = self.files if self.files is not None else DriverSync()
        self.keys_written = 0
        self.bytes_written = 0

    @property
    def fsyncs(self) -> int:
        return self._sync.fsyncs

    def prepare(self, banks: Sequence[str]) -> None:
        self._sync.prepare(banks)

    def put(self, bank: str, key: str, blob: bytes) -> None:
        self.cache.store(bank, key, blob)
        self._sync.stored(bank, key)
        self.bytes_written += len(blob)
        self.keys_written += 1

    def delete(self, bank: str, key: str) -> None:
        # Deletions need no fsync: a key that comes back after a power loss is either covered
        # by a segment or older than the chain's low-water mark, and the loader ignores it.
        try:
            self.cache.flush(bank, key)
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("raft storage: could not delete %s/%s: %s", bank, key, exc)

    def fetch(self, bank: str, key: str):
        return self.cache.fetch(bank, key)

    def list(self, bank: str) -> list[str]:
        return self.cache.list(bank)
