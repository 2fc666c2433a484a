"""One sync (``saltext_raft.roots.sync``) and its application on a receiving master
(``saltext_raft.roots.apply``), over an in-memory cache: content, deletes, idempotence, refusals,
and a source that dies between two chunks."""

from __future__ import annotations

import os

import pytest

from saltext_raft.roots import layout
from saltext_raft.roots import sync
from tests.unit.roots.fakes import Crash
from tests.unit.roots.fakes import MemoryCache
from tests.unit.roots.helpers import CAP
from tests.unit.roots.helpers import applier
from tests.unit.roots.helpers import do_sync
from tests.unit.roots.helpers import tree
from tests.unit.roots.helpers import write

BIG = bytes(range(256)) * (CAP // 256)  # exactly the 16 MiB cap


@pytest.fixture
def dirs(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    return src, dst, state


def test_a_tree_synced_once_is_reproduced_with_modes_and_a_16_mib_file(dirs):
    src, dst, state = dirs
    write(src, "top.sls", b"base:\n  '*': [web]\n")
    write(src, "web/init.sls", b"nginx: pkg.installed\n")
    write(src, "bin/tool", b"#!/bin/sh\necho\n", mode=0o4775)
    write(src, "files/big.bin", BIG)
    cache = MemoryCache()
    report = do_sync(cache, src)
    assert report["added"] == [
        "file_roots/base/bin/tool",
        "file_roots/base/files/big.bin",
        "file_roots/base/top.sls",
        "file_roots/base/web/init.sls",
    ]
    assert report["sent_blobs"] == 4
    assert report["sent_chunks"] == 32 + 3  # the 16 MiB file in 32 chunks of 512 KiB
    assert report["sent_bytes"] == len(BIG) + 19 + 21 + 15
    done = applier(cache, dst, state).apply()
    assert done["counts"]["written"] == 4 and done["counts"]["failed"] == 0
    assert tree(dst) == tree(src)
    assert os.stat(dst / "bin" / "tool").st_mode & 0o7777 == 0o755
    assert os.stat(dst / "top.sls").st_mode & 0o7777 == 0o644
    assert not [n for n in os.listdir(dst / "files") if n.startswith(layout.TEMP_PREFIX)]


def test_a_second_sync_of_an_unchanged_tree_sends_nothing(dirs):
    src, _, _ = dirs
    write(src, "a.sls", b"a")
    write(src, "b.sls", b"a")  # same content: one blob
    cache = MemoryCache()
    assert do_sync(cache, src)["sent_blobs"] == 1
    writes = cache.writes
    again = do_sync(cache, src)
    assert cache.writes == writes  # not one write
    assert again["added"] == again["changed"] == again["deleted"] == []
    assert again["unchanged"] == 2 and again["sent_bytes"] == 0


def test_changes_and_deletes_propagate_and_unused_content_is_removed(dirs):
    src, dst, state = dirs
    write(src, "keep.sls", b"keep")
    write(src, "edit.sls", b"v1")
    write(src, "gone/deep/old.sls", b"old")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    write(src, "edit.sls", b"v2")
    os.unlink(src / "gone" / "deep" / "old.sls")
    report = do_sync(cache, src)
    assert report["changed"] == ["file_roots/base/edit.sls"]
    assert report["deleted"] == ["file_roots/base/gone/deep/old.sls"]
    assert report["sent_blobs"] == 1 and report["removed_blobs"] == 2  # v1 and "old"
    assert len(cache.list_(layout.BLOBS_BANK)) == 2  # keep, v2
    done = receiver.apply()
    assert done["deleted"] == ["file_roots/base/gone/deep/old.sls"]
    assert tree(dst) == {"keep.sls": b"keep", "edit.sls": b"v2"}
    assert not (dst / "gone").exists()  # its emptied directories went with it


def test_test_mode_reports_without_sending(dirs):
    src, _, _ = dirs
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    report = do_sync(cache, src, test=True)
    assert report["test"] and report["added"] == ["file_roots/base/a.sls"]
    assert cache.writes == 0


def test_a_tree_with_anything_refused_sends_nothing(dirs, tmp_path):
    src, dst, state = dirs
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    do_sync(cache, src)
    before = (cache.writes, {k: dict(v) for k, v in cache.banks.items()})
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:hash")
    (src / "shadow").symlink_to(secret)
    os.mkfifo(src / "fifo")
    with open(src / "huge", "wb") as fh:
        fh.truncate(CAP + 1)
    os.unlink(src / "a.sls")  # would be a delete, if anything were sent
    with pytest.raises(sync.SyncRefused) as err:
        do_sync(cache, src)
    assert sorted(p for p, _ in err.value.refused) == [
        "file_roots/base/fifo",
        "file_roots/base/huge",
        "file_roots/base/shadow",
    ]
    assert (cache.writes, cache.banks) == before
    applier(cache, dst, state).apply()
    assert tree(dst) == {"a.sls": b"a"}  # nothing lost on the receivers


def test_a_missing_source_tree_is_refused_rather_than_deleting_everything(dirs):
    src, _, _ = dirs
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    do_sync(cache, src)
    with pytest.raises(sync.SyncRefused, match="does not exist"):
        sync.sync(cache, {"file_roots": {"base": str(src / "nope")}}, max_file_bytes=CAP)


@pytest.mark.parametrize("crash_after", [0, 1, 5, 33])
def test_a_source_dying_between_chunks_leaves_nothing_visible_and_the_next_sync_converges(
    dirs, crash_after
):
    """The two new blobs are 32 + 1 chunks and an info each, then the manifest: the crash lands
    before any chunk, after the first chunk, mid-blob, or after the chunks of a whole blob."""
    src, dst, state = dirs
    write(src, "old.sls", b"old")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    write(src, "files/big.bin", BIG)
    write(src, "new.sls", b"new")
    cache.fail_after = cache.writes + crash_after
    with pytest.raises(Crash):
        do_sync(cache, src)
    # a receiving master applying now sees the old manifest only: no partial file anywhere
    done = receiver.apply()
    assert done["counts"]["written"] == 0 and done["counts"]["failed"] == 0
    assert tree(dst) == {"old.sls": b"old"}
    cache.fail_after = None
    report = do_sync(cache, src)  # the source restarted and runs the sync again
    assert report["added"] == ["file_roots/base/files/big.bin", "file_roots/base/new.sls"]
    receiver.apply()
    assert tree(dst) == tree(src)
    assert len(cache.list_(layout.BLOBS_BANK)) == 3


def test_an_unchanged_sync_still_removes_what_a_crashed_sync_left(dirs):
    src, _, _ = dirs
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    do_sync(cache, src)
    write(src, "b.sls", b"b")
    cache.fail_after = cache.writes + 1  # b's chunk committed, its info not
    with pytest.raises(Crash):
        do_sync(cache, src)
    cache.fail_after = None
    os.unlink(src / "b.sls")  # the operator gave up on b
    report = do_sync(cache, src)
    assert report["added"] == report["changed"] == report["deleted"] == []
    assert report["removed_blobs"] == 1 and len(cache.list_(layout.BLOBS_BANK)) == 1


def test_a_sync_removes_blobs_a_crashed_sync_left_and_nothing_names(dirs):
    src, _, _ = dirs
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    write(src, "b.sls", b"b" * 10)
    cache.fail_after = 1  # one chunk of one blob, no info
    with pytest.raises(Crash):
        do_sync(cache, src)
    cache.fail_after = None
    os.unlink(src / "b.sls")
    os.unlink(src / "a.sls")
    write(src, "c.sls", b"c")
    report = do_sync(cache, src)
    assert report["removed_blobs"] == 1
    assert len(cache.list_(layout.BLOBS_BANK)) == 1


def test_pillar_and_file_roots_are_separate_manifests(tmp_path):
    files, pillar = tmp_path / "f", tmp_path / "p"
    write(files, "top.sls", b"files")
    write(pillar, "top.sls", b"pillar")
    cache = MemoryCache()
    trees = {"file_roots": {"base": str(files)}, "pillar_roots": {"base": str(pillar)}}
    sync.sync(cache, trees, max_file_bytes=CAP)
    assert set(cache.banks[layout.MANIFESTS_BANK]) == {"file_roots", "pillar_roots"}
    # a sync of only file_roots keeps the pillar's blobs: another kind still names them
    write(files, "top.sls", b"files2")
    sync.sync(cache, {"file_roots": {"base": str(files)}}, max_file_bytes=CAP)
    assert len(cache.list_(layout.BLOBS_BANK)) == 2


def test_sync_from_opts_refuses_when_raft_roots_is_off():
    with pytest.raises(sync.SyncRefused, match="raft_roots is not enabled"):
        sync.sync_from_opts({"file_roots": {"base": ["/srv/salt"]}}, store=MemoryCache())
