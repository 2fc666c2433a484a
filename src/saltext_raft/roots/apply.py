"""Writing the replicated roots into this master's trees: safely, atomically, keeping local edits.

Lives here: :class:`RootsApplier` (one pass: make each configured tree show the committed
manifest) and the file operations it needs, all relative to directory descriptors opened
without following links. Must not live here: when a pass runs (:mod:`.service`), the sync
(:mod:`.sync`), name rules (:mod:`.layout`).

Where the copy lives: in the first directory of each environment of this master's own
``file_roots`` / ``pillar_roots`` (``config.targets``), so Salt serves it with no other change;
the tree becomes a view of the log. Why there and not a separate directory under ``cachedir``:
the master that is the source and the ones that receive then have the same configuration,
any master can become the source, and the source's own tree already is the view (its pass
writes nothing).

Theory of operation, per file of a tree:

- **Local edits are never lost silently.** This master records, for each path it wrote, the hash
  it wrote (``applied.json`` under ``<cachedir>/saltext_raft_roots``). A path is written only if
  it is absent, or holds what this master last wrote there, or already holds the new content;
  a path is deleted only if it holds what this master last wrote there. Anything else
  (a file edited by hand, a file that was there before the roots were replicated, a directory
  or link in the way) is left as it is and reported as **diverged** (``salt-run raft.status``,
  ``roots``; a warning in the log), until an operator puts the replicated version back or
  removes it. Files the manifest never named are not touched.
- **A file is never seen half-written.** Its bytes go to a temporary file in the same directory
  (``O_CREAT|O_EXCL|O_NOFOLLOW``, never an existing name), mode set with ``fchmod`` (0644, or
  0755 for executables; 0600/0700 if the source was not readable by others: nothing else is
  carried, :func:`settled_mode` for a file already holding the content), ``fsync``; the chunks
  are checked against the manifest's size and SHA-256 before the rename, then the directory is
  ``fsync``-ed. A torn, missing or duplicated chunk fails that check: the file keeps its old
  content and the pass reports it (and tries again on the next pass). A temporary file left by
  a pass killed mid-write is removed by the next write or delete in its directory.
- **Nothing outside the root is reached.** Every path is checked (``layout.check_relpath``)
  and opened component by component with ``O_NOFOLLOW|O_DIRECTORY`` from the root's descriptor:
  a symbolic link planted in a receiving tree is refused, never followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
import time

from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.roots import layout

log = logging.getLogger(__name__)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
#: Paths listed per category in a pass's report (the counts are always complete).
REPORT_LIMIT = 50


class InTheWay(OSError):
    """A link, file or special file stands where the path needs a directory or a file."""


class BlobBroken(ValueError):
    """A blob's chunks do not reassemble into the manifest's content."""


def _open_dirs(root_fd: int, parts: list[str], create: bool) -> int:
    """A descriptor of the directory ``parts`` below ``root_fd``, never following a link
    (``create``: making the missing ones 0755). The caller closes it."""
    fd = os.dup(root_fd)
    for part in parts:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, FileNotFoundError):
                raise
            raise InTheWay(
                f"{'/'.join(parts)}: {part!r} is not a directory (or is a link)"
            ) from None
        os.close(fd)
        fd = nxt
    return fd


def current_state(dir_fd: int, name: str):
    """What ``name`` in ``dir_fd`` holds: None (absent), ``("file", sha, size, mtime_ns)`` or
    ``("other", kind)`` for a link, directory or special file (never opened)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "link"
            if stat.S_ISLNK(st.st_mode)
            else "directory"
            if stat.S_ISDIR(st.st_mode)
            else "special file"
        )
        return ("other", kind)
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        h = hashlib.sha256()
        while True:
            block = os.read(fd, layout.CHUNK_BYTES)
            if not block:
                break
            h.update(block)
    finally:
        os.close(fd)
    return ("file", h.hexdigest(), st.st_size, st.st_mtime_ns)


def settled_mode(current: int, mode: int) -> int:
    """The mode a file that already holds the manifest's content gets (the source master's own
    tree, a file there before, or only the mode changed in the roots): execute bits where it is
    readable if ``mode`` is executable, none otherwise; no access for others if ``mode`` is
    private; no setuid, setgid or sticky bit. It never grants a read or write permission the
    file lacks (a 0600 file is not made 0644) and keeps the group's access the operator gave."""
    perms = current & 0o666
    if not mode & 0o004:
        perms &= 0o770
    if mode & 0o111:
        perms |= (perms & 0o444) >> 2
    return perms


def _remove_leftovers(dir_fd: int) -> None:
    """Unlink the temporary files a pass killed mid-write left in this directory (only this
    master's engine writes them, one pass at a time): a partial file in the tree would be
    listed and served by Salt's fileserver. Run before each write or delete in a directory,
    so the next pass that touches it (the interrupted file is written again) cleans it."""
    with os.scandir(dir_fd) as it:
        names = [
            e.name
            for e in it
            if e.name.startswith(layout.TEMP_PREFIX)
            and e.name.endswith(".tmp")
            and e.is_file(follow_symlinks=False)
        ]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


