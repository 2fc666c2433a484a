"""The ``sqlite`` layout of the replicated cache's local copy (the default layout,
``raft_cache_backend: sqlite``).

Lives here: the schema, :class:`SqliteMirror` (the engine's writer: one transaction per batch
of applied commands) and :class:`SqliteReader` (the driver's reads in Salt's worker processes).
No Salt import: values are the ``salt.payload`` bytes the driver stored; it decodes them.
Must not live here: which layout a master uses (``replicated/config.py``), the writer thread
(``replicated/mirror.py``: ``MirrorWriter``), the driver API (``replicated/driver.py``).

Why it exists: the ``localfs`` layout costs one file create and rename per stored key on every
master, about 140 µs of CPU each on an ext4 disk of a benchmark machine, three times per write
in a three-master cluster. Here the writer thread puts a whole batch into one SQLite
transaction (about 12 µs per key) and a worker's read is one indexed ``SELECT``.

Semantics are the KV state machine's (:mod:`saltext_raft.kv.machine`), which match Salt's
``localfs``: banks are paths of non-empty parts, storing creates a bank and its parents,
flushing a key keeps its bank, flushing a bank removes everything below it, ``updated`` is the
proposer's timestamp.

Durability: none needed, as for the ``localfs`` copy: the database is derived state, opened
with ``synchronous=OFF`` and rebuilt from the Raft state on every engine start. WAL mode lets
workers read while the writer commits; a reader sees each batch whole or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time

from saltext_raft.kv.machine import check_flush
from saltext_raft.kv.machine import check_key
from saltext_raft.master.fileutil import NETWORK_FILESYSTEMS
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.master.fileutil import filesystem_type
from saltext_raft.replicated.config import tmp_dir

#: File name of the database inside ``raft_cache_dir``.
DB_NAME = "cache.sqlite3"
#: Stored in ``PRAGMA user_version``; a database with another version is rebuilt.
SCHEMA_VERSION = 1
#: Bytes the WAL file is cut back to after a checkpoint.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: Milliseconds a reader or the writer waits on a lock before failing.
BUSY_TIMEOUT_MS = 5000

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS banks ("
    " bank TEXT PRIMARY KEY, parent TEXT, name TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS banks_parent ON banks(parent)",
    "CREATE TABLE IF NOT EXISTS keys ("
    " bank TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, updated INTEGER NOT NULL,"
    " PRIMARY KEY (bank, key)) WITHOUT ROWID",
)


def norm_bank(bank: str) -> str:
    """The bank's canonical name: its non-empty parts joined by "/" ("" is the root)."""
    return "/".join(p for p in bank.split("/") if p)


def _lineage(bank: str):
    """(bank, parent, name) for ``bank`` and each of its ancestors, the root included."""
    yield "", None, ""
    parts = bank.split("/") if bank else []
    for i, name in enumerate(parts):
        yield "/".join(parts[: i + 1]), "/".join(parts[:i]), name


def _below(bank: str) -> tuple[str, str]:
    """Bounds of the names strictly below ``bank``: ``lo <= name < hi`` ("0" follows "/")."""
    return bank + "/", bank + "0"


def db_path(root: str) -> str:
    return os.path.join(root, DB_NAME)


