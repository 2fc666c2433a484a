"""The cache state machine wrapper and its mirror, in both layouts of the local copy (Salt's
``localfs`` files and the ``sqlite`` database), read the way the driver reads them (no Salt
daemons, no runtime)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest
import salt.cache.localfs as localfs
import salt.payload

from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.kv import KVStateMachine
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import EXPIRE
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import UNION
from saltext_raft.kv.machine import BadName
from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import encode_batch
from saltext_raft.kv.machine import encode_command
from saltext_raft.kv.machine import expire_value
from saltext_raft.kv.machine import union_value
from saltext_raft.replicated.config import CacheSettings
from saltext_raft.replicated.mirror import CacheStateMachine
from saltext_raft.replicated.mirror import MirrorWriter
from saltext_raft.replicated.mirror import new_mirror
from saltext_raft.replicated.service import CacheService
from saltext_raft.replicated.sqlite import SqliteReader
from tests.unit.replicated.fakeruntime import LeaderPort


def entry(index, cmd):
    return Entry(1, index, EntryKind.NORMAL, encode_command(cmd))


def put(bank, key, obj, ts=1_700_000_000, client="", seq=0):
    return Command(STORE, bank, key, salt.payload.dumps(obj), ts, client, seq)


LAYOUTS = ("localfs", "sqlite")


class Reads:
    """The driver's reads of one local copy: Salt's ``localfs`` functions on the files, or the
    ``sqlite`` reader with values decoded as the driver decodes them."""

    def __init__(self, layout, root):
        self.layout, self.root = layout, str(root)
        self._sqlite = SqliteReader(self.root) if layout == "sqlite" else None

    def fetch(self, bank, key):
        if self._sqlite is None:
            return localfs.fetch(bank, key, self.root)
        raw = self._sqlite.fetch(bank, key)
        return {} if raw is None else salt.payload.loads(raw)

    def updated(self, bank, key):
        if self._sqlite is None:
            return localfs.updated(bank, key, self.root)
        return self._sqlite.updated(bank, key)

    def list_(self, bank):
        if self._sqlite is None:
            return localfs.list_(bank, self.root)
        return self._sqlite.list(bank)

    def contains(self, bank, key):
        if self._sqlite is None:
            return localfs.contains(bank, key, self.root)
        return self._sqlite.contains(bank, key)

    def no_temp_files(self):
        """The localfs layout writes through temp files that must not be left behind."""
        return self._sqlite is not None or not os.listdir(self.root + ".tmp")


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


class Harness:
    """A CacheStateMachine whose mirror writer runs on a real thread, driven from a loop."""

    def __init__(self, root, layout):
        self.root = str(root)
        self.reads = Reads(layout, root)
        # As the cache service builds it: the sqlite layout writes small batches on the loop.
        self.writer = MirrorWriter(new_mirror(layout, self.root), inline=layout == "sqlite")
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
def harness(tmp_path, run, layout):
    h = Harness(tmp_path / "kv", layout)

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
    assert harness.reads.fetch("minions/web1", "data") == {"grains": {"os": "Debian"}}
    # ``updated`` comes from the proposer's timestamp, so it is the same on every master.
    assert harness.reads.updated("minions/web1", "data") == 1_600_000_123
    assert sorted(harness.reads.list_("minions")) == ["web1"]
    assert harness.reads.no_temp_files()


def test_flush_key_keeps_the_bank_and_flush_bank_removes_everything_below(harness, run):
    run(harness.apply(put("a/b", "k1", 1)))
    run(harness.apply(put("a/b", "k2", 2)))
    run(harness.apply(put("a/b/c", "k3", 3)))
    run(harness.apply(Command(FLUSH, "a/b", "k1")))
    assert harness.reads.contains("a/b", None)
    assert sorted(harness.reads.list_("a/b")) == ["c", "k2"]
    run(harness.apply(Command(FLUSH, "a/b", None)))
    assert not harness.reads.contains("a/b", None)
    assert harness.reads.contains("a", None)


def test_a_retried_write_is_applied_once_and_queues_no_mirror_write(harness, run):
    run(harness.apply(put("b", "k", "first", client="w:1", seq=1)))
    run(harness.apply(put("b", "k", "second", client="w:1", seq=2)))
    jobs = harness.writer.counters["jobs"]
    # seq 1 again (a retry that arrives late) must not bring "first" back
    run(harness.apply(put("b", "k", "first", client="w:1", seq=1)))
    assert harness.writer.counters["jobs"] == jobs
    assert harness.reads.fetch("b", "k") == "second"


def test_an_add_is_mirrored_only_when_it_stored(harness, run):
    added = run(harness.apply(put("b", "k", "imported", ts=1_600_000_001)._replace(op=ADD)))
    assert added.result is True
    assert harness.reads.fetch("b", "k") == "imported"
    assert harness.reads.updated("b", "k") == 1_600_000_001
    run(harness.apply(put("b", "k", "newer", ts=1_600_000_002)))
    jobs = harness.writer.counters["jobs"]
    again = run(harness.apply(put("b", "k", "imported", ts=1_600_000_003)._replace(op=ADD)))
    assert again.result is False
    assert harness.writer.counters["jobs"] == jobs
    assert harness.reads.fetch("b", "k") == "newer"
    assert harness.reads.updated("b", "k") == 1_600_000_002


def test_writes_are_mirrored_in_apply_order(harness, run):
    async def many():
        last = None
        for i in range(200):
            harness.index += 1
            last = harness.sm.apply(entry(harness.index, put("order", "k", i)))
        await asyncio.wait_for(harness.writer.wait(last.ticket), 5)

    run(many())
    assert harness.reads.fetch("order", "k") == 199


def test_first_apply_without_a_snapshot_clears_a_stale_mirror(tmp_path, run, layout):
    root = tmp_path / "kv"
    stale = new_mirror(layout, str(root))
    with stale.transaction():
        stale.store("stale/bank", "old", salt.payload.dumps("from an earlier cluster"), 1)
    stale.close()
    reads = Reads(layout, root)
    assert reads.contains("stale", None)
    h = Harness(root, layout)

    async def go():
        h.writer.start(asyncio.get_running_loop())
        await h.apply(put("fresh", "k", 1))

    try:
        run(go())
    finally:
        h.writer.stop()
    assert not reads.contains("stale", None)
    assert reads.fetch("fresh", "k") == 1


@pytest.mark.parametrize("off_the_loop", [False, True], ids=["restore", "restore_later"])
def test_restore_rebuilds_the_mirror_from_the_snapshot(tmp_path, run, layout, off_the_loop):
    # A leader's state: three keys, one bank left empty by a flush.
    leader = Harness(tmp_path / "leader", layout)
    follower = Harness(tmp_path / "follower", layout)

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
        if off_the_loop:  # as the runtime does it: decode on a thread, install on the loop
            decode = follower.sm.restore_later(leader.sm.snapshot())
            install = await loop.run_in_executor(None, decode)
            await asyncio.wait_for(follower.writer.wait(follower.writer.ticket), 5)
            assert follower.reads.fetch("m/web1", "data") == "old-web1"  # not installed yet
            assert follower.writer.counters["rebuilds"] == 1
            install()
        else:
            follower.sm.restore(leader.sm.snapshot())
        await asyncio.wait_for(follower.writer.wait(follower.writer.ticket), 5)

    try:
        run(go())
    finally:
        leader.writer.stop()
        follower.writer.stop()
    reads = follower.reads
    assert reads.fetch("m/web1", "data") == "new-web1"
    assert reads.updated("m/web1", "data") == 1_700_000_100
    assert reads.fetch("m/web2", "data") == "same"
    assert not reads.contains("gone", None)
    assert reads.contains("empty", None) and reads.list_("empty") == []
    assert follower.writer.counters["rebuilds"] == 2  # first apply (empty) + the restore
    assert follower.sm.kv.fetch("m/web1", "data") == salt.payload.dumps("new-web1")


@pytest.mark.parametrize("bank,key", [("../etc", "k"), ("/abs", "k"), ("a", "../../x"), ("a", "")])
def test_names_that_would_leave_the_mirror_are_refused(tmp_path, bank, key, layout):
    mirror = new_mirror(layout, str(tmp_path / "kv"))
    with pytest.raises(BadName):
        mirror.store(bank, key, b"x", 1)


def test_a_failed_mirror_write_is_counted_and_does_not_stop_the_writer(harness, run):
    # A bad name committed by some other master's (buggy) driver: the apply still answers.
    run(harness.apply(put("x", "..", 1)))
    assert harness.writer.counters["errors"] == 1
    assert "leave the cache directory" in harness.writer.last_error
    run(harness.apply(put("x", "ok", 2)))
    assert harness.reads.fetch("x", "ok") == 2


def queued_then_started(root, jobs, run, layout):
    """Queue ``jobs`` before the writer thread starts, so it drains them as one batch."""
    writer = MirrorWriter(new_mirror(layout, str(root)))
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
    tmp_path, run, layout
):
    root = tmp_path / "kv"
    reads = Reads(layout, root)
    jobs = [
        ("store", "b", "k", blob(1), 1_700_000_001),
        ("store", "b", "other", blob("o"), 1_700_000_001),
        ("store", "b", "k", blob(2), 1_700_000_002),
        ("flush", "b", "k"),
        ("store", "b", "k", blob(3), 1_700_000_003),
        ("store", "b", "gone", blob("g"), 1_700_000_003),
        ("flush", "b", "gone"),
    ]
    writer = queued_then_started(root, jobs, run, layout)
    assert writer.counters["batches"] == 1
    assert writer.counters["jobs"] == len(jobs)
    assert writer.counters["coalesced"] == 4  # three writes of k, one of gone
    assert reads.fetch("b", "k") == 3
    assert reads.updated("b", "k") == 1_700_000_003
    assert reads.fetch("b", "other") == "o"
    assert not reads.contains("b", "gone")
    assert reads.no_temp_files()


def test_a_bank_flush_inside_a_batch_is_a_barrier(tmp_path, run, layout):
    """Regression guard for coalescing across a bank flush: the store before the flush is
    removed with the bank, the one after it survives."""
    root = tmp_path / "kv"
    reads = Reads(layout, root)
    jobs = [
        ("store", "a/b", "before", blob(1), 1_700_000_000),
        ("store", "a/b", "again", blob(1), 1_700_000_000),
        ("flush", "a", None),
        ("store", "a/b", "again", blob(2), 1_700_000_000),
        ("store", "a/b", "after", blob(3), 1_700_000_000),
    ]
    writer = queued_then_started(root, jobs, run, layout)
    assert writer.counters["coalesced"] == 0
    assert sorted(reads.list_("a/b")) == ["after", "again"]
    assert reads.fetch("a/b", "again") == 2


def test_many_keys_in_one_batch_are_all_written_with_their_own_timestamps(tmp_path, run, layout):
    root = tmp_path / "kv"
    reads = Reads(layout, root)
    jobs = [
        ("store", f"minions/m{i % 7}", f"k{i}", blob({"i": i}), 1_700_000_000 + i)
        for i in range(200)
    ]
    queued_then_started(root, jobs, run, layout)
    for i in range(200):
        bank = f"minions/m{i % 7}"
        assert reads.fetch(bank, f"k{i}") == {"i": i}
        assert reads.updated(bank, f"k{i}") == 1_700_000_000 + i
    assert reads.no_temp_files()


def test_a_refused_name_in_a_batch_does_not_hold_back_the_other_jobs(tmp_path, run, layout):
    root = tmp_path / "kv"
    reads = Reads(layout, root)
    jobs = [
        ("store", "b", "../escape", blob(0), 1_700_000_000),
        ("store", "b", "ok", blob(1), 1_700_000_000),
    ]
    writer = queued_then_started(root, jobs, run, layout)
    assert writer.counters["errors"] == 1
    assert reads.fetch("b", "ok") == 1
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
        assert harness.writer._worker.pending() == 0  # pylint: disable=protected-access
        await asyncio.wait_for(harness.writer.wait(tickets[-1]), 5)
        return tickets

    tickets = run(apply_many())
    assert tickets == sorted(tickets)
    assert harness.writer.counters["batches"] == 1  # ...then everything arrives at once
    assert sorted(harness.reads.list_("b")) == sorted(f"k{i}" for i in range(20))


class FillingDisk:
    """A mirror whose writes fail with ENOSPC while ``full`` is set (a full disk)."""

    def __init__(self, inner):
        self.inner = inner
        self.full = False
        if hasattr(inner, "write_slots"):  # the sqlite layout's batch write
            self.write_slots = self._write_slots

    def _write_slots(self, *args):
        self._check()
        return self.inner.write_slots(*args)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _check(self):
        if self.full:
            raise OSError(28, "No space left on device")

    def store(self, *args):
        self._check()
        return self.inner.store(*args)

    def rebuild(self, *args):
        self._check()
        return self.inner.rebuild(*args)


def test_writes_lost_to_a_full_disk_are_repaired_by_a_later_write(tmp_path, run, layout):
    root = str(tmp_path / "kv")
    disk = FillingDisk(new_mirror(layout, root))
    writer = MirrorWriter(disk)
    now = [1000.0]
    sm = CacheStateMachine(writer, clock=lambda: now[0], repair_interval=30.0)
    reads = Reads(layout, root)
    index = [0]

    async def apply(cmd):
        index[0] += 1
        applied = sm.apply(entry(index[0], cmd))
        await asyncio.wait_for(writer.wait(applied.ticket), 5)

    async def go():
        writer.start(asyncio.get_running_loop())
        await apply(put("b", "first", 1))
        disk.full = True
        await apply(put("b", "lost", 2))
        assert writer.damaged and writer.counters["errors"] >= 1
        assert reads.fetch("b", "lost") == {}  # stale: the write is committed, the copy lacks it
        disk.full = False
        await apply(put("b", "next", 3))  # the first repair does not wait
        assert reads.fetch("b", "lost") == 2 and reads.fetch("b", "next") == 3
        assert not writer.damaged
        rebuilds = writer.counters["rebuilds"]
        # A second failure within repair_interval: repaired only once the interval has passed.
        disk.full = True
        await apply(put("b", "lost2", 4))
        disk.full = False
        now[0] += 10
        await apply(put("b", "x", 5))
        assert reads.fetch("b", "lost2") == {} and writer.counters["rebuilds"] == rebuilds
        now[0] += 30
        await apply(put("b", "y", 6))
        assert reads.fetch("b", "lost2") == 4 and writer.counters["rebuilds"] == rebuilds + 1
        assert reads.fetch("b", "first") == 1

    try:
        run(go())
    finally:
        writer.stop()


def test_a_master_that_gets_no_more_writes_is_repaired_by_the_service_timer(tmp_path, run, layout):
    settings = CacheSettings(
        socket=str(tmp_path / "cache.sock"), root=str(tmp_path / "kv"), backend=layout
    )
    service = CacheService(settings, repair_check=0.02)
    disk = FillingDisk(service.writer.mirror)
    service.writer.mirror = disk
    sm, writer = service.state_machine, service.writer
    reads = Reads(layout, settings.root)

    async def go():
        service.start_writer(asyncio.get_running_loop())
        await service.start(LeaderPort())  # the socket is not used here; the timer is
        try:
            applied = sm.apply(entry(1, put("b", "first", 1)))
            await asyncio.wait_for(writer.wait(applied.ticket), 5)
            # The 20 ms repair timer must not run between the failed write and the check (a
            # repair while the disk is still full fails and the next one waits 30 s): a cyclic
            # GC pass there took longer than that in this process and failed this test.
            gc.disable()
            try:
                disk.full = True
                applied = sm.apply(entry(2, put("b", "lost", 2)))
                await asyncio.wait_for(writer.wait(applied.ticket), 5)
                assert writer.damaged and reads.fetch("b", "lost") == {}
                disk.full = False
            finally:
                gc.enable()
            # No further write: the timer queues the repair.
            deadline = asyncio.get_running_loop().time() + 5
            while reads.fetch("b", "lost") != 2:
                assert asyncio.get_running_loop().time() < deadline, "no repair within 5 s"
                await asyncio.sleep(0.01)
            assert not writer.damaged and reads.fetch("b", "first") == 1
        finally:
            await service.stop()

    run(go())


def test_a_batch_entry_mirrors_every_command_and_answers_each(harness, run):
    cmds = [
        Command(STORE, "b", "k1", blob(1), 5, "c1", 1),
        Command(STORE, "b", "k2", blob(2), 5, "c2", 1),
        Command(FLUSH, "b", "k1", b"", 6, "c3", 1),
        Command(FLUSH, "b", "nope", b"", 6, "c4", 1),
    ]

    async def go():
        harness.index += 1
        applied = harness.sm.apply(Entry(1, harness.index, EntryKind.NORMAL, encode_batch(cmds)))
        await asyncio.wait_for(harness.writer.wait(applied.ticket), 5)
        return applied

    applied = run(go())
    assert applied.result == [True, True, True, False]
    assert harness.reads.list_("b") == ["k2"] and harness.reads.fetch("b", "k2") == 2


def test_the_sqlite_writer_writes_small_batches_on_the_loop(tmp_path, run):
    h = Harness(tmp_path / "kv", "sqlite")

    async def go():
        h.writer.start(asyncio.get_running_loop())
        await h.apply(put("b", "k0", 0))  # the first apply rebuilds (on the thread)
        before = dict(h.writer.counters)
        for i in range(1, 6):
            await h.apply(put("b", f"k{i}", i))
        return before

    try:
        before = run(go())
    finally:
        h.writer.stop()
    assert before["rebuilds"] == 1
    assert h.writer.counters["inline_batches"] - before["inline_batches"] == 5
    assert h.writer.counters["batches"] - before["batches"] == 5
    assert [h.reads.fetch("b", f"k{i}") for i in range(6)] == list(range(6))


class SlowRebuild:
    """A mirror whose rebuild waits for ``release`` (a big restore still being written)."""

    def __init__(self, inner):
        self.inner = inner
        self.release = threading.Event()
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def rebuild(self, *args):
        self.started.set()
        assert self.release.wait(10)
        return self.inner.rebuild(*args)


def test_the_loop_never_writes_ahead_of_a_rebuild_still_on_the_thread(tmp_path, run):
    mirror = SlowRebuild(new_mirror("sqlite", str(tmp_path / "kv")))
    writer = MirrorWriter(mirror, inline=True)
    reads = Reads("sqlite", tmp_path / "kv")

    async def go():
        writer.start(asyncio.get_running_loop())
        kv = KVStateMachine()
        kv.apply_command(Command(STORE, "b", "old", blob("old"), 1))
        writer.enqueue(("rebuild", kv.copy_tree()))
        await asyncio.sleep(0)  # hand-over: the rebuild goes to the thread
        assert await asyncio.to_thread(mirror.started.wait, 5)
        ticket = writer.enqueue(("store", "b", "new", blob("new"), 2))
        await asyncio.sleep(0)
        # The thread is busy with the rebuild: the store must queue behind it, not be written
        # by the loop now (the rebuild would then wipe it).
        assert not writer.done(ticket) and writer.counters["inline_batches"] == 0
        mirror.release.set()
        await asyncio.wait_for(writer.wait(ticket), 5)

    try:
        run(go())
    finally:
        mirror.release.set()
        writer.stop()
    assert reads.fetch("b", "old") == "old" and reads.fetch("b", "new") == "new"


def test_a_master_that_fell_behind_installs_the_leaders_snapshot_into_its_local_copy(
    tmp_path, run, layout
):
    """Three runtimes with the cache's state machine: a master stopped while the others
    commit past a snapshot restarts, decodes the leader's snapshot off the loop, and its local
    copy then holds what the leader's holds (a key flushed meanwhile included)."""
    from tests.unit.runtime.helpers import LocalCluster  # pylint: disable=import-outside-toplevel

    writers = []

    def cache_machine():  # LocalCluster builds state machines inside the running loop
        writer = MirrorWriter(
            new_mirror(layout, str(tmp_path / f"copy{len(writers)}")), inline=layout == "sqlite"
        )
        writer.start(asyncio.get_running_loop())
        writers.append(writer)
        return CacheStateMachine(writer)

    def write(i, cmd):
        return encode_batch([cmd._replace(client="worker", seq=i + 1)])

    async def go():
        async with LocalCluster(
            snapshot_interval=30, snapshot_keep=3, sm_factory=cache_machine
        ) as c:
            leader, lagging = await c.stop_a_follower()
            await leader.propose(write(0, put("gone", "k", "flushed while it was away")))
            for i in range(1, 80):
                await leader.propose(write(i, put(f"minions/m{i % 20}", "data", {"n": i})))
            await leader.propose(write(80, Command(FLUSH, "gone", None)))
            await c.until("a snapshot", lambda: leader.counters["snapshots_taken"] >= 1)
            rt = await c.start(lagging)
            await c.until(
                "the lagging master caught up",
                lambda: rt.node.applied_index >= leader.node.commit_index,
                timeout=10,
            )
            for node in (leader, rt):
                await asyncio.wait_for(node.sm.writer.wait(node.sm.writer.ticket), 5)
            return leader, rt

    try:
        leader, rt = run(go())
    finally:
        for writer in writers:
            writer.stop()
    assert rt.counters["snapshots_restored"] >= 1
    assert rt.sm.kv.snapshot() == leader.sm.kv.snapshot()
    theirs = Reads(layout, rt.sm.writer.mirror.root)
    ours = Reads(layout, leader.sm.writer.mirror.root)
    expected = sorted(f"m{i}" for i in range(20))
    assert sorted(theirs.list_("minions")) == sorted(ours.list_("minions")) == expected
    for i in range(20):
        assert theirs.fetch(f"minions/m{i}", "data") == ours.fetch(f"minions/m{i}", "data")
    assert theirs.fetch("minions/m19", "data") == {"n": 79}
    assert not theirs.contains("gone", None)


def test_a_union_mirrors_the_merged_list_and_an_expire_removes_the_old_banks(harness, run):
    run(harness.apply(put("jobs/1", "jid", "a", ts=100)))
    run(harness.apply(put("jobs/1/ret", "web1", {"return": True}, ts=100)))
    run(harness.apply(put("jobs/2", "jid", "b", ts=300)))
    run(harness.apply(Command(UNION, "jobs/2", "minions", union_value(["web2"]), 301)))
    run(harness.apply(Command(UNION, "jobs/2", "minions", union_value(["web1", "web2"]), 302)))
    assert harness.reads.fetch("jobs/2", "minions") == ["web1", "web2"]  # as salt.payload reads it
    assert harness.reads.updated("jobs/2", "minions") == 302
    changed = []
    harness.sm.on_change = lambda bank, key, ticket: changed.append((bank, key))
    applied = run(harness.apply(Command(EXPIRE, "jobs", None, expire_value(200))))
    assert applied.result == 1
    assert changed == [("jobs/1", None)]
    assert sorted(harness.reads.list_("jobs")) == ["2"]
    assert not harness.reads.contains("jobs/1/ret", "web1")
    assert harness.reads.fetch("jobs/2", "minions") == ["web1", "web2"]
