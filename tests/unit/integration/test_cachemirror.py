"""The cache state machine wrapper and its localfs mirror (no Salt daemons, no runtime)."""

from __future__ import annotations

import asyncio
import os

import pytest
import salt.cache.localfs as localfs
import salt.payload

from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.integration.cachemirror import CacheStateMachine
from saltext_raft.integration.cachemirror import LocalfsMirror
from saltext_raft.integration.cachemirror import MirrorPathError
from saltext_raft.integration.cachemirror import MirrorWriter
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import encode_command


def entry(index, cmd):
    return Entry(1, index, EntryKind.NORMAL, encode_command(cmd))


def put(bank, key, obj, ts=1_700_000_000, client="", seq=0):
    return Command(STORE, bank, key, salt.payload.dumps(obj), ts, client, seq)


class Harness:
    """A CacheStateMachine whose mirror writer runs on a real thread, driven from a loop."""

    def __init__(self, root):
        self.root = str(root)
        self.writer = MirrorWriter(LocalfsMirror(self.root))
        self.sm = CacheStateMachine(self.writer)
        self.index = 0

    async def apply(self, cmd):
        self.index += 1
        applied = self.sm.apply(entry(self.index, cmd))
        await asyncio.wait_for(self.writer.wait(applied.ticket), 5)
        return applied


@pytest.fixture
def run():
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def harness(tmp_path, run):
    h = Harness(tmp_path / "kv")

    async def start():
        h.writer.start(asyncio.get_running_loop())

    run(start())
    yield h
    h.writer.stop()


def test_store_is_mirrored_in_localfs_layout_with_the_command_timestamp(harness, run):
    applied = run(
        harness.apply(put("minions/web1", "data", {"grains": {"os": "Debian"}}, ts=1_600_000_123))
    )
    assert applied.result is True
    assert localfs.fetch("minions/web1", "data", harness.root) == {"grains": {"os": "Debian"}}
    # ``updated`` comes from the proposer's timestamp, so it is the same on every master.
    assert localfs.updated("minions/web1", "data", harness.root) == 1_600_000_123
    assert sorted(localfs.list_("minions", harness.root)) == ["web1"]
    assert not os.listdir(harness.root + ".tmp"), "temp files must not be left behind"


def test_flush_key_keeps_the_bank_and_flush_bank_removes_everything_below(harness, run):
    run(harness.apply(put("a/b", "k1", 1)))
    run(harness.apply(put("a/b", "k2", 2)))
    run(harness.apply(put("a/b/c", "k3", 3)))
    run(harness.apply(Command(FLUSH, "a/b", "k1")))
    assert localfs.contains("a/b", None, harness.root)
    assert sorted(localfs.list_("a/b", harness.root)) == ["c", "k2"]
    run(harness.apply(Command(FLUSH, "a/b", None)))
    assert not localfs.contains("a/b", None, harness.root)
    assert localfs.contains("a", None, harness.root)


def test_a_retried_write_is_applied_once_and_queues_no_mirror_write(harness, run):
    run(harness.apply(put("b", "k", "first", client="w:1", seq=1)))
    run(harness.apply(put("b", "k", "second", client="w:1", seq=2)))
    jobs = harness.writer.counters["jobs"]
    # seq 1 again (a retry that arrives late) must not bring "first" back
    run(harness.apply(put("b", "k", "first", client="w:1", seq=1)))
    assert harness.writer.counters["jobs"] == jobs
    assert localfs.fetch("b", "k", harness.root) == "second"


def test_writes_are_mirrored_in_apply_order(harness, run):
    async def many():
        last = None
        for i in range(200):
            harness.index += 1
            last = harness.sm.apply(entry(harness.index, put("order", "k", i)))
        await asyncio.wait_for(harness.writer.wait(last.ticket), 5)

    run(many())
    assert localfs.fetch("order", "k", harness.root) == 199


def test_first_apply_without_a_snapshot_clears_a_stale_mirror(tmp_path, run):
    root = tmp_path / "kv"
    localfs.store("stale/bank", "old", "left over from an earlier cluster", str(root))
    h = Harness(root)

    async def go():
        h.writer.start(asyncio.get_running_loop())
        await h.apply(put("fresh", "k", 1))

    try:
        run(go())
    finally:
        h.writer.stop()
    assert not localfs.contains("stale", None, str(root))
    assert localfs.fetch("fresh", "k", str(root)) == 1


def test_restore_rebuilds_the_mirror_from_the_snapshot(tmp_path, run):
    # A leader's state: three keys, one bank left empty by a flush.
    leader = Harness(tmp_path / "leader")
    follower = Harness(tmp_path / "follower")

    async def go():
        loop = asyncio.get_running_loop()
        leader.writer.start(loop)
        follower.writer.start(loop)
        await leader.apply(put("m/web1", "data", "new-web1", ts=1_700_000_100))
        await leader.apply(put("m/web2", "data", "same", ts=1_700_000_200))
        await leader.apply(put("empty", "k", 1))
        await leader.apply(Command(FLUSH, "empty", "k"))
        # The follower's mirror is behind and holds a key the leader flushed.
        await follower.apply(put("m/web1", "data", "old-web1", ts=1_600_000_000))
        await follower.apply(put("m/web2", "data", "same", ts=1_700_000_200))
        await follower.apply(put("gone", "k", "flushed on the leader"))
        follower.sm.restore(leader.sm.snapshot())
        await asyncio.wait_for(follower.writer.wait(follower.writer.ticket), 5)

    try:
        run(go())
    finally:
        leader.writer.stop()
        follower.writer.stop()
    root = follower.root
    assert localfs.fetch("m/web1", "data", root) == "new-web1"
    assert localfs.updated("m/web1", "data", root) == 1_700_000_100
    assert localfs.fetch("m/web2", "data", root) == "same"
    assert not localfs.contains("gone", None, root)
    assert localfs.contains("empty", None, root) and localfs.list_("empty", root) == []
    assert follower.writer.counters["rebuilds"] == 2  # first apply (empty) + the restore
    assert follower.sm.kv.fetch("m/web1", "data") == salt.payload.dumps("new-web1")


@pytest.mark.parametrize("bank,key", [("../etc", "k"), ("/abs", "k"), ("a", "../../x"), ("a", "")])
def test_names_that_would_leave_the_mirror_are_refused(tmp_path, bank, key):
    mirror = LocalfsMirror(str(tmp_path / "kv"))
    with pytest.raises(MirrorPathError):
        mirror.store(bank, key, b"x", 1)


def test_a_failed_mirror_write_is_counted_and_does_not_stop_the_writer(harness, run):
    # A bad name committed by some other master's (buggy) driver: the apply still answers.
    run(harness.apply(put("x", "..", 1)))
    assert harness.writer.counters["errors"] == 1
    assert "leave the cache directory" in harness.writer.last_error
    run(harness.apply(put("x", "ok", 2)))
    assert localfs.fetch("x", "ok", harness.root) == 2
