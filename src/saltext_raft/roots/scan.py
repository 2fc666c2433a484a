"""Reading a source tree for the roots store without following a symbolic link.

Lives here: :func:`scan_tree` (every regular file under a root: path, SHA-256, size, mode, and
everything refused with the reason) and :func:`read_chunks` (a file's bytes, chunk by chunk,
checked against what the scan saw). Must not live here: the cache, the receiving side, Salt.

What is refused, with its path and the reason, and never read: a symbolic link (wherever it
points: one pointing outside the root would hand out that file, ``/etc/shadow`` say, to every
master and minion; one pointing inside would make two paths of one file), a FIFO, socket or
device (reading a FIFO blocks the scan), a file over the size cap, a name the store cannot carry
(control characters). A sync that finds anything refused sends nothing (:mod:`.sync`): a
partial tree would delete the refused files on every other master.

Files are opened with ``O_NOFOLLOW`` relative to their directory's descriptor, and the
descriptor is checked with ``fstat``: a file swapped for a link or a FIFO between the listing
and the open is refused, not followed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.roots import layout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
)


@dataclass(frozen=True)
class ScannedFile:
    sha: str
    size: int
    mode: int  # already layout.file_mode()


@dataclass
class ScanResult:
    files: dict = field(default_factory=dict)  # relpath -> ScannedFile
    refused: list = field(default_factory=list)  # (relpath, reason)


class SourceChanged(OSError):
    """A file changed between the scan and the read of its chunks."""


def _open_file(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{name}: not a regular file")
    return fd, st


def _hash_fd(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while True:
        block = os.read(fd, layout.CHUNK_BYTES)
        if not block:
            return h.hexdigest(), size
        h.update(block)
        size += len(block)


def _symlink_reason(root_real: str, dir_path: str, name: str) -> str:
    try:
        target = os.readlink(os.path.join(dir_path, name))
    except OSError:
        target = "?"
    resolved = os.path.realpath(os.path.join(dir_path, name))
    if os.path.commonpath([root_real, resolved]) != root_real:
        return f"a symbolic link pointing outside the root (to {target!r}): refused"
    return f"a symbolic link (to {target!r}): links are not replicated; copy the file instead"


def scan_tree(root: str, max_file_bytes: int) -> ScanResult:
    """Every regular file under ``root`` (see the module docstring). ``root`` itself may be a
    symbolic link (it is the operator's configuration); nothing below it is followed. A
    missing root raises ``FileNotFoundError``: an empty manifest would delete every file on
    every other master."""
    result = ScanResult()
    root_real = os.path.realpath(root)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        _scan_dir(root_fd, root_real, "", max_file_bytes, result)
    finally:
        os.close(root_fd)
    return result


def _scan_dir(dir_fd: int, root_real: str, rel: str, cap: int, result: ScanResult) -> None:
    dir_path = os.path.join(root_real, rel) if rel else root_real
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        relpath = f"{rel}/{name}" if rel else name
        if name.startswith(layout.TEMP_PREFIX):
            continue  # a receiving master's file in the making, never content
        try:
            layout.check_relpath(relpath)
        except layout.BadRootPath as exc:
            result.refused.append((relpath, str(exc)))
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we scanned
        if stat.S_ISLNK(st.st_mode):
            result.refused.append((relpath, _symlink_reason(root_real, dir_path, name)))
        elif stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                result.refused.append((relpath, f"directory not readable: {exc.strerror}"))
                continue
            try:
                _scan_dir(sub, root_real, relpath, cap, result)
            finally:
                os.close(sub)
        elif not stat.S_ISREG(st.st_mode):
            what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket or device"
            result.refused.append((relpath, f"{what}, not a regular file: refused"))
        elif st.st_size > cap:
            result.refused.append(
                (relpath, f"{st.st_size} bytes: over raft_roots_max_file_bytes ({cap})")
            )
        else:
            try:
                fd, fst = _open_file(dir_fd, name)
            except OSError as exc:
                result.refused.append((relpath, f"not readable as a regular file: {exc}"))
                continue
            try:
                sha, size = _hash_fd(fd)
            finally:
                os.close(fd)
            if size > cap:  # grew since the stat
                result.refused.append(
                    (relpath, f"{size} bytes: over raft_roots_max_file_bytes ({cap})")
                )
                continue
            result.files[relpath] = ScannedFile(sha, size, layout.file_mode(fst.st_mode))


def read_chunks(root: str, relpath: str, want: ScannedFile):
    """Yield the chunks of ``root/relpath`` (``layout.CHUNK_BYTES`` each), opening every
    component without following links; raise :class:`SourceChanged` if the bytes read are not
    the ones the scan hashed."""
    layout.check_relpath(relpath)
    parts = relpath.split("/")
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    try:
        for part in parts[:-1]:
            fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
        fd, _ = _open_file(fds[-1], parts[-1])
        fds.append(fd)
        h = hashlib.sha256()
        size = 0
        while True:
            block = os.read(fd, layout.CHUNK_BYTES)
            if block:
                # A short read mid-file (rare on a regular file) is topped up, so every chunk
                # but the last is CHUNK_BYTES long.
                while len(block) < layout.CHUNK_BYTES:
                    more = os.read(fd, layout.CHUNK_BYTES - len(block))
                    if not more:
                        break
                    block += more
            if not block:
                break
            h.update(block)
            size += len(block)
            if size > want.size:
                break
            yield block
        if size != want.size or h.hexdigest() != want.sha:
            raise SourceChanged(f"{relpath} changed while it was being sent; run the sync again")
    finally:
        for fd in reversed(fds):
            os.close(fd)
