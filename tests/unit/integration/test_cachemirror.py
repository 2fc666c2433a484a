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


def queued_then_started(root, jobs, run):
    """Queue ``jobs`` before the writer thread starts, so it drains them as one batch."""
    writer = MirrorWriter(LocalfsMirror(str(root)))
    ticket = 0
    for job in jobs:
        ticket = writer.enqueue(job)

    async def go():
        writer.start(asyncio.get_running_loop())
        await asyncio.wait_for(writer.wait(ticket), 10)

    try:
        run(go())
    finally:
        writer.stop()
    return writer


def blob(obj):
    return salt.payload.dumps(obj)


def test_a_batch_writes_only_the_last_value_of_each_key_and_ends_as_applied_one_by_one(
    tmp_path, run
):
    root = tmp_path / "kv"
    jobs = [
        ("store", "b", "k", blob(1), 1_700_000_001),
        ("store", "b", "other", blob("o"), 1_700_000_001),
        ("store", "b", "k", blob(2), 1_700_000_002),
        ("flush", "b", "k"),
        ("store", "b", "k", blob(3), 1_700_000_003),
        ("store", "b", "gone", blob("g"), 1_700_000_003),
        ("flush", "b", "gone"),
    ]
    writer = queued_then_started(root, jobs, run)
    assert writer.counters["batches"] == 1
    assert writer.counters["jobs"] == len(jobs)
    assert writer.counters["coalesced"] == 4  # three writes of k, one of gone
    assert localfs.fetch("b", "k", str(root)) == 3
    assert localfs.updated("b", "k", str(root)) == 1_700_000_003
    assert localfs.fetch("b", "other", str(root)) == "o"
    assert not localfs.contains("b", "gone", str(root))
    assert not os.listdir(str(root) + ".tmp")


def test_a_bank_flush_inside_a_batch_is_a_barrier(tmp_path, run):
    """Regression guard for coalescing across a bank flush: the store before the flush is
    removed with the bank, the one after it survives."""
    root = tmp_path / "kv"
    jobs = [
        ("store", "a/b", "before", blob(1), 1_700_000_000),
        ("store", "a/b", "again", blob(1), 1_700_000_000),
        ("flush", "a", None),
        ("store", "a/b", "again", blob(2), 1_700_000_000),
        ("store", "a/b", "after", blob(3), 1_700_000_000),
    ]
    writer = queued_then_started(root, jobs, run)
    assert writer.counters["coalesced"] == 0
    assert sorted(localfs.list_("a/b", str(root))) == ["after", "again"]
    assert localfs.fetch("a/b", "again", str(root)) == 2


def test_many_keys_in_one_batch_are_all_written_with_their_own_timestamps(tmp_path, run):
    root = tmp_path / "kv"
    jobs = [
        ("store", f"minions/m{i % 7}", f"k{i}", blob({"i": i}), 1_700_000_000 + i)
        for i in range(200)
    ]
    queued_then_started(root, jobs, run)
    for i in range(200):
        bank = f"minions/m{i % 7}"
        assert localfs.fetch(bank, f"k{i}", str(root)) == {"i": i}
        assert localfs.updated(bank, f"k{i}", str(root)) == 1_700_000_000 + i
    assert not os.listdir(str(root) + ".tmp")


def test_a_refused_name_in_a_batch_does_not_hold_back_the_other_jobs(tmp_path, run):
    root = tmp_path / "kv"
    jobs = [
        ("store", "b", "../escape", blob(0), 1_700_000_000),
        ("store", "b", "ok", blob(1), 1_700_000_000),
    ]
    writer = queued_then_started(root, jobs, run)
    assert writer.counters["errors"] == 1
    assert localfs.fetch("b", "ok", str(root)) == 1
    assert not os.path.exists(tmp_path / "escape.p")


def test_entries_applied_in_one_loop_iteration_reach_the_writer_thread_as_one_batch(harness, run):
    """The runtime applies a Ready's entries back to back: the writer thread must be woken
    once for them, not once per entry (two thread switches per store on every master)."""

    async def apply_many():
        tickets = []
        for i in range(20):
            harness.index += 1
            tickets.append(harness.sm.apply(entry(harness.index, put("b", f"k{i}", i))).ticket)
        # Nothing reaches the thread while this loop iteration runs...
        assert harness.writer._queue.qsize() == 0  # pylint: disable=protected-access
        await asyncio.wait_for(harness.writer.wait(tickets[-1]), 5)
        return tickets

    tickets = run(apply_many())
    assert tickets == sorted(tickets)
    assert harness.writer.counters["batches"] == 1  # ...then everything arrives at once
    assert sorted(localfs.list_("b", harness.root)) == sorted(f"k{i}" for i in range(20))
