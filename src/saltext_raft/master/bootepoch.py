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
import stat

from saltext_raft.master.fileutil import atomic_write
from saltext_raft.transport.crypto import MAX_EPOCH
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
    if previous >= MAX_EPOCH:
        raise EpochFileError(
            f"{path} holds {previous}, the highest boot epoch there is: no higher one is left "
            "for this boot. A node's epoch comes from its clock (the clock reaches this value in "
            "2248) and grows by one per boot only when the clock is behind, so this value was "
            "written by something else. " + _REMOVE
        )
    epoch = new_epoch(after=previous)
    atomic_write(path, b"%d\n" % epoch, mode=0o600, durable=True, prefix=".epoch-")
    return epoch


_REMOVE = (
    "Remove the file and start again: this node then takes its epoch from the clock, and peers "
    "accept it once their own clock-based record of this node is older (restart them if this "
    "node's frames are dropped as old_epoch)."
)


def _read(path: str) -> int:
    """The epoch in ``path`` (-1 if there is none). Only a regular file of this user counts:
    a symbolic link is not followed and a FIFO is not waited on (O_NOFOLLOW, O_NONBLOCK), and
    at most 64 bytes are read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except OSError as exc:  # ELOOP: a symbolic link
        raise EpochFileError(
            f"{path} cannot be read as a boot epoch ({exc.strerror}). {_REMOVE}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise EpochFileError(
                f"{path} is not a regular file of uid {os.geteuid()} (mode "
                f"{st.st_mode:o}, owner uid {st.st_uid}): this node writes it atomically as one, "
                f"so someone else put it there. {_REMOVE}"
            )
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    text = raw.strip()
    if not text.isdigit() or not 0 <= int(text) <= MAX_EPOCH:
        raise EpochFileError(
            f"{path} does not hold a boot epoch (found {raw[:32]!r}). It is written atomically, "
            f"so something else changed it. {_REMOVE}"
        )
    return int(text)
