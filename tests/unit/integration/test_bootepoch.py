"""The persisted boot epoch: it only grows across restarts, even when the clock steps back, and
a damaged file is refused with a message that says what to do."""

from __future__ import annotations

import os
import stat

import pytest

import saltext_raft.transport.crypto as crypto
from saltext_raft.integration.bootepoch import EPOCH_FILENAME
from saltext_raft.integration.bootepoch import EpochFileError
from saltext_raft.integration.bootepoch import claim_epoch
from saltext_raft.transport.crypto import FrameCrypto
from saltext_raft.transport.crypto import FrameRejected

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
