"""Files and directories the engine shares with other processes on the host.

Lives here: atomic file replacement (the readiness file, the cache driver's local mirror,
backups), the engine's process lock, the one rule for a directory the engine trusts
(:func:`ensure_private_dir`, :func:`check_private_dir`): what it reads there decides which
minion keys are accepted and whether the master serves, so nobody but the master's user may
have put anything in it; the one rule for reading a key file that Salt may be rewriting
(:func:`complete_pem`, :data:`CLUSTER_KEY_SETTLE`); and which filesystem a path is on
(:func:`filesystem_type`, :data:`NETWORK_FILESYSTEMS`). Must not live here: what goes into
those files. No Salt import.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile

#: Seconds a reader of Salt's cluster key pair (``cluster.pem``/``cluster.pub``) gives a
#: rewrite in progress to finish before it takes a missing or incomplete file for what it
#: finds. Salt 3008.4's join handshake unlinks both files on a running master and writes them
#: again, within milliseconds (a descheduled writer takes longer). Used by the key driver's
#: reads (``replicated/keystore.py``) and the engine's check (``master/clustersecrets.py``).
CLUSTER_KEY_SETTLE = 2.0
#: Salt's names of the cluster key pair inside ``cluster_pki_dir`` (``salt/crypt.py``
#: ``MasterKeys``): the engine's default secret and cluster-key check read them, and the keys
#: driver's reads of them wait out a rewrite (:data:`CLUSTER_KEY_SETTLE`).
CLUSTER_PEM_FILE = "cluster.pem"
CLUSTER_PUB_FILE = "cluster.pub"
CLUSTER_KEY_FILES = (CLUSTER_PEM_FILE, CLUSTER_PUB_FILE)


#: A PEM ``-----BEGIN <label>-----`` line (the label in group 1).
_PEM_BEGIN = re.compile(r"^-----BEGIN ([^\r\n]+?)-----\r?$", re.MULTILINE)


def complete_pem(data) -> bool:
    """``data`` (text or bytes) holds a PEM block and its last block is closed: its
    ``-----END <label>-----`` line follows. A key file being rewritten can be empty or cut
    short (a prefix of the file). Text before or after the blocks does not count: Salt's key
    loaders accept it (``openssl`` writes ``Bag Attributes`` or a text dump before the block,
    an operator may add a comment), and waiting on it would cost every read the whole
    :data:`CLUSTER_KEY_SETTLE`. Only completeness is judged, not whether the key is usable
    (Salt's loader says that, as without this extension)."""
    if isinstance(data, bytes):
        data = data.decode("ascii", "replace")
    if not isinstance(data, str):
        return False
    begins = list(_PEM_BEGIN.finditer(data))
    if not begins:
        return False
    last = begins[-1]
    end = re.compile(rf"^-----END {re.escape(last.group(1))}-----\r?$", re.MULTILINE)
    closed = end.search(data, last.end())
    # a next block whose BEGIN line is itself cut short
    return closed is not None and "-----BEGIN" not in data[closed.end() :]


#: Filesystem types (as ``/proc/self/mountinfo`` names them) that are shared over a network:
#: SQLite's WAL mode, which the ``sqlite`` layout of the local copy uses, needs memory shared
#: through the file system between the processes of one host and is not supported there.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "9p",
        "afs",
        "fuse.sshfs",
        "fuse.s3fs",
        "davfs",
        "fuse.davfs",
    }
)
MOUNTINFO = "/proc/self/mountinfo"


