"""Routing of the ``raft`` cache driver's banks when it is Salt 3008's keys driver, and the
key store's refusals that need no engine (pure: no sockets, no Salt loader)."""

from __future__ import annotations

import json
import os

import pytest
from salt.exceptions import SaltCacheError

from saltext_raft.master import clustersecrets
from saltext_raft.master.settings import readiness_path
from saltext_raft.replicated import banks
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import keystore

KEYS_ON = {"keys.cache_driver": "raft", "cache": "localfs"}
KEYS_OFF = {"keys.cache_driver": "localfs_key", "cache": "raft"}


@pytest.mark.parametrize(
    ("opts", "bank", "where"),
    [
        (KEYS_ON, "keys", banks.KEYS),
        (KEYS_ON, "denied_keys", banks.KEYS),
        (KEYS_ON, "master_keys", banks.LOCAL),
        (KEYS_ON, "grains", banks.CACHE),
        (KEYS_ON, "keys/sub", banks.CACHE),
        # not the keys driver (or Salt 3007, which has no such option): plain replicated cache
        (KEYS_OFF, "keys", banks.CACHE),
        (KEYS_OFF, "master_keys", banks.CACHE),
        ({"cache": "raft"}, "denied_keys", banks.CACHE),
    ],
)
def test_route(opts, bank, where):
    assert banks.for_bank(opts, bank) is where


@pytest.mark.parametrize("opts", [KEYS_ON, KEYS_OFF])
def test_the_mirror_banks_of_the_key_store_are_reserved(opts):
    for bank in (keystore.MIRROR_PREFIX, keystore.mirror_bank("keys")):
        with pytest.raises(SaltCacheError, match="reserved"):
            banks.for_bank(opts, bank)
    assert banks.for_bank(opts, keystore.MIRROR_PREFIX + "x") is banks.CACHE


@pytest.mark.parametrize("opts", [KEYS_ON, KEYS_OFF])
def test_the_cluster_secrets_bank_is_reserved(opts):
    """Only the engine writes the committed cluster key fingerprint and session key: a
    ``salt-run cache.store``/``cache.flush`` on it is refused."""
    for bank in (clustersecrets.BANK, clustersecrets.PEERS_BANK):
        with pytest.raises(SaltCacheError, match="reserved for Salt's replicated cluster"):
            banks.for_bank(opts, bank)
    assert banks.for_bank(opts, clustersecrets.BANK + "x") is banks.CACHE


def test_the_engine_hosts_the_cache_when_raft_is_only_the_keys_driver():
    assert cacheconfig.keys_driver_enabled(KEYS_ON)
    assert cacheconfig.cache_enabled(KEYS_ON)
    assert not cacheconfig.keys_driver_enabled({"cache": "raft"})


def test_only_pki_dir_and_user_are_passed_to_localfs_key():
    kwargs = {"driver": "raft", "cachedir": "/c", "pki_dir": "/p", "user": "salt", "x": 1}
    assert keystore.local_kwargs(kwargs) == {"pki_dir": "/p", "user": "salt"}
    assert keystore.local_kwargs({"cachedir": "/c", "user": None}) == {}


def write_readiness(cachedir, body):
    path = readiness_path(cachedir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(body, fh)


def test_a_key_write_on_a_master_that_is_not_a_member_is_refused_before_proposing(
    tmp_path, monkeypatch
):
    write_readiness(
        str(tmp_path), {"ready": False, "reason": "this master is not a member of the raft cluster"}
    )
    opts = {"id": "m9", "cachedir": str(tmp_path), "pki_dir": str(tmp_path / "pki")}

    def must_not_propose():
        raise AssertionError("proposed although not a member")

    with pytest.raises(SaltCacheError, match="refused: this master is not a member.*'m9'"):
        keystore._write(opts, "storing the key of minion 'x'", must_not_propose)  # pylint: disable=protected-access


def test_a_failed_key_write_says_what_the_engine_reports(tmp_path):
    write_readiness(str(tmp_path), {"ready": False, "reason": "no leader elected yet"})
    opts = {"id": "m1", "cachedir": str(tmp_path)}

    def fails():
        raise SaltCacheError("raft cache: store x failed: no leader")

    with pytest.raises(SaltCacheError) as info:
        keystore._write(opts, "storing the key of minion 'x'", fails)  # pylint: disable=protected-access
    msg = str(info.value)
    assert "was not replicated" in msg and "no leader elected yet" in msg


def test_without_a_readiness_file_the_error_says_the_engine_has_not_written_it(tmp_path):
    opts = {"id": "m1", "cachedir": str(tmp_path)}

    def fails():
        raise SaltCacheError("raft cache: store x failed: engine not reachable")

    with pytest.raises(SaltCacheError, match="has not written its readiness file"):
        keystore._write(opts, "w", fails)  # pylint: disable=protected-access


@pytest.mark.parametrize(
    ("bank", "view", "want", "same"),
    [
        ("keys", None, None, True),
        ("keys", {"state": "accepted", "pub": "P\n"}, {"state": "accepted", "pub": "P"}, True),
        ("keys", {"state": "pending", "pub": "P"}, {"state": "accepted", "pub": "P"}, False),
        ("keys", None, {"state": "accepted", "pub": "P"}, False),
        ("keys", {"state": "accepted", "pub": "P"}, None, False),
        ("denied_keys", ["A"], ["A", "B"], True),  # localfs_key keeps the first only
        ("denied_keys", ["B"], ["A"], False),
        ("denied_keys", None, None, True),
    ],
)
def test_when_the_pki_dir_view_needs_a_write(bank, view, want, same):
    assert keystore._same(bank, view, want) is same  # pylint: disable=protected-access
