"""Backup files: one node's snapshot (state machine at an applied index, and the membership in
force there) in one self-checking file.

Lives here: the format (:func:`encode`, :func:`decode`). Must not live here: taking the
snapshot (``RaftRuntime.backup_snapshot``), restoring it into storage (``runtime/recovery.py``),
reading and writing the files on a master (``master/recover.py``), Salt.

Format (version 2): the magic line ``saltext-raft backup 2\\n``, a msgpack map (``cluster_id``,
``node_id``, ``created`` (Unix time), ``index``, ``term``, ``membership``, ``data``), the
SHA-256 of everything before it, then an HMAC-SHA256 of everything before that under the
backup key (``transport.crypto.derive_backup_key``: derived from the cluster secret under its
own label). A torn or damaged file fails the digest check and is refused whole: a backup is
either restored exactly or not at all. A file changed on purpose, its digest recomputed (keys
added to the cache, a membership rewritten), fails the HMAC: only holders of the cluster secret
can make a backup this code restores. Version 1 files (digest only) are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import msgpack

from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.transport.crypto import derive_backup_key

#: How every version's magic line starts: a backup of another version, not no backup at all.
MAGIC_PREFIX = b"saltext-raft backup "
MAGIC = MAGIC_PREFIX + b"2\n"
#: The unauthenticated format of earlier builds.
_MAGIC_V1 = b"saltext-raft backup 1\n"
_DIGEST = 32
_MAC = 32


class BackupError(ValueError):
    """A file is not a usable backup; the message says why."""


@dataclass(frozen=True)
class Backup:
    cluster_id: str
    node_id: str  #: the master it was taken on
    created: float
    snapshot: Snapshot

    def summary(self) -> dict:
        meta = self.snapshot.meta
        return {
            "cluster_id": self.cluster_id,
            "taken_on": self.node_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "snapshot_index": meta.index,
            "snapshot_term": meta.term,
            "membership": meta.membership.to_dict(),
            "state_bytes": len(self.snapshot.data),
        }


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(derive_backup_key(secret), signed, hashlib.sha256).digest()


def encode(backup: Backup, secret: bytes) -> bytes:
    """The file's bytes, authenticated with a key derived from the cluster ``secret``."""
    meta = backup.snapshot.meta
    body = MAGIC + msgpack.packb(
        {
            "cluster_id": backup.cluster_id,
            "node_id": backup.node_id,
            "created": backup.created,
            "index": meta.index,
            "term": meta.term,
            "membership": meta.membership.to_dict(),
            "data": backup.snapshot.data,
        },
        use_bin_type=True,
    )
    signed = body + hashlib.sha256(body).digest()
    return signed + _mac(secret, signed)


def decode(blob: bytes, secret: bytes, source: str = "the backup") -> Backup:
    """The backup in ``blob`` once its digest and its HMAC under ``secret`` check out."""
    if blob.startswith(_MAGIC_V1):
        raise BackupError(
            f"{source} is a version 1 backup, which carries no authentication; this version "
            "restores only backups authenticated with the cluster secret: take a new one with "
            "salt-run raft.backup"
        )
    if not blob.startswith(MAGIC):
        if blob.startswith(MAGIC_PREFIX):
            raise BackupError(f"{source} is in a backup format this version does not know")
        raise BackupError(f"{source} is not a saltext-raft backup file")
    signed, mac = blob[:-_MAC], blob[-_MAC:]
    body, digest = signed[:-_DIGEST], signed[-_DIGEST:]
    if len(blob) < len(MAGIC) + _DIGEST + _MAC or hashlib.sha256(body).digest() != digest:
        raise BackupError(
            f"{source} is damaged or incomplete (checksum mismatch, {len(blob)} bytes): it was "
            "cut short or changed after it was written; use another backup"
        )
    if not hmac.compare_digest(_mac(secret, signed), mac):
        raise BackupError(
            f"{source} is not authenticated by the cluster secret: it was changed after it was "
            "written (its checksum recomputed), or it was taken under another secret (pass the "
            "secret file in force when it was taken with --backup-secret); refused"
        )
    try:
        obj = msgpack.unpackb(body[len(MAGIC) :], raw=False)
        meta = SnapshotMeta(
            int(obj["index"]), int(obj["term"]), Membership.from_dict(obj["membership"])
        )
        backup = Backup(
            str(obj["cluster_id"]),
            str(obj["node_id"]),
            float(obj["created"]),
            Snapshot(meta, bytes(obj["data"])),
        )
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise BackupError(f"{source} has a valid checksum but unreadable contents: {exc}") from None
    if meta.index < 1 or meta.term < 1:
        raise BackupError(f"{source} holds no state (snapshot index {meta.index})")
    return backup
