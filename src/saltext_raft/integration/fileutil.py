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
    mode: int | None = None,
    mtime: float | None = None,
) -> None:
    """Write ``data`` to a temp file and rename it over ``path``: readers never see a partial
    file (as ``salt.utils.atomicfile.atomic_open`` does). ``tmp_dir`` must be on the same file
    system as ``path`` (default: its directory). ``mode`` and ``mtime`` are set before the
    rename, so the file appears with them."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=tmp_dir or os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
