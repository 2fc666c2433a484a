"""Backup files: exact round trip, and a clear refusal of anything torn, damaged or foreign."""

from __future__ import annotations

import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.runtime.backup import MAGIC
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import BackupError
from saltext_raft.runtime.backup import decode
from saltext_raft.runtime.backup import encode

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
