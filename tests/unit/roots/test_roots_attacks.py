"""Attacks on the replicated roots (issue 20), each performed: two syncs interleaved, a private
source file, a name the log cannot carry, a directory swapped for a link mid-write, a local
edit that keeps its size and mtime, setuid bits, chunks named but never committed."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
import tracemalloc

import pytest
import salt.payload

from saltext_raft.roots import layout
from saltext_raft.roots import sync
from saltext_raft.roots.apply import RootsApplier
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES
from tests.unit.roots.fakes import MemoryCache
from tests.unit.roots.helpers import CAP
from tests.unit.roots.helpers import applier
from tests.unit.roots.helpers import do_sync
from tests.unit.roots.helpers import tree
from tests.unit.roots.helpers import write

BIG = bytes(range(251)) * (layout.CHUNK_BYTES * 3 // 251 + 1)  # four chunks
BIG_SHA = hashlib.sha256(BIG).hexdigest()


class SerializingCache(MemoryCache):
    """Stores what Salt's payload encoding can carry, as the real driver does."""

    def store(self, bank, key, value):
        super().store(bank, key, salt.payload.loads(salt.payload.dumps(value)))


class InterleavingCache(MemoryCache):
    """Runs ``hook`` once, just before the write of ``bank/key`` (another master's sync
    running between two chunks of this one)."""

    def __init__(self):
        super().__init__()
        self.trigger: tuple | None = None
        self.hook = None

    def store(self, bank, key, value):
        if self.trigger == (bank, key):
            self.trigger = None
            self.hook()
        super().store(bank, key, value)


def test_two_syncs_interleaved_do_not_leave_a_blob_that_is_never_sent_again(tmp_path):
    """Master B sends a 4-chunk file; between its chunks 1 and 2, master A (whose tree lacks
    that file) syncs and removes the half-sent blob. B then writes chunks 2, 3 and ``info``
    and commits its manifest: the blob claims to be complete but lacks chunks 0 and 1. The
    next sync from B must send it again, so the receivers converge."""
    src_a, src_b, dst, state = (tmp_path / n for n in ("a", "b", "dst", "state"))
    write(src_a, "top.sls", b"from a")
    write(src_b, "top.sls", b"from b")
    write(src_b, "big.bin", BIG)
    cache = InterleavingCache()
    cache.trigger = (layout.blob_bank(BIG_SHA), layout.chunk_key(2))
    cache.hook = lambda: do_sync(cache, src_a)
    do_sync(cache, src_b)
    assert cache.trigger is None  # A's sync did run in the middle of B's
    receiver = applier(cache, dst, state)
    failed = receiver.apply()["failed"]
    assert any("big.bin" in line for line in failed), failed  # cannot be reassembled
    do_sync(cache, src_b)  # the operator runs the sync again, from the source only
    report = receiver.apply()
    assert report["counts"]["failed"] == 0, report["failed"]
    assert tree(dst) == tree(src_b)