def _mount_field(text: str) -> str:
    """A mount point as mountinfo writes it: space, tab, newline and backslash octal-escaped."""
    return (
        text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def filesystem_type(path: str, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` (resolved) is on, from the mount with the longest
    mount point that contains it; None when that cannot be told (no ``/proc``, not Linux)."""
    try:
        with open(mountinfo or MOUNTINFO, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        try:
            point = _mount_field(fields[4])
            fstype = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue  # not a mountinfo line
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type


class UnsafeDirectory(OSError):
    """A directory the engine would trust is not private to the master's user: it is a
    symlink, not a directory, owned by another user, or writable by group or others."""

    def __init__(self, path: str, why: str, fix: str):
        super().__init__(f"{path}: {why}; {fix}")
        self.path = path
        self.why = why


def _unsafe(path: str, what: str, st: os.stat_result) -> UnsafeDirectory | None:
    """Why ``st`` (an ``lstat`` of ``path``) is not a private directory, or None."""
    euid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    fix = (
        f"remove it (it may have been created by someone else) or, if it is yours, make it a "
        f"directory owned by uid {euid} with mode 0700 (chown {euid} {path}; chmod 0700 {path}); "
        f"the engine creates it 0700 when it is missing"
    )
    if stat.S_ISLNK(st.st_mode):
        return UnsafeDirectory(
            path, f"{what} is a symbolic link (to {os.readlink(path)!r}), refused", fix
        )
    if not stat.S_ISDIR(st.st_mode):
        return UnsafeDirectory(path, f"{what} is not a directory", fix)
    if st.st_uid != euid:
        return UnsafeDirectory(
            path,
            f"{what} is owned by uid {st.st_uid} (mode {mode:04o}), not by uid {euid} that the "
            "master runs as, refused",
            fix,
        )
    if mode & 0o022:
        return UnsafeDirectory(
            path, f"{what} has mode {mode:04o}: writable by group or others, refused", fix
        )
    return None


def _check_parent(path: str, what: str) -> None:
    """A parent others may write to without the sticky bit (``/dev/shm`` and ``/tmp`` have it)
    lets them rename our directory away and put theirs in its place."""
    parent = os.path.dirname(path) or "."
    st = os.stat(parent)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX and st.st_uid != 0:
        raise UnsafeDirectory(
            path,
            f"the parent of {what}, {parent}, has mode {mode:04o} (writable by others without "
            "the sticky bit), so another user could replace it",
            "put it in a directory only root and the master's user can write to",
        )


def check_private_dir(path: str, what: str = "the directory") -> bool:
    """True if ``path`` is a private directory, False if it does not exist; raises
    :class:`UnsafeDirectory` otherwise. For readers: creates nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    problem = _unsafe(path, what, st)
    if problem is not None:
        raise problem
    return True


def ensure_private_dir(path: str, what: str = "the directory") -> str:
    """Create ``path`` with mode 0700 (its parents as ``makedirs`` does) or accept it as it is
    if it already exists and is private; raise :class:`UnsafeDirectory` otherwise. A
    pre-existing directory is never "repaired" (chown/chmod): whatever another user put in it
    stays untrusted. Returns the absolute path."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _check_parent(path, what)
    with contextlib.suppress(FileExistsError):  # lost a race: the lstat below judges
        os.mkdir(path, 0o700)
    check_private_dir(path, what)
    return path


def atomic_write(
    path: str,
    data: bytes,
    *,
    tmp_dir: str | None = None,
    prefix: str = "tmp",
    suffix: str = "",
    tmp_path: str | None = None,
    mode: int | None = None,
    mtime: float | None = None,
    durable: bool = False,
) -> None:
    """Write ``data`` to a temp file and rename it over ``path``: readers never see a partial
    file (as ``salt.utils.atomicfile.atomic_open`` does). The temp file is ``tmp_path`` when
    the caller has a name no one else uses (the mirror: one per process and write, cheaper than
    ``mkstemp``'s random names), else a new one (``prefix``, random, ``suffix``, mode 0600) in
    ``tmp_dir`` (default: ``path``'s directory); either must be on the same file system as
    ``path``. ``mode`` and ``mtime`` are set before the rename, so the file appears with them.
    With ``durable`` the file is fsynced before the rename and its directory after it, so the
    new contents survive a crash (backups); the mirror and the readiness file are rebuilt at
    start and skip that cost. Plain ``os`` calls on the descriptor: the mirror does this once
    per stored key on every master."""
    if tmp_path is None:
        fd, tmp = tempfile.mkstemp(
            prefix=prefix, suffix=suffix, dir=tmp_dir or os.path.dirname(path)
        )
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

        # The lock's directory is the engine's state directory (the readiness file, the Raft
        # storage's banks): whoever could write there could open the gate or rewrite the log.
        ensure_private_dir(os.path.dirname(self.path) or ".", "the engine's state directory")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
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
