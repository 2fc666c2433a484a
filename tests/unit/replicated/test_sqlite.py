"""The ``sqlite`` layout of the local copy: the same answers as the KV state machine (the model
every master applies), and clear behaviour when the database is missing, old or damaged."""

from __future__ import annotations

import json
import os
import random
import sqlite3

import pytest
import salt.payload
from salt.exceptions import SaltCacheError

from saltext_raft.kv import KVStateMachine
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import Command
from saltext_raft.replicated import driver as cachedriver
from saltext_raft.replicated.mirror import LocalfsMirror
from saltext_raft.replicated.sqlite import DB_NAME
from saltext_raft.replicated.sqlite import SqliteMirror
from saltext_raft.replicated.sqlite import SqliteReader

BANKS = ["", "a", "a/b", "a/b/c", "a/bc", "a0", "minions/web1", "minions/web2"]
KEYS = ["k", "data", "k2"]


def random_ops(rng, n):
    for i in range(n):
        bank = rng.choice(BANKS)
        roll = rng.random()
        if roll < 0.7:
            yield Command(STORE, bank, rng.choice(KEYS), f"v{i}".encode(), 1_700_000_000 + i)
        elif roll < 0.9:
            yield Command(FLUSH, bank, rng.choice(KEYS))
        else:
            yield Command(FLUSH, bank, None)


@pytest.mark.parametrize("seed", range(20))
def test_the_database_answers_like_the_kv_state_machine(tmp_path, seed):
    """Random stores and key/bank flushes (banks chosen so that "a/b", "a/bc" and "a0" test
    the prefix bounds of a bank flush), grouped into transactions as the writer groups them."""
    rng = random.Random(seed)
    kv, mirror = KVStateMachine(), SqliteMirror(str(tmp_path))
    reader = SqliteReader(str(tmp_path))
    ops = list(random_ops(rng, 150))
    for start in range(0, len(ops), 7):
        with mirror.transaction():
            for cmd in ops[start : start + 7]:
                if not kv.apply_command(cmd):
                    continue  # as CacheStateMachine: only a change reaches the copy
                if cmd.op == STORE:
                    mirror.store(cmd.bank, cmd.key, cmd.value, cmd.ts)
                else:
                    mirror.flush(cmd.bank, cmd.key)
        for bank in BANKS + ["a/b/c/d", "nothere"]:
            assert reader.list(bank) == kv.list(bank), (seed, start, bank)
            assert reader.contains(bank) == kv.contains(bank), (seed, start, bank)
            for key in KEYS:
                assert reader.fetch(bank, key) == kv.fetch(bank, key)
                assert reader.updated(bank, key) == kv.updated(bank, key)
                assert reader.contains(bank, key) == kv.contains(bank, key)
    mirror.close()


def test_a_database_that_does_not_exist_yet_reads_as_empty(tmp_path):
    reader = SqliteReader(str(tmp_path / "never-started"))
    assert reader.fetch("b", "k") is None
    assert reader.list("b") == [] and reader.list("") == []
    assert not reader.contains("b") and not reader.contains("b", "k")
    assert reader.updated("b", "k") is None


def test_a_batch_that_fails_is_rolled_back_whole(tmp_path):
    mirror = SqliteMirror(str(tmp_path))
    reader = SqliteReader(str(tmp_path))
    with pytest.raises(RuntimeError):
        with mirror.transaction():
            mirror.store("b", "k", b"1", 1)
            raise RuntimeError("disk full, say")
    assert reader.fetch("b", "k") is None and not reader.contains("b")
    with mirror.transaction():  # the remembered banks were forgotten with the rollback
        mirror.store("b", "k", b"2", 2)
    assert reader.list("") == ["b"] and reader.fetch("b", "k") == b"2"
    mirror.close()


def test_a_database_of_another_schema_version_is_started_over(tmp_path):
    conn = sqlite3.connect(str(tmp_path / DB_NAME))
    conn.execute("CREATE TABLE keys (whatever TEXT)")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    mirror = SqliteMirror(str(tmp_path))
    with mirror.transaction():
        mirror.store("b", "k", b"v", 5)
    assert SqliteReader(str(tmp_path)).fetch("b", "k") == b"v"
    mirror.close()