def foreign_entries(root: str) -> list[str]:
    """Names in ``root`` that are not this layout's: the database, its WAL files and damaged
    databases moved aside. After a switch from the ``localfs`` layout they are the old copy's
    banks and keys, which nothing reads any more."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    ours = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")
    return sorted(n for n in names if n not in ours and not n.startswith(f"{DB_NAME}.damaged-"))


def warn_network_filesystem(root: str) -> str | None:
    """Log a warning when ``root`` is on a network filesystem, where SQLite's WAL mode is not
    supported (reads may fail, or see a torn copy): this layout became the default in 0.1.0,
    so a master upgraded with its ``raft_cache_dir`` on NFS meets it without having chosen it.
    Returns the filesystem type warned about (None: none)."""
    fstype = filesystem_type(root)
    if fstype not in NETWORK_FILESYSTEMS:
        return None
    log.warning(
        "saltext-raft cache: raft_cache_dir %s is on a network filesystem (%s), where the "
        "sqlite layout of the local copy is not supported (SQLite's WAL mode needs a local "
        "disk): set raft_cache_dir to a local directory, or set 'raft_cache_backend: localfs'",
        root,
        fstype,
    )
    return fstype


class SqliteMirror:
    """The engine side: used by one thread at a time (the mirror writer thread)."""

    def __init__(self, root: str):
        self.root = ensure_private_dir(root, "the raft cache directory (raft_cache_dir)")
        self.path = db_path(self.root)
        self._conn: sqlite3.Connection | None = None
        self._banks: set[str] = set()
        warn_network_filesystem(self.root)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    raise  # locked, no space, no permission: not the file's fault
                # Not a database (a torn or foreign file): derived state, so keep the file for
                # a post-mortem and start a new one, which the caller fills (a rebuild).
                aside = f"{self.path}.damaged-{int(time.time())}"
                log.warning(
                    "saltext-raft cache: %s is not a usable database (%s); moved to %s, the "
                    "local copy is rebuilt from the Raft state",
                    self.path,
                    exc,
                    aside,
                )
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path + suffix)
                self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # transactions are ours: one per batch
            check_same_thread=False,  # made on the loop thread, used on the writer thread
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        try:
            os.chmod(self.path, 0o600)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            # After a checkpoint resets the WAL, cut the file back to this size (bytes) rather
            # than keep the high-water mark of a burst of writes on disk.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                # An unknown layout (a newer or older release): derived state, start over.
                conn.execute("DROP TABLE IF EXISTS keys")
                conn.execute("DROP TABLE IF EXISTS banks")
            for stmt in SCHEMA:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("INSERT OR IGNORE INTO banks VALUES ('', NULL, '')")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def transaction(self):
        """Everything inside becomes visible to readers at once, at the end (nested: part of
        the outer transaction, as a rebuild is inside the writer's batch)."""
        db = self._db()
        if db.in_transaction:
            yield
            return
        db.execute("BEGIN")
        try:
            yield
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. a full disk)
                db.execute("ROLLBACK")
            self._banks.clear()  # the rolled-back inserts may have been remembered
            raise
        db.execute("COMMIT")

    def _ensure_bank(self, db, bank: str) -> None:
        if bank not in self._banks:
            db.executemany("INSERT OR IGNORE INTO banks VALUES (?, ?, ?)", _lineage(bank))
            self._banks.add(bank)

    @staticmethod
    def slot(bank: str, key: str) -> tuple[str, str]:
        """Where ``bank``/``key`` lives: two names with the same slot are the same key."""
        return norm_bank(bank), key

    def store(self, bank: str, key: str, value: bytes, ts: int) -> None:
        # The same names as the localfs layout accepts, so the layouts never disagree.
        check_key(bank, key)
        db = self._db()
        bank = norm_bank(bank)
        self._ensure_bank(db, bank)
        db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)", (bank, key, value, ts))

    def write_slots(self, items) -> None:
        """Write store and key-flush jobs, each on its own ``slot`` (so in any order), whose
        names the caller has checked: the writer's batches, two statements per batch."""
        db = self._db()
        stores, deletes = [], []
        for (bank, key), job in items:
            if job[0] == "store":
                self._ensure_bank(db, bank)
                stores.append((bank, key, job[3], job[4]))
            else:
                deletes.append((bank, key))
        if stores:
            db.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)", stores)
        if deletes:
            db.executemany("DELETE FROM keys WHERE bank = ? AND key = ?", deletes)

    def flush(self, bank: str, key: str | None) -> None:
        check_flush(bank, key)
        db = self._db()
        bank = norm_bank(bank)
        if key is not None:
            db.execute("DELETE FROM keys WHERE bank = ? AND key = ?", (bank, key))
            return
        lo, hi = _below(bank)  # never the root: check_flush refuses it
        db.execute("DELETE FROM keys WHERE bank = ? OR (bank >= ? AND bank < ?)", (bank, lo, hi))
        db.execute("DELETE FROM banks WHERE bank = ? OR (bank >= ? AND bank < ?)", (bank, lo, hi))
        self._banks = {b for b in self._banks if not (b == bank or lo <= b < hi)}

    def rebuild(self, banks: list[str], items: list[tuple[str, str, bytes, int]]) -> dict:
        """Make the database hold exactly ``banks`` and ``items`` (bank, key, value, updated),
        in one transaction: readers see the old copy until the new one is complete."""
        db = self._db()
        with self.transaction():
            before = db.execute("SELECT count(*) FROM keys").fetchone()[0]
            db.execute("DELETE FROM keys")
            db.execute("DELETE FROM banks WHERE bank != ''")
            self._banks.clear()
            for bank in banks:
                self._ensure_bank(db, norm_bank(bank))
            db.executemany(
                "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)",
                ((norm_bank(b), k, v, ts) for b, k, v, ts in items),
            )
        self._report_foreign()
        return {"written": len(items), "deleted": before, "kept": 0}

    def _report_foreign(self) -> None:
        """Say (at every rebuild, i.e. every engine start) what an earlier copy left behind:
        a master upgraded from a release whose default layout was ``localfs`` (or switched
        by ``raft_cache_backend``) finds its old tree here. Not deleted here:
        ``raft_cache_dir`` is the operator's choice of directory, and what lies in it beside
        the database is theirs to remove; nor read: this database was just rebuilt from the
        Raft state, which holds every committed write."""
        foreign = foreign_entries(self.root)
        if not foreign:
            return
        tmpdir = tmp_dir(self.root)
        also = f" and the directory {tmpdir}" if os.path.isdir(tmpdir) else ""
        log.warning(
            "saltext-raft cache: the local copy %s is now in the sqlite layout (%s, the default "
            "since 0.1.0 when raft_cache_backend is not set), rebuilt from the Raft state with "
            "every committed key. It also holds %d entries that the sqlite layout does not use "
            "(%s), probably the earlier localfs-layout copy: nothing reads them; delete "
            "them%s to free the space (keep %s and its -wal/-shm files), or set "
            "'raft_cache_backend: localfs' in this master's config and restart it to keep the "
            "localfs layout (the engine then rebuilds that tree and removes the database)",
            self.root,
            DB_NAME,
            len(foreign),
            ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
            also,
            DB_NAME,
        )


