"""The engine's revocation worker (``master/revocation.py``) with a fake view and rotation:
which changes rotate the AES key, how revocations are gathered, ``rotate_aes_key: false``."""

from __future__ import annotations

import threading

import pytest

from saltext_raft.master.revocation import EVERYTHING
from saltext_raft.master.revocation import KeyRevocation
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated.keystore import MIRROR_PREFIX
from saltext_raft.waiting import wait_until

KEYS = f"{MIRROR_PREFIX}/keys"
DENIED = f"{MIRROR_PREFIX}/denied_keys"


class FakeView:
    """``refresh(bank, key)``: True for the ids listed in ``revokes``; records every call."""

    def __init__(self, revokes=()):
        self.revokes = set(revokes)
        self.calls = []
        self.lock = threading.Lock()

    def refresh(self, bank, key):
        with self.lock:
            self.calls.append((bank, key))
        return key in self.revokes


@pytest.fixture
def worker():
    made = []

    def make(view, *, window=0.2, rotate_enabled=True, rotate=None):
        rotations = []
        rev = KeyRevocation(
            {},
            window=window,
            rotate_enabled=rotate_enabled,
            refresh=view.refresh,
            rotate=rotate or (lambda: rotations.append(1) or "rotated"),
        )
        rev.start()
        made.append(rev)
        return rev, rotations

    yield make
    for rev in made:
        rev.stop()


def test_revocations_within_the_window_share_one_rotation(worker):
    view = FakeView(revokes={"a", "b", "c"})
    rev, rotations = worker(view, window=0.3)
    for name in ("a", "b", "c"):
        rev.changed(KEYS, name)
    wait_until(lambda: rotations, 5, "a rotation", 0.01)
    wait_until(lambda: rev.status()["revoked"] == 3, 5, "three revocations", 0.01)
    assert rotations == [1] and rev.status()["rotations"] == 1
    rev.changed(KEYS, "a")  # a later revocation opens a new window
    wait_until(lambda: len(rotations) == 2, 5, "a second rotation", 0.01)


def test_changes_that_revoke_nothing_do_not_rotate(worker):
    view = FakeView(revokes=set())
    rev, rotations = worker(view, window=0)
    rev.changed(KEYS, "new-minion")  # e.g. a pending key, or an acceptance
    rev.changed(DENIED, "other")
    wait_until(lambda: rev.status()["views_refreshed"] == 2, 5, "two refreshes", 0.01)
    assert view.calls == [("keys", "new-minion"), ("denied_keys", "other")]
    assert not rotations and rev.status()["revoked"] == 0


def test_with_rotate_aes_key_off_the_view_is_refreshed_and_nothing_rotates(worker):
    view = FakeView(revokes={"a"})
    rev, rotations = worker(view, window=0, rotate_enabled=False)
    rev.changed(KEYS, "a")
    wait_until(lambda: rev.status()["revoked"] == 1, 5, "the revocation", 0.01)
    assert not rotations and rev.status()["rotations"] == 0


def test_a_whole_bank_or_everything_refreshes_every_id(worker, monkeypatch):
    from saltext_raft.replicated import keystore  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(
        keystore, "view_ids", lambda opts, bank: {"keys": {"a", "b"}, "denied_keys": {"d"}}[bank]
    )
    view = FakeView()
    rev, _ = worker(view)
    rev.changed(EVERYTHING, None)
    wait_until(lambda: len(view.calls) == 3, 5, "three refreshes", 0.01)
    assert sorted(view.calls) == [("denied_keys", "d"), ("keys", "a"), ("keys", "b")]
    view.calls.clear()
    rev.changed(KEYS, None)  # a flush of the whole keys bank
    wait_until(lambda: len(view.calls) == 2, 5, "two refreshes", 0.01)


def test_a_failing_rotation_is_counted_and_the_worker_goes_on(worker):
    view = FakeView(revokes={"a", "b"})

    def broken():
        raise OSError("no shared secret")

    rev, _ = worker(view, window=0, rotate=broken)
    rev.changed(KEYS, "a")
    wait_until(lambda: rev.status()["errors"] == 1, 5, "the failure counted", 0.01)
    rev.changed(KEYS, "b")
    wait_until(lambda: rev.status()["errors"] == 2, 5, "the worker still running", 0.01)


def test_the_window_option_is_checked():
    assert cacheconfig.from_opts({}).rotate_window == cacheconfig.DEFAULT_ROTATE_WINDOW
    assert cacheconfig.from_opts({"raft_keys_rotate_window": 0}).rotate_window == 0
    for bad in (-1, 61, "1s", True, None):
        with pytest.raises(cacheconfig.CacheConfigError, match="raft_keys_rotate_window"):
            cacheconfig.from_opts({"raft_keys_rotate_window": bad})
