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
) -> None:
    """Write ``data`` to a temp file and rename it over ``path``: readers never see a partial
    file (as ``salt.utils.atomicfile.atomic_open`` does). The temp file is ``tmp_path`` when
    the caller has a name no one else uses (the mirror: one per process and write, cheaper than
    ``mkstemp``'s random names), else a new one in ``tmp_dir`` (default: ``path``'s directory);
    either must be on the same file system as ``path``. ``mode`` and ``mtime`` are set before
    the rename, so the file appears with them. Plain ``os`` calls on the descriptor: the mirror
    does this once per stored key on every master."""
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
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
