"""The persisted boot epoch: it only grows across restarts, even when the clock steps back, and
a damaged file is refused with a message that says what to do."""

from __future__ import annotations

import os
import stat

import pytest

import saltext_raft.transport.crypto as crypto
from saltext_raft.master.bootepoch import EPOCH_FILENAME
from saltext_raft.master.bootepoch import EpochFileError
from saltext_raft.master.bootepoch import claim_epoch
from saltext_raft.transport.crypto import MAX_EPOCH
from saltext_raft.transport.crypto import FrameCrypto
from saltext_raft.transport.crypto import FrameRejected
from tests.childpython import run_python

SECRET = b"0123456789abcdef0123456789abcdef"


def test_each_boot_gets_a_higher_epoch_even_with_the_clock_an_hour_behind(tmp_path, monkeypatch):
    first = claim_epoch(str(tmp_path))
    now = crypto.time.time_ns()
    monkeypatch.setattr(crypto.time, "time_ns", lambda: now - 3600 * 10**9)
    second = claim_epoch(str(tmp_path))
    third = claim_epoch(str(tmp_path))
    assert first < second < third
    path = tmp_path / EPOCH_FILENAME
    assert int(path.read_text()) == third
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [EPOCH_FILENAME]  # no temp file left


def test_a_restart_with_the_clock_behind_keeps_talking_and_old_frames_stay_dead(
    tmp_path, monkeypatch
):
    # The whole story on the wire: boot 1 records a frame, boot 2 (clock an hour behind) talks
    # to the same receiver, the recording from boot 1 is refused.
    receiver = FrameCrypto(SECRET, "cl", "b")
    boot1 = FrameCrypto(SECRET, "cl", "a", epoch=claim_epoch(str(tmp_path)))
    recorded = boot1.seal("b", b"propose x=1")
    receiver.open(boot1.seal("b", b"hello"), {"a"})
    now = crypto.time.time_ns()
    monkeypatch.setattr(crypto.time, "time_ns", lambda: now - 3600 * 10**9)
    boot2 = FrameCrypto(SECRET, "cl", "a", epoch=claim_epoch(str(tmp_path)))
    assert receiver.open(boot2.seal("b", b"back"), {"a"}) == ("a", b"back")
    with pytest.raises(FrameRejected) as info:
        receiver.open(recorded, {"a"})
    assert info.value.reason == "old_epoch"


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"-5\n", b"%d\n" % (1 << 63), b"1 2"])
def test_a_damaged_epoch_file_is_refused_and_left_as_it_was(tmp_path, content):
    path = tmp_path / EPOCH_FILENAME
    path.write_bytes(content)
    with pytest.raises(EpochFileError, match="Remove the file"):
        claim_epoch(str(tmp_path))
    assert path.read_bytes() == content


def test_the_last_epoch_is_used_once_then_the_next_boot_stops_with_the_way_out(tmp_path):
    """An epoch file at 2**63 - 2: the next boot takes the last epoch there is (and talks with
    it); the boot after that has none left. It used to stop with a bare ValueError ("no epoch
    left after ...") from deep in the transport; now the error names the file and what to do."""
    path = tmp_path / EPOCH_FILENAME
    path.write_bytes(b"%d\n" % (MAX_EPOCH - 1))
    last = claim_epoch(str(tmp_path))
    assert last == MAX_EPOCH
    receiver = FrameCrypto(SECRET, "cl", "b")
    assert receiver.open(FrameCrypto(SECRET, "cl", "a", epoch=last).seal("b", b"x"), {"a"})
    with pytest.raises(EpochFileError, match="highest boot epoch.*Remove the file"):
        claim_epoch(str(tmp_path))
    assert path.read_bytes() == b"%d\n" % MAX_EPOCH


def test_a_symbolic_link_at_the_epoch_file_is_not_followed(tmp_path):
    chosen = tmp_path / "chosen"
    chosen.write_bytes(b"%d\n" % MAX_EPOCH)  # what whoever planted the link wants us to read
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / EPOCH_FILENAME).symlink_to(chosen)
    with pytest.raises(EpochFileError, match="Remove the file"):
        claim_epoch(str(state))
    assert os.path.islink(state / EPOCH_FILENAME) and chosen.read_bytes() == b"%d\n" % MAX_EPOCH


def test_a_fifo_at_the_epoch_file_is_refused_at_once_not_waited_on(tmp_path):
    """Opening a FIFO for reading waits for a writer: a start would hang for ever. Run in a
    child process, so that the old code's hang ends at the timeout (the child is killed)."""
    os.mkfifo(tmp_path / EPOCH_FILENAME, 0o600)
    proc = run_python(
        [
            "-c",
            "import sys; from saltext_raft.master.bootepoch import claim_epoch\n"
            "try:\n    claim_epoch(sys.argv[1])\nexcept Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(3)",
            str(tmp_path),
        ],
        timeout=20,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("EpochFileError") and "not a regular file" in proc.stdout


def test_a_huge_epoch_file_is_read_only_as_far_as_an_epoch_goes(tmp_path):
    path = tmp_path / EPOCH_FILENAME
    with open(path, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse: only its first 64 bytes are ever read
    with pytest.raises(EpochFileError, match="does not hold a boot epoch"):
        claim_epoch(str(tmp_path))
    assert os.path.getsize(path) == 1 << 40
