"""Hostile bank and key names against the replicated cache's edges and its ``localfs`` copy:
names Salt lets through (a minion id of any length, JSON's lone surrogates) that no file can
carry."""

from __future__ import annotations

import asyncio
import os

import pytest
from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import BadName
from saltext_raft.replicated.driver import check_names
from saltext_raft.replicated.localfs import LocalfsMirror
from saltext_raft.replicated.localfs import read
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime.errors import Rejected
from tests.unit.replicated.test_service import attach
from tests.unit.replicated.test_service import settings
from tests.unit.replicated.test_service import store_req

KEYS = "saltext_raft_keys/keys"  # the key store's bank in the copy
#: Salt's ``valid_id`` takes this (no "/", "\\" or NUL; any length): "<id>.p" is 256 bytes.
LONG_ID = "m" * 254

HOSTILE = [
    (KEYS, LONG_ID),
    ("minions/" + "é" * 127, "data"),  # 254 bytes of UTF-8 in one bank part
    ("b/" + "x/" * 600 + "y", "k"),  # parts that fit, a path that does not fit PATH_MAX with a root
    ("b", "k\ud800"),  # valid JSON ("\ud800"), not encodable as UTF-8
]
IDS = ["254-char-minion-id", "254-byte-bank-part", "2 KB path", "lone-surrogate"]


@pytest.mark.parametrize("bank,key", HOSTILE, ids=IDS)
def test_a_name_no_file_can_carry_is_refused_at_every_edge(tmp_path, bank, key):
    """Regression: these names passed the name rule. The driver sent them to the engine and the
    cluster committed them; then every master's copy failed to write them (ENAMETOOLONG,
    UnicodeEncodeError). On 3008 with keys in the raft cache a minion's ``_auth`` stores
    ``keys/<its id>``, and Salt's ``valid_id`` takes an id of any length."""
    with pytest.raises(SaltCacheError, match="bytes, over|not UTF-8"):
        check_names(bank, key, key_required=True)
    with pytest.raises(BadName, match="bytes, over|not UTF-8"):
        LocalfsMirror(str(tmp_path / "copy")).store(bank, key, b"v", 1)
    assert_engine_refuses(tmp_path, bank, key, "bytes, over|not UTF-8")


def assert_engine_refuses(tmp_path, bank, key, match) -> None:
    """The engine's cache socket refuses a write of ``bank``/``key`` (``match``: the error)
    before it joins a batch: nothing is proposed."""
    svc = CacheService(settings(tmp_path), clock=lambda: 1)

    async def main():
        rt = attach(svc)
        with pytest.raises(Rejected, match=match):
            svc._store(rt, dict(store_req("k"), bank=bank, key=key))
        await asyncio.sleep(0)
        return rt.proposals

    try:
        assert asyncio.run(main()) == []
    finally:
        svc.writer.stop()


def test_names_that_fit_are_still_taken(tmp_path):
    """The limits sit at what a file holds: 253 bytes a part ("<key>.p" is 255)."""
    mirror = LocalfsMirror(str(tmp_path / "copy"))
    for bank, key in [(KEYS, "m" * 253), ("minions/" + "é" * 126, "d" * 253), ("", "k")]:
        check_names(bank, key, key_required=True)
        mirror.store(bank, key, b"\xa1v", 1)  # msgpack "v"
        assert read(mirror.root, bank, key) == "v"


def test_a_rebuild_writes_every_key_past_a_name_the_copy_cannot_hold(tmp_path):
    """Regression: a rebuild (every engine start, every repair, a new master's first copy)
    stopped at the first name too long for a file (OSError: File name too long) and never
    wrote the keys after it: the key store's accepted keys went missing from that master's
    copy. A log written before the names were refused may still hold such a name."""
    mirror = LocalfsMirror(str(tmp_path / "copy"))
    items = [(KEYS, LONG_ID, b"\xa1x", 1), (KEYS, "web1", b"\xa1y", 1)]
    stats = mirror.rebuild([KEYS], items)
    assert read(mirror.root, KEYS, "web1") == "y"
    assert stats["refused"] == 1 and stats["written"] == 1
    assert os.listdir(os.path.join(mirror.root, KEYS)) == ["web1.p"]


# --- aliasing: two names the state machine keeps apart, one file in the localfs copy --------
#: (bank, key) the localfs copy would write where another name's file is: Salt's ``localfs``
#: joins the bank and the key as a path, the state machine keeps them as given.
ALIASES = [
    ("", KEYS + "/rogue"),  # the root bank's key = the key store's "rogue"
    ("b", "a//k"),  # key "a/k" of bank "b"
    ("b", "a/"),  # "a/.p": a key with an empty last part
    ("b//c", "k"),  # bank "b/c" in every layer, but "b//c" in the watchers' prefix checks
    ("b/", "k"),
]
ALIAS_IDS = [
    "root-key-into-key-store",
    "key-double-slash",
    "key-trailing-slash",
    "bank-double-slash",
    "bank-trailing-slash",
]


@pytest.mark.parametrize("bank,key", ALIASES, ids=ALIAS_IDS)
def test_a_name_that_aliases_another_in_the_copy_is_refused_at_every_edge(tmp_path, bank, key):
    """Red team 2026-12-07: these passed the name rule. ``("", "saltext_raft_keys/keys/rogue")``
    passed the driver's reserved-bank check (the bank is the root) and the localfs copy wrote
    it as the key store's key ``rogue`` (an accepted minion key on that master); ``a//k`` and
    ``a/k`` are two keys in the state machine and the sqlite copy, one file in the localfs one."""
    with pytest.raises(SaltCacheError, match="empty part|root bank"):
        check_names(bank, key, key_required=True)
    mirror = LocalfsMirror(str(tmp_path / "copy"))
    with pytest.raises(BadName, match="empty part|root bank"):
        mirror.store(bank, key, b"\xa1x", 1)
    assert read(mirror.root, KEYS, "rogue") == {}


def test_a_rebuild_skips_a_committed_aliasing_name_and_writes_the_rest(tmp_path):
    """A log written by an older build may hold such a name: the rebuild leaves it out (with a
    warning), so it neither lands in another bank's file nor stops the rebuild."""
    mirror = LocalfsMirror(str(tmp_path / "copy"))
    items = [
        ("", KEYS + "/rogue", b"\xa1x", 1),
        ("b", "a//k", b"\xa1y", 1),
        ("b", "a/k", b"\xa1z", 2),
    ]
    stats = mirror.rebuild([KEYS, "b"], items)
    assert stats["refused"] == 2 and stats["written"] == 1
    assert read(mirror.root, KEYS, "rogue") == {}
    assert read(mirror.root, "b", "a/k") == "z"


@pytest.mark.parametrize("bank,key", ALIASES, ids=ALIAS_IDS)
def test_a_name_that_aliases_another_is_refused_by_the_engine_socket_too(tmp_path, bank, key):
    """The engine's cache socket applies the same rule (``check_key``) before a write joins a
    batch, and so does a leader taking a follower's relayed writes (``_command``)."""
    assert_engine_refuses(tmp_path, bank, key, "empty part|contains '/'")