def test_a_private_source_file_is_not_made_world_readable_anywhere(tmp_path):
    """A pillar file kept 0600 (secrets) on the source must not become 0644 on the receivers,
    nor on the source master when its own engine applies the manifest to its own tree."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "secrets.sls", b"db_password: hunter2\n", mode=0o600)
    write(src, "deploy.sh", b"#!/bin/sh\n", mode=0o700)
    write(src, "public.sls", b"motd: hi\n", mode=0o644)
    cache = MemoryCache()
    do_sync(cache, src, kind="pillar_roots")
    receiver = applier(cache, dst, state, kind="pillar_roots")
    assert receiver.apply()["counts"]["failed"] == 0
    assert os.stat(dst / "secrets.sls").st_mode & 0o7777 == 0o600
    assert os.stat(dst / "deploy.sh").st_mode & 0o7777 == 0o700
    assert os.stat(dst / "public.sls").st_mode & 0o7777 == 0o644
    source = applier(cache, src, tmp_path / "state-src", kind="pillar_roots")
    assert source.apply()["counts"]["written"] == 0
    assert os.stat(src / "secrets.sls").st_mode & 0o7777 == 0o600
    assert os.stat(src / "deploy.sh").st_mode & 0o7777 == 0o700


def test_applying_on_the_source_never_widens_an_operators_modes(tmp_path):
    """A source master's own tree is the content: a pass there may set execute bits the
    manifest asks for and drop setuid, but never grants read or write the file lacked."""
    src = tmp_path / "src"
    write(src, "team.sls", b"x", mode=0o640)
    write(src, "tool", b"#!/bin/sh\n", mode=0o4750)
    cache = MemoryCache()
    do_sync(cache, src)
    applier(cache, src, tmp_path / "state").apply()
    assert os.stat(src / "team.sls").st_mode & 0o7777 == 0o640
    assert os.stat(src / "tool").st_mode & 0o7777 == 0o750


def test_setuid_and_group_write_do_not_travel(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "suid", b"#!/bin/sh\n", mode=0o6777)
    write(src, "gw.sls", b"x", mode=0o666)
    cache = MemoryCache()
    do_sync(cache, src)
    entries = cache.fetch(layout.MANIFESTS_BANK, "file_roots")["envs"]["base"]
    assert entries["suid"][2] == 0o755 and entries["gw.sls"][2] == 0o644
    applier(cache, dst, state).apply()
    assert os.stat(dst / "suid").st_mode & 0o7777 == 0o755
    assert os.stat(dst / "gw.sls").st_mode & 0o7777 == 0o644


def test_a_name_that_is_not_utf8_is_refused_before_anything_is_sent(tmp_path):
    """A file name with bytes that are not UTF-8 cannot be carried by the log's encoding:
    the sync must refuse it by name up front, not send every blob and then fail at the
    manifest with an encoding error."""
    src = tmp_path / "src"
    write(src, "good.sls", b"fine")
    with open(os.path.join(os.fsencode(str(src)), b"bad-\xff.sls"), "wb") as fh:
        fh.write(b"payload")
    cache = SerializingCache()
    with pytest.raises(sync.SyncRefused) as err:
        do_sync(cache, src)
    assert "bad-" in str(err.value) and "UTF-8" in str(err.value)
    assert cache.writes == 0


def test_a_directory_swapped_for_a_link_mid_write_does_not_redirect_the_write(tmp_path):
    """Between the open of ``sub`` and the write into it, ``sub`` is renamed away and a link
    to a directory outside the root takes its name: the write lands in the directory that
    was opened, never in the link's target."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    outside = tmp_path / "outside"
    outside.mkdir()
    write(src, "sub/f.sls", b"replicated")
    write(dst, "sub/keep", b"local")
    cache = MemoryCache()
    do_sync(cache, src)

    class Swapper:
        def __init__(self):
            self.done = False

        def fetch(self, bank, key):
            if bank.startswith(layout.BLOBS_BANK) and not self.done:
                self.done = True
                os.rename(dst / "sub", tmp_path / "moved")
                os.symlink(outside, dst / "sub")
            return cache.fetch(bank, key)

    swapper = Swapper()
    receiver = applier(swapper, dst, state)
    receiver.apply()
    assert swapper.done
    assert os.listdir(outside) == []
    assert (tmp_path / "moved" / "f.sls").read_bytes() == b"replicated"
    # the next pass sees the link in the way and reports it, still writing nothing outside
    report = receiver.apply()
    assert report["counts"]["diverged"] == 1 and os.listdir(outside) == []


