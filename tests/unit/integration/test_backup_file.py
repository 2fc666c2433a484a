"""Backup files on a master (integration/recover.py): written whole or not at all, durably,
never over an existing file by accident; read back exactly, or refused with the reason."""

from __future__ import annotations

import os

import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.integration.recover import read_backup
from saltext_raft.integration.recover import write_backup
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import BackupError

MEMBERS = Membership(voters=frozenset({"m1"}), addresses=(("m1", "a:1"),))
BACKUP = Backup("c1", "m1", 1_795_000_000.5, Snapshot(SnapshotMeta(42, 7, MEMBERS), b"state"))


def test_write_and_read_a_file(tmp_path):
    path = str(tmp_path / "raft.bak")
    size = write_backup(path, BACKUP)
    assert size == os.path.getsize(path) and read_backup(path) == BACKUP
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["raft.bak"]  # no temp file left behind


def test_write_refuses_what_would_lose_or_misplace_a_file(tmp_path):
    path = str(tmp_path / "raft.bak")
    write_backup(path, BACKUP)
    with pytest.raises(BackupError, match="exists; pass overwrite=True"):
        write_backup(path, BACKUP)
    newer = Backup("c1", "m2", 1_795_000_100.0, BACKUP.snapshot)
    write_backup(path, newer, overwrite=True)
    assert read_backup(path) == newer
    with pytest.raises(BackupError, match="must be absolute"):
        write_backup("raft.bak", BACKUP)
    with pytest.raises(BackupError, match="does not exist"):
        write_backup(str(tmp_path / "nowhere" / "raft.bak"), BACKUP)


def test_a_failed_write_says_so_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "raft.bak")
    write_backup(path, BACKUP)

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BackupError, match="No space left on device"):
        write_backup(path, Backup("c1", "m2", 1.0, BACKUP.snapshot), overwrite=True)
    monkeypatch.undo()
    assert read_backup(path) == BACKUP and os.listdir(tmp_path) == ["raft.bak"]


def test_read_file_errors_are_clear(tmp_path):
    with pytest.raises(BackupError, match="cannot read .*missing.bak"):
        read_backup(str(tmp_path / "missing.bak"))