#: What a record keeps of a file this master wrote, after its hash (the mode last).
_STAT_KEY = ("size", "mtime_ns", "ctime_ns", "inode", "mode")


def _stat_key(st: os.stat_result) -> list:
    """What a record keeps of a file this master wrote, besides its hash (:data:`_STAT_KEY`)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, stat.S_IMODE(st.st_mode)]


def load_record(state_path: str) -> dict:
    """This master's record of what it wrote: ``{kind: {env: {path: [sha, size, mtime_ns,
    ctime_ns, inode, mode]}}}``; empty if absent or unreadable (also read by the sync, to
    tell whether this master has applied the committed manifests)."""
    try:
        with open(state_path, "rb") as fh:
            state = json.loads(fh.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("saltext-raft roots: %s unreadable (%s); starting afresh", state_path, exc)
        return {}
    return state if isinstance(state, dict) else {}


class RootsApplier:
    """Makes this master's trees show the committed manifests (see the module docstring).

    ``reader``: ``fetch(bank, key)`` on this master's local copy of the replicated cache.
    ``targets``: ``{kind: {env: directory}}``. ``state_path``: this master's record."""

    def __init__(self, reader, targets: dict, state_path: str, max_file_bytes: int):
        self.reader = reader
        self.targets = targets
        self.state_path = state_path
        self.max_file_bytes = max_file_bytes
        self._warned: set[str] = set()

    # -- the record of what this master wrote ----------------------------------------------
    def load_state(self) -> dict:
        return load_record(self.state_path)

    def save_state(self, state: dict) -> None:
        ensure_private_dir(os.path.dirname(self.state_path), "the roots state directory")
        atomic_write(
            self.state_path, json.dumps(state, sort_keys=True).encode(), prefix=".applied-"
        )

    # -- one pass ----------------------------------------------------------------------------
    def apply(self) -> dict:
        """One pass over every kind and environment; returns the report (counts, and up to
        :data:`REPORT_LIMIT` paths each of ``written``, ``deleted``, ``diverged``, ``failed``,
        and ``skipped_envs`` the manifest has but this master does not configure)."""
        report = {
            "written": [],
            "deleted": [],
            "diverged": [],
            "failed": [],
            "skipped_envs": [],
            "counts": {"written": 0, "deleted": 0, "diverged": 0, "failed": 0, "in_sync": 0},
            "at": time.time(),
        }
        state = self.load_state()
        for kind, envs in self.targets.items():
            try:
                manifest = layout.check_manifest(
                    kind, self.reader.fetch(layout.MANIFESTS_BANK, kind), self.max_file_bytes
                )
            except layout.BadRootPath as exc:
                self._note(report, "failed", f"{kind}: manifest refused: {exc}")
                continue
            kind_state = state.setdefault(kind, {})
            for env in sorted(set(manifest) | set(kind_state)):
                if env not in envs:
                    if env in manifest:
                        report["skipped_envs"].append(f"{kind}/{env}")
                    continue
                files = manifest.get(env, {})
                env_state = kind_state.get(env, {})
                try:
                    kind_state[env] = self._apply_env(
                        f"{kind}/{env}", envs[env], files, env_state, report
                    )
                except OSError as exc:  # the root itself: missing parent, not a directory...
                    self._note(report, "failed", f"{kind}/{env}: {envs[env]}: {exc}")
        self.save_state(state)
        counts = report["counts"]
        if counts["written"] or counts["deleted"] or counts["diverged"] or counts["failed"]:
            log.info(
                "saltext-raft roots: applied (%d written, %d deleted, %d diverged, %d failed)",
                counts["written"],
                counts["deleted"],
                counts["diverged"],
                counts["failed"],
            )
        # One warning per diverged path, not one per pass (a pass rechecks every minute; on
        # the source master an edit not synced yet shows as diverged until the sync).
        for name in report["diverged"]:
            if name not in self._warned:
                log.warning("saltext-raft roots: %s", name)
        self._warned = set(report["diverged"])
        return report

    @staticmethod
    def _note(report: dict, what: str, text: str) -> None:
        report["counts"][what] += 1
        if len(report[what]) < REPORT_LIMIT:
            report[what].append(text)

    def _apply_env(self, where: str, root: str, files: dict, prev: dict, report: dict) -> dict:
        """Make ``root`` show ``files``; returns the new record of this environment."""
        os.makedirs(root, 0o755, exist_ok=True)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        record: dict = {}
        try:
            for path in sorted(set(files) | set(prev)):
                name = f"{where}/{path}"
                try:
                    kept = self._apply_path(
                        root_fd, path, files.get(path), prev.get(path), name, report
                    )
                except (OSError, BlobBroken, layout.BadRootPath) as exc:
                    self._note(report, "failed", f"{name}: {exc}")
                    kept = prev.get(path)
                if kept is not None:
                    record[path] = kept
        finally:
            os.close(root_fd)
        return record

    def _apply_path(self, root_fd, path, want, prev, name, report):
        """Apply one path; returns its new record entry (None: no longer recorded)."""
        layout.check_relpath(path)
        parts = path.split("/")
        try:
            dir_fd = _open_dirs(root_fd, parts[:-1], create=want is not None)
        except FileNotFoundError:
            return None  # to delete, and its directory is gone: nothing to do
        except InTheWay as exc:
            self._note(report, "diverged", f"{name}: {exc}; left as it is")
            return prev
        try:
            leaf = parts[-1]
            if prev is not None and self._stat_matches(dir_fd, leaf, prev):
                current = ("file", prev[0])
            else:
                current = current_state(dir_fd, leaf)
            cur_sha = current[1] if current is not None and current[0] == "file" else None
            prev_sha = prev[0] if prev is not None else None
            if want is None:  # deleted from the manifest
                if current is None:
                    return None
                if cur_sha is not None and cur_sha == prev_sha:
                    _remove_leftovers(dir_fd)
                    os.unlink(leaf, dir_fd=dir_fd)
                    os.fsync(dir_fd)
                    self._note(report, "deleted", name)
                    self._remove_empty_dirs(root_fd, parts[:-1])
                    return None
                self._note(
                    report, "diverged", f"{name}: deleted in the roots, but edited here; kept"
                )
                return prev
            sha, size, mode = want
            if cur_sha == sha:
                # A mode this master did not set (chmod by hand, on the source master the
                # next sync's content) is left as it is, like a content edit.
                st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
                set_by_hand = (
                    prev is not None
                    and prev[0] == sha
                    and len(prev) == 1 + len(_STAT_KEY)
                    and prev[-1] != stat.S_IMODE(st.st_mode)
                )
                if not set_by_hand:
                    self._ensure_mode(dir_fd, leaf, mode)
                report["counts"]["in_sync"] += 1
                record = self._record(dir_fd, leaf, sha)
                if set_by_hand:
                    record[-1] = prev[-1]  # still the mode this master set
                return record
            if current is None or (cur_sha is not None and cur_sha == prev_sha):
                self._write(dir_fd, leaf, sha, size, mode)
                self._note(report, "written", name)
                return self._record(dir_fd, leaf, sha)
            what = "edited here" if cur_sha is not None else f"a {current[1]} is in the way"
            self._note(
                report, "diverged", f"{name}: changed in the roots, but {what}; not overwritten"
            )
            return prev
        finally:
            os.close(dir_fd)

    @staticmethod
    def _stat_matches(dir_fd: int, leaf: str, prev) -> bool:
        """The file is still the inode this master recorded, with the same size, mtime and
        ctime (so it is unchanged and need not be hashed again). The ctime matters: an edit
        that keeps the size and puts the mtime back (``touch -r``, ``cp -p``, a restore) would
        pass on size and mtime alone and be overwritten as if it were this master's file;
        nobody can set the ctime back. A record without them (older format) never matches."""
        try:
            st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and _stat_key(st) == list(prev[1:])

    @staticmethod
    def _record(dir_fd: int, leaf: str, sha: str) -> list:
        st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        return [sha, *_stat_key(st)]

    @staticmethod
    def _ensure_mode(dir_fd: int, leaf: str, mode: int) -> None:
        st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        mode = settled_mode(stat.S_IMODE(st.st_mode), mode)
        if stat.S_IMODE(st.st_mode) != mode:
            fd = os.open(
                leaf, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
            )
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def _write(self, dir_fd: int, leaf: str, sha: str, size: int, mode: int) -> None:
        """Reassemble blob ``sha`` into a temporary file, check it, rename it over ``leaf``."""
        bank = layout.blob_bank(sha)
        info = self.reader.fetch(bank, layout.INFO_KEY)
        if not isinstance(info, dict) or info.get("size") != size:
            raise BlobBroken(f"content {sha[:12]} is not (yet) complete in the local copy")
        chunks = info.get("chunks")
        if chunks != layout.chunk_count(size):
            raise BlobBroken(f"content {sha[:12]}: {chunks!r} chunks for {size} bytes")
        _remove_leftovers(dir_fd)
        tmp = f"{layout.TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            h = hashlib.sha256()
            written = 0
            for index in range(chunks):
                block = layout.chunk_bytes(self.reader.fetch(bank, layout.chunk_key(index)))
                if not block:
                    raise BlobBroken(f"content {sha[:12]}: chunk {index} missing")
                if written + len(block) > size:
                    raise BlobBroken(f"content {sha[:12]}: chunks longer than {size} bytes")
                h.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(block)
            if written != size or h.hexdigest() != sha:
                raise BlobBroken(
                    f"content {sha[:12]}: chunks reassemble to {written} bytes with another hash "
                    "(torn, missing or duplicated chunk); file left as it was"
                )
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        os.rename(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)

    @staticmethod
    def _remove_empty_dirs(root_fd: int, parts: list[str]) -> None:
        """Remove the now empty directories of a deleted file, deepest first (a directory
        with anything left in it stays)."""
        for depth in range(len(parts), 0, -1):
            try:
                parent = _open_dirs(root_fd, parts[: depth - 1], create=False)
            except OSError:
                return
            try:
                os.rmdir(parts[depth - 1], dir_fd=parent)
            except OSError:
                return
            finally:
                os.close(parent)