class SqliteReader:
    """The driver side: reads of one database, one connection per thread and process (a
    connection must not cross a fork, and Salt 3008 runs handlers on several threads).

    A database that does not exist yet (the engine has not started) reads as empty, as
    ``localfs`` reads a missing directory."""

    def __init__(self, root: str):
        self.path = db_path(os.path.abspath(root))
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection | None:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn, local.pid = None, os.getpid()
        if local.conn is None:
            if not os.path.exists(self.path):
                return None
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute("PRAGMA query_only=1")
            local.conn = conn
        return local.conn

    def _one(self, sql: str, args: tuple):
        db = self._db()
        if db is None:
            return None
        try:
            return db.execute(sql, args).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, schema not written yet
                return None
            raise

    def _all(self, sql: str, args: tuple) -> list:
        db = self._db()
        if db is None:
            return []
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def fetch(self, bank: str, key: str) -> bytes | None:
        row = self._one("SELECT value FROM keys WHERE bank = ? AND key = ?", (norm_bank(bank), key))
        return None if row is None else row[0]

    def updated(self, bank: str, key: str) -> int | None:
        row = self._one(
            "SELECT updated FROM keys WHERE bank = ? AND key = ?", (norm_bank(bank), key)
        )
        return None if row is None else row[0]

    def contains(self, bank: str, key: str | None = None) -> bool:
        bank = norm_bank(bank)
        if key is None:
            return self._one("SELECT 1 FROM banks WHERE bank = ?", (bank,)) is not None
        return self._one("SELECT 1 FROM keys WHERE bank = ? AND key = ?", (bank, key)) is not None

    def list(self, bank: str) -> list[str]:
        """Keys and sub-banks of ``bank``, sorted ([] for a bank that does not exist)."""
        bank = norm_bank(bank)
        rows = self._all(
            "SELECT key FROM keys WHERE bank = ?1 UNION SELECT name FROM banks WHERE parent = ?1",
            (bank,),
        )
        return sorted(r[0] for r in rows)