def test_the_rebuild_replaces_everything_in_one_go(tmp_path):
    mirror = SqliteMirror(str(tmp_path))
    with mirror.transaction():
        mirror.store("old", "k", b"stale", 1)
    stats = mirror.rebuild(["", "m", "m/web1", "empty"], [("m/web1", "data", b"x", 7)])
    reader = SqliteReader(str(tmp_path))
    assert stats == {"written": 1, "deleted": 1, "kept": 0}
    assert reader.list("") == ["empty", "m"]
    assert reader.contains("empty") and reader.list("empty") == []
    assert reader.fetch("m/web1", "data") == b"x" and reader.updated("m/web1", "data") == 7
    mirror.close()


def test_both_layouts_refuse_the_same_names(tmp_path):
    for bank, key in [("../etc", "k"), ("/abs", "k"), ("a", "../x"), ("a", "")]:
        for mirror in (SqliteMirror(str(tmp_path / "s")), LocalfsMirror(str(tmp_path / "l"))):
            with pytest.raises(ValueError):
                mirror.store(bank, key, b"x", 1)


def driver_opts(tmp_path):
    # The engine's caught-up marker (what the engine writes once its copy is current): these
    # tests read a copy written here, with no engine.
    (tmp_path / "copy.caught-up").write_text(json.dumps({"pid": os.getpid()}))
    return {
        "cachedir": str(tmp_path / "c"),
        "sock_dir": str(tmp_path / "s"),
        "raft_cache_backend": "sqlite",
        "raft_cache_dir": str(tmp_path / "copy"),
    }


def test_the_driver_decodes_values_and_reads_a_missing_key_as_localfs_does(tmp_path):
    opts = driver_opts(tmp_path)
    mirror = SqliteMirror(opts["raft_cache_dir"])
    with mirror.transaction():
        mirror.store("minions/web1", "data", salt.payload.dumps({"grains": {"os": "x"}}), 9)
    assert cachedriver.fetch(opts, "minions/web1", "data") == {"grains": {"os": "x"}}
    assert cachedriver.fetch(opts, "minions/web1", "nothere") == {}
    assert cachedriver.updated(opts, "minions/web1", "data") == 9
    assert cachedriver.list_(opts, "minions") == ["web1"]
    assert cachedriver.contains(opts, "minions/web1", "data")
    mirror.close()


def test_a_damaged_database_gives_a_clear_salt_error(tmp_path):
    opts = driver_opts(tmp_path)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(SaltCacheError, match="failed reading the local copy"):
        cachedriver.fetch(opts, "b", "k")


def test_the_engine_moves_a_damaged_database_aside_and_starts_a_new_one(tmp_path, caplog):
    damaged = tmp_path / DB_NAME
    damaged.write_bytes(b"torn by a crash, or not ours" * 100)
    mirror = SqliteMirror(str(tmp_path))
    with caplog.at_level("WARNING"):
        stats = mirror.rebuild(["", "b"], [("b", "k", b"v", 3)])
    assert stats["written"] == 1
    assert SqliteReader(str(tmp_path)).fetch("b", "k") == b"v"
    kept = [p.name for p in tmp_path.iterdir() if p.name.startswith(f"{DB_NAME}.damaged-")]
    assert len(kept) == 1 and (tmp_path / kept[0]).read_bytes().startswith(b"torn by a crash")
    assert "not a usable database" in caplog.text
    mirror.close()


def test_a_rebuild_names_what_an_earlier_localfs_copy_left_behind_and_keeps_it(tmp_path, caplog):
    old = LocalfsMirror(str(tmp_path))
    old.store("minions/web1", "data", b"\x80", 5)
    old.store("", "top", b"\x80", 5)
    damaged = tmp_path / f"{DB_NAME}.damaged-1"
    damaged.write_bytes(b"kept for a post-mortem")
    mirror = SqliteMirror(str(tmp_path))
    with caplog.at_level("WARNING"):
        mirror.rebuild(["", "b"], [("b", "k", b"v", 3)])
    assert "holds 2 entries that the sqlite layout does not use (minions, top.p)" in caplog.text
    # the old layout's temp directory is named too, and the way to keep the old layout
    assert f"delete them and the directory {tmp_path}.tmp" in caplog.text
    assert "'raft_cache_backend: localfs'" in caplog.text
    assert (tmp_path / "minions" / "web1" / "data.p").exists() and damaged.exists()
    caplog.clear()
    for name in ("minions", "top.p"):
        LocalfsMirror._remove(str(tmp_path / name))  # pylint: disable=protected-access
    with caplog.at_level("WARNING"):
        mirror.rebuild(["", "b"], [("b", "k", b"v", 3)])
    assert "does not use" not in caplog.text  # the database, its WAL and damaged copies are ours
    mirror.close()