def test_a_local_edit_with_the_same_size_and_mtime_is_not_overwritten(tmp_path):
    """An operator edits a replicated file on a receiver and keeps its size and mtime (``cp
    -p``, ``touch -r``, a restore): the change must still count as a local edit."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"v1-aaaa")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    st = os.stat(dst / "a.sls")
    (dst / "a.sls").write_bytes(b"LOCAL!!")  # same length
    os.utime(dst / "a.sls", ns=(st.st_atime_ns, st.st_mtime_ns))
    write(src, "a.sls", b"v2-bbbbbbbb")
    do_sync(cache, src)
    report = receiver.apply()
    assert (dst / "a.sls").read_bytes() == b"LOCAL!!"
    assert report["counts"]["diverged"] == 1


def test_a_manifest_naming_content_never_committed_writes_nothing_and_keeps_the_old(tmp_path):
    """A manifest (forged, or committed by a buggy source) names a blob with no chunks at all,
    or an ``info`` claiming one chunk of 16 MiB: the old file stays, nothing is half-written."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"old")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    ghost = hashlib.sha256(b"never sent").hexdigest()
    lying = hashlib.sha256(b"lying").hexdigest()
    cache.store(layout.blob_bank(lying), layout.INFO_KEY, {"size": 16 << 20, "chunks": 1})
    envs = {"base": {"a.sls": [ghost, 10, 0o644], "b.sls": [lying, 16 << 20, 0o644]}}
    cache.store(layout.MANIFESTS_BANK, "file_roots", layout.manifest(envs, "m9", 0))
    report = receiver.apply()
    assert report["counts"]["failed"] == 2 and report["counts"]["written"] == 0
    assert tree(dst) == {"a.sls": b"old"}


def _temp_files(root):
    return [
        os.path.join(d, n)
        for d, _, names in os.walk(str(root))
        for n in names
        if n.startswith(layout.TEMP_PREFIX)
    ]


def test_a_master_killed_mid_write_leaves_no_partial_file_behind_after_the_next_pass(tmp_path):
    """The engine is SIGKILLed between two chunks of a file (a forked child stands for it):
    its temporary file, half written, stays in the served tree, where Salt's fileserver would
    list and serve it. The next pass must remove it, and write the file."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "files/big.bin", BIG)
    cache = MemoryCache()
    do_sync(cache, src)

    class DiesOnSecondChunk:
        def fetch(self, bank, key):
            if key == layout.chunk_key(1):
                os.kill(os.getpid(), signal.SIGKILL)
            return cache.fetch(bank, key)

    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: applier(DiesOnSecondChunk(), dst, state).apply())
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert len(_temp_files(dst)) == 1  # what the death left: a partial file in the tree
    report = applier(cache, dst, state).apply()
    assert report["counts"]["written"] == 1 and report["counts"]["failed"] == 0
    assert _temp_files(dst) == []
    assert tree(dst) == tree(src)


class EntryLimitedCache(MemoryCache):
    """Refuses a value over one log entry, as the runtime does ("larger than max_entry_bytes")."""

    def store(self, bank, key, value):
        if len(salt.payload.dumps(value)) > DEFAULT_MAX_ENTRY_BYTES:
            raise RuntimeError("a proposal larger than max_entry_bytes")
        super().store(bank, key, value)


def test_a_tree_whose_manifest_cannot_fit_one_entry_is_refused_before_anything_is_sent(
    tmp_path,
):
    """Many files with long paths (1,500 paths of ~3 KB: a 4.5 MB manifest): the sync must
    refuse up front, not send every blob and then fail at the manifest, leaving blobs that
    every later sync (failing the same way) never removes."""
    src = tmp_path / "src"
    deep = os.path.join(*(f"{i:02d}" + "d" * 248 for i in range(11)))
    os.makedirs(src / deep)
    for i in range(1500):
        (src / deep / (f"{i:04d}" + "f" * 240)).write_bytes(b"%d" % i)
    cache = EntryLimitedCache()
    with pytest.raises(sync.SyncRefused, match="1500 files"):
        do_sync(cache, src)
    assert cache.writes == 0
    with pytest.raises(sync.SyncRefused, match="1500 files"):
        do_sync(cache, src, test=True)  # the preview says so too


class DiscardingStore(MemoryCache):
    """Keeps only the size of each value written (so the test measures the sync, not the
    store), and the largest one."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def store(self, bank, key, value):
        self.largest = max(self.largest, len(value) if isinstance(value, bytes) else 0)
        super().store(bank, key, b"" if isinstance(value, bytes) else value)


