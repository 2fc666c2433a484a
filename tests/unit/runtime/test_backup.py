"""Backup files: exact round trip, and a clear refusal of anything torn, damaged, foreign or
modified without the cluster secret."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.kv import KVStateMachine
from saltext_raft.kv import encode_command
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import Command
from saltext_raft.runtime.backup import MAGIC
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import BackupError
from saltext_raft.runtime.backup import decode
from saltext_raft.runtime.backup import encode

SECRET = b"backup-test-secret-backup-test-secret-!!"
MEMBERS = Membership(voters=frozenset({"m1", "m2"}), addresses=(("m1", "a:1"), ("m2", "b:2")))
BACKUP = Backup(
    "c1", "m1", 1_795_000_000.5, Snapshot(SnapshotMeta(42, 7, MEMBERS), b"\x00st" * 999)
)


def test_a_backup_round_trips_exactly():
    assert decode(encode(BACKUP, SECRET), SECRET) == BACKUP
    summary = BACKUP.summary()
    assert summary["snapshot_index"] == 42 and summary["taken_on"] == "m1"
    assert summary["membership"]["voters"] == ["m1", "m2"] and summary["state_bytes"] == 2997


@pytest.mark.parametrize("cut", [1, 32, 33, 64, 65, 500])
def test_a_torn_file_is_refused(cut):
    blob = encode(BACKUP, SECRET)
    with pytest.raises(BackupError, match="damaged or incomplete"):
        decode(blob[:-cut], SECRET, "b.bak")


def test_a_changed_byte_is_refused():
    blob = bytearray(encode(BACKUP, SECRET))
    blob[len(MAGIC) + 40] ^= 0x01
    with pytest.raises(BackupError, match="b.bak is damaged or incomplete"):
        decode(bytes(blob), SECRET, "b.bak")


def test_a_modified_backup_with_its_checksum_recomputed_is_refused():
    """Regression (issue 18, L6): a backup carried only a SHA-256, so anyone who could write the
    file could change it (here: plant an accepted minion key) and recompute the digest."""
    kv = KVStateMachine()
    kv.apply(encode_command(Command(STORE, "saltext_raft_keys/keys", "web1", b"accepted-web1")))
    original = Backup(
        "c1", "m1", 1_795_000_000.0, Snapshot(SnapshotMeta(3, 1, MEMBERS), kv.snapshot())
    )
    blob = encode(original, SECRET)

    # The attacker: decode the body, add a key, re-encode, recompute the SHA-256, keep the
    # rest of the file as it was.
    body = blob[len(MAGIC) : -64]
    obj = msgpack.unpackb(body, raw=False)
    forged_kv = KVStateMachine()
    forged_kv.restore(obj["data"])
    forged_kv.apply(
        encode_command(Command(STORE, "saltext_raft_keys/keys", "rogue", b"accepted-rogue"))
    )
    obj["data"] = forged_kv.snapshot()
    new_body = MAGIC + msgpack.packb(obj, use_bin_type=True)
    forged = new_body + hashlib.sha256(new_body).digest() + blob[-32:]
    with pytest.raises(BackupError, match="not authenticated by the cluster secret"):
        decode(forged, SECRET, "forged.bak")
    # and one taken under another secret is refused the same way
    with pytest.raises(BackupError, match="taken under another secret"):
        decode(blob, b"another-cluster-secret-another-cluster!", "other.bak")
    assert decode(blob, SECRET).snapshot.data == kv.snapshot()


def test_an_unauthenticated_version_1_backup_is_refused_with_the_reason():
    with pytest.raises(BackupError, match="version 1 backup, which carries no authentication"):
        decode(b"saltext-raft backup 1\n" + b"\x00" * 64, SECRET, "old.bak")


def test_foreign_files_are_named_for_what_they_are():
    with pytest.raises(BackupError, match="not a saltext-raft backup file"):
        decode(b"PK\x03\x04 a zip file", SECRET, "x.zip")
    with pytest.raises(BackupError, match="a backup format this version does not know"):
        decode(b"saltext-raft backup 9\n...", SECRET, "new.bak")
