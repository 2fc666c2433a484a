"""The ``localfs`` layout of the replicated cache's local copy (``raft_cache_backend: localfs``;
the default before 0.1.0, ``sqlite`` since).

Lives here: the layout's path rule (:func:`bank_dir`, :func:`key_path`:
``<root>/<bank>/<key>.p``), :class:`LocalfsMirror` (writes a copy of the cache that Salt's
``localfs`` driver can read, mtime = the command's timestamp), :func:`read` (one key, as the
driver's ``fetch`` reads it) and :class:`MirrorPathError`. Must not live here: the writer
thread and the state machine (``replicated/mirror.py``), the ``sqlite`` layout
(``replicated/sqlite.py``), listing a bank (the driver lists with Salt's own ``localfs``
functions), the read's checks (the driver).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
import stat

import salt.payload
from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import BadName
from saltext_raft.kv.machine import check_flush
from saltext_raft.kv.machine import check_key
from saltext_raft.kv.machine import check_name
from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.replicated.config import TMP_SUFFIX
from saltext_raft.replicated.config import tmp_dir

log = logging.getLogger(__name__)

SUFFIX = ".p"


def bank_dir(root: str, bank: str) -> str:
    """The directory of ``bank`` below ``root``: Salt's ``localfs`` rule (the bank normalised,
    "" for the root), for the mirror's writes and the driver's reads alike."""
    return os.path.join(root, os.path.normpath(bank)) if bank else root


def key_path(root: str, bank: str, key: str) -> str:
    """Where ``bank``/``key`` lives below ``root``."""
    return os.path.join(bank_dir(root, bank), key + SUFFIX)


#: What ``open`` raises when ``bank``/``key`` has no file: no such name, a bank where the key
#: should be, or a key where a bank should be. Salt's ``localfs`` returns ``{}`` for each.
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def read(root: str, bank: str, key: str):
    """The value of ``bank``/``key`` in the copy at ``root``, ``{}`` when absent: what Salt's
    ``localfs.fetch`` returns for a file this mirror wrote, for a third of its cost. That
    function joins with ``salt.utils.path.join``, tests ``isfile`` before opening and opens
    through ``salt.utils.files.fopen``: 19 of its 24 us (2026-12-07, ``bench cache``'s
    100-byte values). It also falls back to a ``<bank>.p`` file holding a dict of keys, an
    old layout this mirror never writes; here that file is a *key* of the parent bank, and
    the fallback would answer with a piece of it (or raise ``KeyError``). Unlike Salt's, it
    neither follows a symbolic link at the key nor waits on a FIFO there (it refuses both, and
    anything else that is not a regular file, with a ``SaltCacheError``: the mirror writes
    none of them). The names are the caller's to check (``check_name``)."""
    path = key_path(root, bank, key)
    try:
        # Non-blocking: a FIFO planted where a key belongs must not hold the worker for ever
        # (Salt's localfs answers {} for it after its isfile). No link at the key is followed.
        fd = os.open(path, _READ_FLAGS)
    except _ABSENT:
        return {}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            exc = "a symbolic link (the engine never writes symbolic links there; not followed)"
        raise SaltCacheError(_unreadable(bank, key, path, exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                return {}  # a bank where the key would be (see _ABSENT)
            raise SaltCacheError(_unreadable(bank, key, path, "not a regular file"))
        data = _read_all(fd, st.st_size)
    except OSError as exc:
        raise SaltCacheError(_unreadable(bank, key, path, exc)) from None
    finally:
        os.close(fd)
    if not data:
        return None  # what salt.payload.load returns for an empty file
    try:
        return salt.payload.loads(data, encoding="utf-8")
    except Exception as exc:  # pylint: disable=broad-except
        raise SaltCacheError(_unreadable(bank, key, path, exc)) from None


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_all(fd: int, size: int) -> bytes:
    """The file's bytes: ``size`` (its ``fstat`` size) in one read when it has not grown."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _unreadable(bank: str, key: str, path: str, why) -> str:
    return (
        f"raft cache: cannot read {bank}/{key} in the local copy ({path}): {why}; "
        "restarting the raft engine rebuilds the copy from the replicated state"
    )


def _holdable(banks: list[str], items: list) -> tuple[list, list, int]:
    """``banks`` and ``items`` without the names :func:`check_name` (:func:`check_key` for an
    item) refuses, logged, and how many items were left out."""

    def holds(bank: str, key: str | None = None) -> bool:
        try:
            if key is None:
                check_name("bank", bank, allow_empty=True)
            else:
                check_key(bank, key)
        except BadName as exc:
            log.warning("saltext-raft cache: not in the local copy: %s", exc)
            return False
        return True

    ok_items = [item for item in items if holds(item[0], item[1])]
    return [bank for bank in banks if holds(bank)], ok_items, len(items) - len(ok_items)


class MirrorPathError(BadName):
    """A bank or key the mirror refuses: a bad name (:func:`check_name`, the state machine's
    rule) or a path through a symbolic link."""


class LocalfsMirror:
    """A ``localfs``-compatible tree under ``root``; temp files live in ``root + '.tmp'`` so a
    reader listing a bank never sees them (``localfs.list`` would report them as sub-banks)."""

    def __init__(self, root: str):
        self.root = ensure_private_dir(root, "the raft cache directory (raft_cache_dir)")
        self.tmpdir = ensure_private_dir(
            tmp_dir(self.root),
            f"the raft cache's temp directory (raft_cache_dir + '{TMP_SUFFIX}')",
        )
        #: Directories below the root already checked to be real directories (never symlinks):
        #: nobody else can write in the private root, so one check per process is enough.
        self._dirs: set[str] = set()
        # Temp names: unique per process (pid) and per write (counter), so creating one never
        # needs ``mkstemp``'s random names and retries. ``itertools.count`` is thread-safe.
        self._tmp_prefix = os.path.join(self.tmpdir, f"w{os.getpid()}-")
        self._tmp_seq = itertools.count()

    @staticmethod
    def transaction():
        """Files appear one by one: nothing to group (the ``sqlite`` layout groups a batch)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Nothing held open between writes."""

    def bank_dir(self, bank: str) -> str:
        return bank_dir(self.root, bank)

    def key_path(self, bank: str, key: str) -> str:
        return key_path(self.root, bank, key)

    def slot(self, bank: str, key: str) -> str:
        """Where ``bank``/``key`` lives: two names with the same slot are the same key."""
        return self.key_path(bank, key)

    def _components(self, path: str):
        """``path``'s directories from just below the root down to ``path`` itself."""
        rel = os.path.relpath(path, self.root)
        if rel == ".":
            return
        cur = self.root
        for part in rel.split(os.sep):
            cur = os.path.join(cur, part)
            yield cur

    def _makedirs(self, path: str) -> None:
        """Create ``path`` below the root, refusing to pass through anything but a real
        directory: a symlinked bank would make the engine write where the link points."""
        if path in self._dirs:
            return
        for cur in self._components(path):
            if cur in self._dirs:
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(cur, 0o700)
            self._check_real_dir(cur)
            self._dirs.add(cur)

    @staticmethod
    def _check_real_dir(path: str) -> None:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise MirrorPathError(
                f"{path} in the raft cache directory is {kind}: refusing to write through it "
                "(the engine never creates links there; remove it, the next rebuild restores "
                "the bank)"
            )

    def _reachable(self, path: str) -> bool:
        """Whether ``path``'s parents below the root are all real directories (so removing
        ``path`` cannot reach outside the root); False if one is missing."""
        for cur in self._components(os.path.dirname(path)):
            try:
                self._check_real_dir(cur)
            except FileNotFoundError:
                return False
        return True

    def store(self, bank: str, key: str, value: bytes, ts: int) -> None:
        check_key(bank, key)
        path = self.key_path(bank, key)
        self._makedirs(self.bank_dir(bank))
        self._makedirs(os.path.dirname(path))  # a key may contain "/" (localfs allows it)
        # readers see the old file or the new one, never a partial one
        atomic_write(path, value, tmp_path=f"{self._tmp_prefix}{next(self._tmp_seq)}", mtime=ts)

    def flush(self, bank: str, key: str | None) -> None:
        check_flush(bank, key)
        if key is not None:
            path = self.key_path(bank, key)
            if self._reachable(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        target = self.bank_dir(bank)  # never the root: check_flush refuses it
        if self._reachable(target):
            self._remove(target)
        self._dirs = {d for d in self._dirs if not (d == target or d.startswith(target + os.sep))}

    @staticmethod
    def _remove(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def rebuild(self, banks: list[str], items: list[tuple[str, str, bytes, int]]) -> dict:
        """Make the tree hold exactly ``banks`` (directories) and ``items`` (bank, key, value,
        updated): rewrite keys whose bytes or mtime differ, delete everything else. A name the
        copy cannot hold (committed by an older build, before ``check_name`` refused it) is
        skipped with a warning, not the end of the rebuild: every other key is written."""
        banks, items, refused = _holdable(banks, items)
        want_files = {self.key_path(b, k): (v, ts) for b, k, v, ts in items}
        want_dirs = {self.bank_dir(b) for b in banks} | {self.root}
        for path in want_files:  # parents of keys that contain "/"
            d = os.path.dirname(path)
            while d.startswith(self.root) and d not in want_dirs:
                want_dirs.add(d)
                d = os.path.dirname(d)
        stats = {"written": 0, "deleted": 0, "kept": 0}
        if refused:
            stats["refused"] = refused
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in dirnames:  # os.walk lists a link to a directory here, not below
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    log.warning(
                        "saltext-raft cache: removed the symbolic link %s -> %s from the local "
                        "copy (the engine never creates links there and does not follow them)",
                        path,
                        os.readlink(path),
                    )
                    os.unlink(path)
                    stats["deleted"] += 1
            for name in filenames:
                path = os.path.join(dirpath, name)
                if path not in want_files or os.path.islink(path):
                    os.unlink(path)
                    stats["deleted"] += 1
            if dirpath not in want_dirs:
                try:
                    os.rmdir(dirpath)  # empty by now unless a wanted file lies below
                except OSError:
                    pass
        self._dirs.clear()
        for d in sorted(want_dirs):
            self._makedirs(d)
        for b, k, v, ts in items:
            path = self.key_path(b, k)
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and int(st.st_mtime) == ts and st.st_size == len(v):
                    with open(path, "rb") as fh:
                        if fh.read() == v:
                            stats["kept"] += 1
                            continue
            except FileNotFoundError:
                pass
            self.store(b, k, v, ts)
            stats["written"] += 1
        for name in os.listdir(self.tmpdir):  # a crash mid-write leaves temp files behind
            self._remove(os.path.join(self.tmpdir, name))
        return stats
