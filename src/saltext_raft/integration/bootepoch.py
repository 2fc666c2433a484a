"""The transport's boot epoch, persisted so that it only grows across restarts.

Lives here: reading the previous boot's epoch from the node's private state directory, choosing
this boot's (``transport.crypto.new_epoch(after=...)``: the rule itself lives there) and writing
it durably *before* the transport seals its first frame.
Must not live here: the frame format, replay checks (``transport.crypto``), where the state
directory is (the engine's settings, or the standalone node's ``--data-dir``).

Why: receivers refuse every epoch older than a sender's current one. Without a persisted epoch a
sender that restarted with its clock behind would be locked out, which is why receivers used to
adopt an older epoch after 30 s of silence, and that window let a recorded ``PROPOSE`` from a
follower's previous boot be appended a second time (docs/transport.md, "Replay protection").
Cost: one small durable write (fsync of the file and its directory) per start.
"""

from __future__ import annotations

import os

from saltext_raft.integration.fileutil import atomic_write
from saltext_raft.transport.crypto import new_epoch

#: The file in the state directory that holds the last boot epoch (decimal, one line).
EPOCH_FILENAME = "transport.epoch"


class EpochFileError(Exception):
    """The epoch file exists but cannot be read as an epoch: say where and what to do."""


def claim_epoch(state_dir: str) -> int:
    """This boot's epoch: above every epoch an earlier boot of this node used (as recorded in
    ``state_dir``), saved durably before it is returned. ``state_dir`` must exist and belong to
    this node alone (the engine holds its lock while it runs)."""
    path = os.path.join(state_dir, EPOCH_FILENAME)
    previous = _read(path)
    epoch = new_epoch(after=previous)
    atomic_write(path, b"%d\n" % epoch, mode=0o600, durable=True, prefix=".epoch-")
    return epoch


def _read(path: str) -> int:
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return -1
    text = raw.strip()
    if not text.isdigit() or not 0 <= int(text) < 1 << 63:
        raise EpochFileError(
            f"{path} does not hold a boot epoch (found {raw[:32]!r}). It is written atomically, "
            "so something else changed it. Remove the file and start again: this node then "
            "takes its epoch from the clock, and peers accept it once their own clock-based "
            "record of this node is older (restart them if this node's frames are dropped as "
            "old_epoch)."
        )
    return int(text)