def test_a_16_mib_file_is_sent_and_reassembled_a_chunk_at_a_time(tmp_path):
    """Memory bound: neither the sync nor the pass ever holds the whole file (Python peak
    allocation under four chunks while a 16 MiB file goes through), and no value written to
    the log is larger than one chunk."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    big = bytes(range(256)) * (layout.DEFAULT_MAX_FILE_BYTES // 256)
    write(src, "big.bin", big)
    del big
    bound = 4 * layout.CHUNK_BYTES
    store = DiscardingStore()
    tracemalloc.start()
    try:
        do_sync(store, src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.largest == layout.CHUNK_BYTES and peak < bound, peak
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    tracemalloc.start()
    try:
        report = receiver.apply()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report["counts"]["written"] == 1 and peak < bound, peak
    assert os.path.getsize(dst / "big.bin") == layout.DEFAULT_MAX_FILE_BYTES


def test_a_fifo_planted_where_a_file_goes_is_reported_never_opened(tmp_path):
    """A local user plants a FIFO at a replicated path on a receiver: opening it would block
    the pass forever. The pass must report it and finish (bounded wait)."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"content")
    dst.mkdir()
    os.mkfifo(dst / "a.sls")
    cache = MemoryCache()
    do_sync(cache, src)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(applier(cache, dst, state).apply()), daemon=True
    )
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the pass before failing, so no thread is left behind
        fd = os.open(dst / "a.sls", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(10)
        pytest.fail("the pass blocked on a FIFO")
    assert result["counts"]["diverged"] == 1 and "special file" in result["diverged"][0]


def test_a_delete_does_not_remove_a_local_edit_that_kept_size_and_mtime(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"v1-aaaa")
    write(src, "b.sls", b"stays")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    st = os.stat(dst / "a.sls")
    (dst / "a.sls").write_bytes(b"LOCAL!!")
    os.utime(dst / "a.sls", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(src / "a.sls")
    do_sync(cache, src)
    report = receiver.apply()
    assert (dst / "a.sls").read_bytes() == b"LOCAL!!"
    assert report["counts"]["diverged"] == 1 and report["counts"]["deleted"] == 0


def test_a_mode_changed_by_hand_is_not_reverted_by_the_next_pass(tmp_path):
    """On the source master the operator runs ``chmod +x`` and, before the sync, the engine's
    one-minute recheck runs: the new mode must survive (it is the next sync's content), as a
    content edit would. On a receiver a hand-made mode change is kept too."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "run.sh", b"#!/bin/sh\n", mode=0o644)
    cache = MemoryCache()
    do_sync(cache, src)
    source = applier(cache, src, tmp_path / "state-src")
    receiver = applier(cache, dst, state)
    untouched = applier(cache, tmp_path / "dst2", tmp_path / "state2")
    source.apply()
    receiver.apply()
    untouched.apply()
    os.chmod(src / "run.sh", 0o755)
    os.chmod(dst / "run.sh", 0o600)
    source.apply()
    receiver.apply()
    assert os.stat(src / "run.sh").st_mode & 0o7777 == 0o755
    assert os.stat(dst / "run.sh").st_mode & 0o7777 == 0o600
    do_sync(cache, src)  # the sync carries the new mode
    assert cache.fetch(layout.MANIFESTS_BANK, "file_roots")["envs"]["base"]["run.sh"][2] == 0o755
    source.apply()
    assert os.stat(src / "run.sh").st_mode & 0o7777 == 0o755
    untouched.apply()  # a receiver whose mode nobody changed follows the manifest
    assert os.stat(tmp_path / "dst2" / "run.sh").st_mode & 0o7777 == 0o755


def _opts(tmp_path, name, root):
    return {
        "id": name,
        "cachedir": str(tmp_path / f"cache-{name}"),
        "raft_roots": ["file_roots"],
        "file_roots": {"base": [str(root)]},
    }


def test_a_sync_from_a_master_that_has_not_applied_the_latest_roots_is_refused(tmp_path):
    """Any master may run the sync, but one whose engine has not yet applied the latest
    manifest (a pass failed, or the operator is seconds too early) still holds the previous
    tree: syncing it would silently revert every master to old content and delete new files.
    The sync must refuse; once that master caught up, its sync is a no-op."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src, "a.sls", b"v1")
    cache = MemoryCache()
    opts_a, opts_b = _opts(tmp_path, "m1", src), _opts(tmp_path, "m2", dst)
    receiver_state = os.path.join(opts_b["cachedir"], "saltext_raft_roots", "applied.json")
    source_state = os.path.join(opts_a["cachedir"], "saltext_raft_roots", "applied.json")
    source = RootsApplier(cache, {"file_roots": {"base": str(src)}}, source_state, CAP)
    receiver = RootsApplier(cache, {"file_roots": {"base": str(dst)}}, receiver_state, CAP)
    sync.sync_from_opts(opts_a, store=cache)
    source.apply()
    receiver.apply()
    write(src, "a.sls", b"v2")
    write(src, "new.sls", b"new")
    sync.sync_from_opts(opts_a, store=cache)
    committed = cache.fetch(layout.MANIFESTS_BANK, "file_roots")
    with pytest.raises(sync.SyncRefused, match="not applied"):
        sync.sync_from_opts(opts_b, store=cache)  # m2 is behind: it still shows v1
    assert cache.fetch(layout.MANIFESTS_BANK, "file_roots") == committed
    receiver.apply()
    assert sync.sync_from_opts(opts_b, store=cache)["unchanged"] == 2
    # the source may still delete and edit what it synced
    source.apply()
    os.unlink(src / "new.sls")
    write(src, "a.sls", b"v3")
    report = sync.sync_from_opts(opts_a, store=cache)
    assert report["deleted"] == ["file_roots/base/new.sls"]
    assert report["changed"] == ["file_roots/base/a.sls"]
    # nor is a source refused for deleting a file it synced before its engine's next pass
    write(src, "quick.sls", b"q")
    sync.sync_from_opts(opts_a, store=cache)
    os.unlink(src / "quick.sls")
    assert sync.sync_from_opts(opts_a, store=cache)["deleted"] == ["file_roots/base/quick.sls"]


def test_environment_names_never_become_paths(tmp_path):
    """A forged manifest with environments ``..``, ``../etc`` and ``/``: an environment only
    selects this master's own configured directory, so ``..`` is skipped as unconfigured and a
    name with ``/`` refuses the manifest; nothing is written outside the root."""
    dst, state = tmp_path / "root" / "dst", tmp_path / "state"
    cache = MemoryCache()
    sha = hashlib.sha256(b"evil").hexdigest()
    cache.store(layout.blob_bank(sha), layout.chunk_key(0), b"evil")
    cache.store(layout.blob_bank(sha), layout.INFO_KEY, {"size": 4, "chunks": 1})
    receiver = applier(cache, dst, state)
    envs = {"..": {"x.sls": [sha, 4, 0o644]}, "base": {"ok.sls": [sha, 4, 0o644]}}
    cache.store(layout.MANIFESTS_BANK, "file_roots", layout.manifest(envs, "m9", 0))
    report = receiver.apply()
    assert report["skipped_envs"] == ["file_roots/.."] and report["counts"]["written"] == 1
    for bad in ("../etc", "/"):
        envs = {bad: {"x.sls": [sha, 4, 0o644]}}
        cache.store(layout.MANIFESTS_BANK, "file_roots", layout.manifest(envs, "m9", 0))
        report = receiver.apply()
        assert report["counts"]["failed"] == 1 and "manifest refused" in report["failed"][0]
    assert sorted(os.listdir(tmp_path)) == ["root", "state"]
    assert os.listdir(tmp_path / "root") == ["dst"] and os.listdir(dst) == ["ok.sls"]
