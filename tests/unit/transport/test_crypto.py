"""Frame crypto: what a receiver must refuse, and the replay rules across sender restarts."""

from __future__ import annotations

import pytest

from saltext_raft.transport.codec import CodecError
from saltext_raft.transport.crypto import MAX_EPOCH
from saltext_raft.transport.crypto import FrameCrypto
from saltext_raft.transport.crypto import FrameRejected

SECRET = b"0123456789abcdef0123456789abcdef"
PEERS = {"a", "b", "c"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def pair(**kwargs):
    clock = Clock()
    a = FrameCrypto(SECRET, "cl", "a", clock=clock, **kwargs)
    b = FrameCrypto(SECRET, "cl", "b", clock=clock, **kwargs)
    return a, b, clock


def rejected(receiver, frame, known=PEERS) -> str:
    with pytest.raises(FrameRejected) as info:
        receiver.open(frame, known)
    return info.value.reason


@pytest.mark.parametrize("aead", ["chacha20poly1305", "aesgcm"])
def test_a_sealed_frame_opens_once_and_hides_the_plaintext(aead):
    a, b, _ = pair(aead=aead)
    frame = a.seal("b", b"hello raft")
    assert b"hello raft" not in frame
    assert b.open(frame, PEERS) == ("a", b"hello raft")
    assert rejected(b, frame) == "replay"


def test_forged_frame_with_the_wrong_key_is_refused():
    forger = FrameCrypto(b"another secret, same cluster id", "cl", "a")
    _, b, _ = pair()
    assert rejected(b, forger.seal("b", b"vote for me")) == "auth"


def test_frame_from_another_cluster_is_refused():
    other = FrameCrypto(SECRET, "other-cluster", "a")
    _, b, _ = pair()
    assert rejected(b, other.seal("b", b"x")) == "wrong_cluster"


def test_frame_addressed_to_another_receiver_is_refused():
    a, b, _ = pair()
    c = FrameCrypto(SECRET, "cl", "c")
    frame = a.seal("c", b"for c")
    assert rejected(b, frame) == "wrong_receiver"
    assert c.open(frame, PEERS) == ("a", b"for c")


def test_rewriting_the_receiver_in_the_header_breaks_authentication():
    # A frame a->c relabelled a->b (same length ids) must not open at b: the AAD and the key
    # both bind the receiver.
    a, b, _ = pair()
    frame = bytearray(a.seal("c", b"for c"))
    pos = frame.rindex(b"\x01c")
    frame[pos + 1] = ord("b")
    assert rejected(b, bytes(frame)) == "auth"


def test_tampering_with_any_byte_is_refused():
    a, b, _ = pair()
    frame = a.seal("b", b"payload to protect")
    for i in range(len(frame)):
        tampered = bytearray(frame)
        tampered[i] ^= 0x01
        with pytest.raises(FrameRejected):
            b.open(bytes(tampered), PEERS)
    assert b.open(frame, PEERS)[1] == b"payload to protect"  # the original still opens


def test_truncated_ciphertext_is_refused():
    a, b, _ = pair()
    frame = a.seal("b", b"payload")
    assert rejected(b, frame[:-1]) == "auth"
    assert rejected(b, frame[:30]) == "malformed"


def test_unknown_sender_is_refused_before_decryption():
    a, b, _ = pair()
    assert rejected(b, a.seal("b", b"x"), known={"c"}) == "unknown_sender"


def test_unknown_version_and_garbage():
    a, b, _ = pair()
    frame = bytearray(a.seal("b", b"x"))
    frame[3] = 2
    assert rejected(b, bytes(frame)) == "version"
    assert rejected(b, b"garbage" * 10) == "malformed"
    assert rejected(b, b"") == "malformed"


def test_oversized_frame_is_refused():
    a, b, _ = pair(max_frame_bytes=1024)
    assert rejected(b, a.seal("b", b"x" * 2000)) == "oversize"


def test_reordered_frames_within_the_window_are_accepted_once():
    a, b, _ = pair(replay_window=8)
    frames = [a.seal("b", bytes([i])) for i in range(10)]
    b.open(frames[9], PEERS)
    for i in (8, 5, 2):  # 2 is 7 behind the highest: inside an 8-frame window
        assert b.open(frames[i], PEERS)[1] == bytes([i])
        assert rejected(b, frames[i]) == "replay"
    assert rejected(b, frames[1]) == "replay"  # 8 behind: outside the window


def test_restarted_sender_with_a_higher_epoch_is_accepted_and_the_old_epoch_is_dead():
    a, b, _ = pair()
    old = [a.seal("b", b"old %d" % i) for i in range(3)]
    b.open(old[0], PEERS)
    restarted = FrameCrypto(SECRET, "cl", "a", epoch=a.epoch + 1)
    assert b.open(restarted.seal("b", b"new"), PEERS) == ("a", b"new")
    # Frames recorded from the previous boot, never delivered, must not be accepted now.
    assert rejected(b, old[1]) == "old_epoch"
    assert rejected(b, old[2]) == "old_epoch"


@pytest.mark.parametrize("seen_before", [True, False], ids=["after-contact", "first-contact"])
@pytest.mark.parametrize("jump", ["+10", "max-epoch", "max-u64"])
def test_a_higher_epoch_that_fails_authentication_changes_nothing(jump, seen_before):
    # A forger claims a's epoch is the last there is: were it adopted before authentication,
    # every genuine frame of a would be an old_epoch from then on.
    a, b, _ = pair()
    first = a.seal("b", b"1")
    if seen_before:
        b.open(first, PEERS)
    epoch = {"+10": a.epoch + 10, "max-epoch": MAX_EPOCH, "max-u64": (1 << 64) - 1}[jump]
    forger = FrameCrypto(b"not the cluster secret at all!!", "cl", "a", epoch=epoch)
    assert rejected(b, forger.seal("b", b"evil")) == "auth"
    if not seen_before:
        assert b.open(first, PEERS)[1] == b"1"
    assert b.open(a.seal("b", b"2"), PEERS)[1] == b"2"  # a's epoch is still current
    assert rejected(b, first) == "replay"


def test_an_older_epoch_is_refused_however_long_the_current_one_was_silent():
    # The attack (issue 18 residual): a PROPOSE recorded during a follower's previous boot,
    # replayed at the leader while the follower is down again. Epochs only grow (persisted,
    # new_epoch(after=...)), so the receiver never goes back to an older one, not even after an
    # hour of silence from the current epoch.
    a, b, clock = pair()
    a_old = FrameCrypto(SECRET, "cl", "a", epoch=500, clock=clock)
    recorded = a_old.seal("b", b"propose x=1")
    a_new = FrameCrypto(SECRET, "cl", "a", epoch=1000, clock=clock)
    b.open(a_new.seal("b", b"x"), PEERS)
    for silence in (29, 31, 3600):
        clock.now += silence
        assert rejected(b, recorded) == "old_epoch"
    assert b.open(a_new.seal("b", b"still here"), PEERS)[1] == b"still here"


def test_new_epoch_only_grows_past_the_previous_one_even_with_the_clock_behind(monkeypatch):
    import saltext_raft.transport.crypto as crypto  # pylint: disable=import-outside-toplevel

    previous = crypto.new_epoch()
    # the clock stepped back an hour across the restart
    now = crypto.time.time_ns()
    monkeypatch.setattr(crypto.time, "time_ns", lambda: now - 3600 * 10**9)
    assert crypto.new_epoch() < previous  # what an unpersisted epoch would be
    assert crypto.new_epoch(after=previous) == previous + 1
    with pytest.raises(ValueError):
        crypto.new_epoch(after=(1 << 63) - 1)


def test_keys_differ_per_direction():
    a, b, _ = pair()
    frame_ab = a.seal("b", b"x")
    # the same frame bytes cannot be reflected back to the sender
    assert rejected(a, frame_ab) == "wrong_receiver"


def test_short_secret_and_bad_ids_are_refused():
    with pytest.raises(ValueError):
        FrameCrypto(b"short", "cl", "a")
    with pytest.raises(ValueError):
        FrameCrypto(SECRET, "", "a")
    with pytest.raises(ValueError):
        FrameCrypto(SECRET, "cl", "x" * 256)


def test_a_huge_counter_jump_does_not_build_a_huge_window():
    # Regression: the window bitmap was shifted by the counter gap before masking, so one
    # authenticated frame with counter 2**63 would have allocated an int of 2**63 bits.
    a, b, _ = pair()
    b.open(a.seal("b", b"1"), PEERS)
    a._counter = (1 << 63) - 5  # pylint: disable=protected-access
    assert b.open(a.seal("b", b"2"), PEERS)[1] == b"2"
    assert b._replay[b"a"].mask == 1  # pylint: disable=protected-access


def test_sealing_for_an_unframeable_receiver_raises_codec_error():
    a, _, _ = pair()
    for receiver in ("", "x" * 256):
        with pytest.raises(CodecError):
            a.seal(receiver, b"x")


def test_a_large_frame_from_an_unknown_sender_costs_no_key_derivation(monkeypatch):
    """M1: the known-sender check runs before any HKDF or AEAD work; only small frames from
    unknown senders (a JOIN) are authenticated."""
    import saltext_raft.transport.crypto as crypto  # pylint: disable=import-outside-toplevel

    a, b, _ = pair()
    big = a.seal("b", b"x" * 100_000)
    small = a.seal("b", b"join")
    derived = []
    real = crypto._derive_frame_key  # pylint: disable=protected-access
    monkeypatch.setattr(
        crypto, "_derive_frame_key", lambda *args: derived.append(args) or real(*args)
    )
    with pytest.raises(FrameRejected) as info:
        b.open(big, {"c"}, unknown_max_bytes=4096)
    assert info.value.reason == "unknown_sender"
    assert derived == []
    assert b.open(small, {"c"}, unknown_max_bytes=4096) == ("a", b"join")
    assert len(derived) == 1


NEW_SECRET = b"fedcba9876543210fedcba9876543210"


def test_a_secret_rotation_keeps_both_sides_talking_and_then_refuses_the_old_secret():
    """Three phases, one node at a time: accept the new secret; send under it (accepting the
    old); drop the old. Frames flow both ways in every state in between."""
    a, b, _ = pair()

    def talk():
        assert b.open(a.seal("b", b"ab"), PEERS) == ("a", b"ab")
        assert a.open(b.seal("a", b"ba"), PEERS) == ("b", b"ba")

    talk()
    a.set_secrets(SECRET, [NEW_SECRET])  # phase 1, a first
    talk()
    b.set_secrets(SECRET, [NEW_SECRET])
    talk()
    a.set_secrets(NEW_SECRET, [SECRET])  # phase 2: a sends under the new secret
    talk()
    b.set_secrets(NEW_SECRET, [SECRET])
    talk()
    old_frame_sender = FrameCrypto(SECRET, "cl", "a", epoch=a.epoch + 1)  # still on the old one
    old_frame = old_frame_sender.seal("b", b"old")
    a.set_secrets(NEW_SECRET)  # phase 3: the old secret is dropped
    b.set_secrets(NEW_SECRET)
    talk()
    assert rejected(b, old_frame) == "auth"


def test_a_forged_frame_costs_one_pass_per_accepted_secret_and_no_more():
    import saltext_raft.transport.crypto as crypto  # pylint: disable=import-outside-toplevel

    a, b, _ = pair()
    talk = a.seal("b", b"x")
    b.open(talk, PEERS)
    forged = FrameCrypto(b"not-the-secret-not-the-secret!!!", "cl", "a", epoch=a.epoch + 1).seal(
        "b", b"y"
    )
    calls = []
    real = crypto._derive_frame_key  # pylint: disable=protected-access
    crypto._derive_frame_key = lambda *args: calls.append(args) or real(*args)
    try:
        # a forged frame in a fresh epoch: one derivation (and AEAD pass) per accepted secret
        assert rejected(b, forged) == "auth"
        assert len(calls) == 1
        b.set_secrets(SECRET, [NEW_SECRET])
        calls.clear()
        assert rejected(b, forged) == "auth"
        assert len(calls) == 2
    finally:
        crypto._derive_frame_key = real


def test_a_sender_whose_frames_keep_failing_gets_its_large_frames_throttled_unread(monkeypatch):
    """M1: each forged large frame costs an AEAD pass; past a budget of failed bytes per
    claimed sender, large frames from it are refused unread until the forging stops. Small
    ones (heartbeats, votes) still get through, and so do large ones once it has stopped."""
    import saltext_raft.transport.crypto as crypto  # pylint: disable=import-outside-toplevel

    a, b, clock = pair(max_frame_bytes=1 << 20, auth_failure_rate=1 << 20)
    b.open(a.seal("b", b"hello"), PEERS)
    mallory = FrameCrypto(b"not-the-secret-not-the-secret!!!", "cl", "a", epoch=a.epoch + 1)
    forged = mallory.seal("b", b"x" * 500_000)
    derived = []
    real = crypto._derive_frame_key  # pylint: disable=protected-access
    monkeypatch.setattr(
        crypto, "_derive_frame_key", lambda *args: derived.append(args) or real(*args)
    )
    reasons = [rejected(b, forged) for _ in range(10)]
    assert reasons[:3] == ["auth"] * 3 and set(reasons[3:]) == {"throttled"}, reasons
    assert len(derived) == 3  # no key derivation, no AEAD pass for the throttled ones
    assert b.open(a.seal("b", b"small"), PEERS) == ("a", b"small")  # small frames pass
    big = b"y" * 500_000
    assert rejected(b, a.seal("b", big)) == "throttled"  # the genuine peer waits too...
    clock.now += 2.0  # ...until the forging has stopped for a moment
    assert b.open(a.seal("b", big), PEERS) == ("a", big)
