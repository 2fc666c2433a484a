"""Backup files on a master (master/recover.py): written only inside the backup directory
(issue 18, L5), whole or not at all, durably, never over an existing file by accident; read
back exactly when the cluster secret authenticates them, or refused with the reason."""

from __future__ import annotations

import os
import signal
import stat
import threading

import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.master.recover import TEMP_SUFFIX
from saltext_raft.master.recover import read_backup
from saltext_raft.master.recover import write_backup
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import BackupError

SECRET = b"backup-file-test-secret-backup-file-test"
MEMBERS = Membership(voters=frozenset({"m1"}), addresses=(("m1", "a:1"),))
BACKUP = Backup("c1", "m1", 1_795_000_000.5, Snapshot(SnapshotMeta(42, 7, MEMBERS), b"state"))


@pytest.fixture
def backups(tmp_path):
    return str(tmp_path / "backups")


def write(backups, path, backup=BACKUP, **kw):
    return write_backup(path, backup, secret=SECRET, backup_dir=backups, **kw)


def test_write_and_read_a_file(backups):
    path, size = write(backups, "raft.bak")
    assert path == os.path.join(backups, "raft.bak")
    assert size == os.path.getsize(path) and read_backup(path, SECRET) == BACKUP
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert stat.S_IMODE(os.stat(backups).st_mode) == 0o700  # the directory is created 0700
    assert os.listdir(backups) == ["raft.bak"]  # no temp file left behind
    assert write(backups, os.path.join(backups, "abs.bak"))[0] == os.path.join(backups, "abs.bak")


@pytest.mark.parametrize(
    "path",
    [
        "/etc/cron.d/raft",  # absolute, elsewhere
        "../escape.bak",
        "sub/../../escape.bak",
        "./raft.bak",
        "sub/raft.bak",  # a sub-directory: only files directly in the backup directory
        "",
    ],
)
def test_paths_outside_the_backup_directory_are_refused(tmp_path, backups, path):
    """Regression (issue 18, L5): ``salt-run raft.backup path=...`` created or replaced any
    file as the master's user (root), also for users granted the runner through eauth."""
    with pytest.raises(BackupError) as info:
        write(backups, path)
    assert "backup" in str(info.value)
    assert not os.path.exists(tmp_path / "escape.bak")
    assert not os.path.exists(os.path.join(backups, "raft.bak"))


def test_a_symlink_in_the_backup_directory_is_not_written_through(tmp_path, backups):
    write(backups, "first.bak")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, os.path.join(backups, "link.bak"))
    with pytest.raises(BackupError, match="symbolic link"):
        write(backups, "link.bak", overwrite=True)
    assert victim.read_bytes() == b"precious"


def test_a_symlinked_or_shared_backup_directory_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, tmp_path / "backups")
    with pytest.raises(BackupError, match="symbolic link"):
        write(str(tmp_path / "backups"), "raft.bak")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(BackupError, match="writable by group or others"):
        write(str(shared), "raft.bak")
    assert not os.listdir(target) and not os.listdir(shared)


def test_write_refuses_to_replace_a_file_by_accident(backups):
    path, _ = write(backups, "raft.bak")
    with pytest.raises(BackupError, match="exists; pass overwrite=True"):
        write(backups, "raft.bak")
    newer = Backup("c1", "m2", 1_795_000_100.0, BACKUP.snapshot)
    write(backups, "raft.bak", newer, overwrite=True)
    assert read_backup(path, SECRET) == newer


def test_a_failed_write_says_so_and_leaves_the_old_file(backups, monkeypatch):
    path, _ = write(backups, "raft.bak")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BackupError, match="No space left on device"):
        write(backups, "raft.bak", Backup("c1", "m2", 1.0, BACKUP.snapshot), overwrite=True)
    monkeypatch.undo()
    assert read_backup(path, SECRET) == BACKUP and os.listdir(backups) == ["raft.bak"]


def test_read_file_errors_are_clear(tmp_path):
    with pytest.raises(BackupError, match="cannot read .*missing.bak"):
        read_backup(str(tmp_path / "missing.bak"), SECRET)


def test_a_fifo_named_as_the_backup_to_restore_is_refused_at_once_not_waited_on(tmp_path):
    """Red team 2026-12-07: ``recover --restore /tmp/x.bak`` opened the file with a plain
    ``open``; a FIFO another local user planted at that name (``/tmp`` is anyone's) held the
    restore for ever, waiting for a writer. The read runs in a thread here so that the old
    code's wait ends: the test opens the FIFO for writing afterwards if it is still held."""
    fifo = str(tmp_path / "salt-raft.bak")
    os.mkfifo(fifo, 0o644)
    outcome = []

    def restore():
        try:
            outcome.append(read_backup(fifo, SECRET))
        except BackupError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=restore, daemon=True)
    reader.start()
    reader.join(10)
    held = reader.is_alive()
    if held:  # release the old code's open() so that the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert not held, "read_backup waited on a FIFO for a writer"
    assert len(outcome) == 1 and isinstance(outcome[0], BackupError)
    assert "not a regular file" in str(outcome[0]) and fifo in str(outcome[0])


def test_a_device_named_as_the_backup_is_refused_without_reading_it(tmp_path):
    """A character device (``/dev/zero``) would be read until memory ran out."""
    with pytest.raises(BackupError, match="/dev/zero is not a regular file"):
        read_backup("/dev/zero", SECRET)


def crash_mid_backup(backups, path) -> str:
    """Run a backup in a child process that dies (``SIGKILL``) once the file's bytes are
    written, before the rename: a master that crashed mid-backup. Returns the temp file it
    left in ``backups``."""
    before = set(os.listdir(backups)) if os.path.isdir(backups) else set()
    pid = os.fork()
    if pid == 0:  # the master that crashes
        try:
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
            write(backups, path)
        finally:
            os._exit(3)  # pylint: disable=protected-access  (not reached: killed first)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    (left,) = set(os.listdir(backups)) - before
    return os.path.join(backups, left)


def test_a_temp_file_left_by_a_crashed_backup_is_private_and_the_next_backup_removes_it(
    backups,
):
    """Red team 2026-12-07: a crash mid-backup left ``.<name>.<random>`` beside the target for
    ever (the whole cluster state, one more copy per crash). The next backup removes the temp
    files of backups whose writer is gone, and nothing else."""
    write(backups, "first.bak")
    left = crash_mid_backup(backups, "raft.bak")
    assert stat.S_IMODE(os.lstat(left).st_mode) == 0o600  # never readable by others
    assert not os.path.exists(os.path.join(backups, "raft.bak"))
    # files that are no temp of a dead backup writer: kept (the last: one being written now)
    others = [".raft.bak.x", "raft.bak.tmp", ".notes", os.path.basename(left) + ".keep"]
    others.append(f".raft.bak.{os.getpid()}.abc{TEMP_SUFFIX}")
    for name in others:
        with open(os.path.join(backups, name), "wb") as fh:
            fh.write(b"mine")
    write(backups, "second.bak")
    assert not os.path.exists(left)
    assert sorted(os.listdir(backups)) == sorted(["first.bak", "second.bak", *others])
    assert read_backup(os.path.join(backups, "second.bak"), SECRET) == BACKUP
