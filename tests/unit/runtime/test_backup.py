"""Backup files: exact round trip, and a clear refusal of anything torn, damaged or foreign."""

from __future__ import annotations

import os

import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.runtime.backup import MAGIC
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import BackupError
from saltext_raft.runtime.backup import decode
from saltext_raft.runtime.backup import encode
from saltext_raft.runtime.backup import read_file
from saltext_raft.runtime.backup import write_file

MEMBERS = Membership(voters=frozenset({"m1", "m2"}), addresses=(("m1", "a:1"), ("m2", "b:2")))
BACKUP = Backup(
    "c1", "m1", 1_795_000_000.5, Snapshot(SnapshotMeta(42, 7, MEMBERS), b"\x00st" * 999)
)


def test_a_backup_round_trips_exactly():
    assert decode(encode(BACKUP)) == BACKUP
    summary = BACKUP.summary()
    assert summary["snapshot_index"] == 42 and summary["taken_on"] == "m1"
    assert summary["membership"]["voters"] == ["m1", "m2"] and summary["state_bytes"] == 2997


@pytest.mark.parametrize("cut", [1, 32, 33, 500])
def test_a_torn_file_is_refused(cut):
    blob = encode(BACKUP)
    with pytest.raises(BackupError, match="damaged or incomplete"):
        decode(blob[:-cut], "b.bak")


def test_a_changed_byte_is_refused():
    blob = bytearray(encode(BACKUP))
    blob[len(MAGIC) + 40] ^= 0x01
    with pytest.raises(BackupError, match="b.bak is damaged or incomplete"):
        decode(bytes(blob), "b.bak")


def test_foreign_files_are_named_for_what_they_are():
    with pytest.raises(BackupError, match="not a saltext-raft backup file"):
        decode(b"PK\x03\x04 a zip file", "x.zip")
    with pytest.raises(BackupError, match="a backup format this version does not know"):
        decode(b"saltext-raft backup 9\n...", "new.bak")


def test_write_and_read_a_file(tmp_path):
    path = str(tmp_path / "raft.bak")
    size = write_file(path, BACKUP)
    assert size == os.path.getsize(path) and read_file(path) == BACKUP
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["raft.bak"]  # no temp file left behind


def test_write_refuses_what_would_lose_or_misplace_a_file(tmp_path):
    path = str(tmp_path / "raft.bak")
    write_file(path, BACKUP)
    with pytest.raises(BackupError, match="exists; pass overwrite=True"):
        write_file(path, BACKUP)
    newer = Backup("c1", "m2", 1_795_000_100.0, BACKUP.snapshot)
    write_file(path, newer, overwrite=True)
    assert read_file(path) == newer
    with pytest.raises(BackupError, match="must be absolute"):
        write_file("raft.bak", BACKUP)
    with pytest.raises(BackupError, match="does not exist"):
        write_file(str(tmp_path / "nowhere" / "raft.bak"), BACKUP)


def test_a_failed_write_says_so_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "raft.bak")
    write_file(path, BACKUP)

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BackupError, match="No space left on device"):
        write_file(path, Backup("c1", "m2", 1.0, BACKUP.snapshot), overwrite=True)
    monkeypatch.undo()
    assert read_file(path) == BACKUP and os.listdir(tmp_path) == ["raft.bak"]


def test_read_file_errors_are_clear(tmp_path):
    with pytest.raises(BackupError, match="cannot read .*missing.bak"):
        read_file(str(tmp_path / "missing.bak"))
