"""Atomic file replacement for the files the engine shares with other processes on the host
(the readiness file, the cache driver's local mirror). No Salt import."""

from __future__ import annotations

import contextlib
import os
import tempfile


def atomic_write(
    path: str,
    data: bytes,
    *,
    tmp_dir: str | None = None,
    prefix: str = "tmp",
    tmp_path: str | None = None,
    mode: int | None = None,
    mtime: float | None = None,
    durable: bool = False,
) -> None:
    """Write ``data`` to a temp file and rename it over ``path``: readers never see a partial
    file (as ``salt.utils.atomicfile.atomic_open`` does). The temp file is ``tmp_path`` when
    the caller has a name no one else uses (the mirror: one per process and write, cheaper than
    ``mkstemp``'s random names), else a new one in ``tmp_dir`` (default: ``path``'s directory);
    either must be on the same file system as ``path``. ``mode`` and ``mtime`` are set before
    the rename, so the file appears with them. With ``durable`` the file is fsynced before the
    rename and its directory after it, so the new contents survive a crash (backups); the
    mirror and the readiness file are rebuilt at start and skip that cost. Plain ``os`` calls on
    the descriptor: the mirror does this once per stored key on every master."""
    if tmp_path is None:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=tmp_dir or os.path.dirname(path))
    else:
        tmp = tmp_path
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:
                os.fchmod(fd, mode)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class LockHeld(OSError):
    """Another process holds the lock; ``pid`` is what it wrote in the file (0 if unknown)."""

    def __init__(self, path: str, pid: int):
        self.path = path
        self.pid = pid
        super().__init__(f"{path} is locked by process {pid or 'unknown'}")


class ProcessLock:
    """An exclusive ``flock`` on ``path``, held until :meth:`release` or the process ends.

    The engine holds it on its state directory for as long as it runs, and the offline
    recovery command takes it before it touches the Raft storage, so neither can run while the
    other does. The lock lives with the open file: the kernel drops it when the process dies,
    so a crashed engine leaves nothing to clean up. The holder's pid is written into the file
    for the error message only."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> ProcessLock:
        import fcntl  # pylint: disable=import-outside-toplevel

        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).split()[0])
            except (OSError, ValueError, IndexError):
                pid = 0
            os.close(fd)
            raise LockHeld(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
