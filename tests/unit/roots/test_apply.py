"""A receiving master writing the replicated roots (``saltext_raft.roots.apply``): chunks that
do not reassemble, local edits, and attacks planted in the receiving tree or in a manifest."""

from __future__ import annotations

import hashlib
import os

import pytest

from saltext_raft.roots import layout
from tests.unit.roots.fakes import MemoryCache
from tests.unit.roots.helpers import applier
from tests.unit.roots.helpers import do_sync
from tests.unit.roots.helpers import tree
from tests.unit.roots.helpers import write

DATA = os.urandom(layout.CHUNK_BYTES * 2 + 1000)  # three chunks
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def synced(tmp_path):
    """A cache holding ``big.bin`` (three chunks) and ``a.sls``; the receiver applied it."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"a1")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    receiver.apply()
    write(src, "big.bin", DATA)
    write(src, "a.sls", b"a2")
    return cache, src, dst, receiver


def _chunks(cache):
    return cache.banks[layout.blob_bank(SHA)]


def _store_out_of_order(cache, src):
    """Store the big blob's chunks last first, then its info, as a sync could if reordered."""
    do_sync(cache, src)
    bank = cache.banks.pop(layout.blob_bank(SHA))
    for key in sorted(bank, reverse=True):
        cache.store(layout.blob_bank(SHA), key, bank[key])


def test_chunks_committed_out_of_order_reassemble(synced):
    cache, src, dst, receiver = synced
    _store_out_of_order(cache, src)
    assert receiver.apply()["counts"]["failed"] == 0
    assert tree(dst) == tree(src)


@pytest.mark.parametrize(
    "damage",
    [
        "torn",  # a chunk's bytes cut short
        "flipped",  # one byte changed
        "missing",  # a chunk not there
        "duplicate",  # chunk 1 holds chunk 0's bytes again
        "info_lies",  # info claims fewer chunks
    ],
)
def test_chunks_that_do_not_reassemble_leave_the_old_file_and_are_reported(synced, damage):
    cache, src, dst, receiver = synced
    do_sync(cache, src)
    chunks = _chunks(cache)
    whole = dict(chunks)
    if damage == "torn":
        chunks["000001"] = chunks["000001"][:-7]
    elif damage == "flipped":
        c = bytearray(chunks["000002"])
        c[0] ^= 1
        chunks["000002"] = bytes(c)
    elif damage == "missing":
        del chunks["000001"]
    elif damage == "duplicate":
        chunks["000001"] = chunks["000000"]
    else:
        chunks["info"] = dict(chunks["info"], chunks=2)
    report = receiver.apply()
    assert report["counts"]["failed"] == 1
    assert report["failed"][0].startswith("file_roots/base/big.bin: content")
    assert tree(dst) == {"a.sls": b"a2"}  # the other file applied, the broken one not at all
    assert not [n for n in os.listdir(dst) if n.startswith(layout.TEMP_PREFIX)]
    # once the local copy shows the whole blob (as the log has it), the next pass writes it
    cache.banks[layout.blob_bank(SHA)] = whole
    assert receiver.apply()["counts"]["failed"] == 0
    assert tree(dst) == tree(src)


def test_a_local_edit_is_neither_overwritten_nor_deleted_and_is_reported(synced):
    cache, src, dst, receiver = synced
    write(dst, "a.sls", b"edited by hand on this master")
    report = receiver.apply() if do_sync(cache, src) else None
    assert report["counts"]["diverged"] == 1
    assert "a.sls: changed in the roots, but edited here" in report["diverged"][0]
    assert tree(dst)["a.sls"] == b"edited by hand on this master"
    assert tree(dst)["big.bin"] == DATA
    # deleted in the roots while edited here: kept
    os.unlink(src / "a.sls")
    do_sync(cache, src)
    report = receiver.apply()
    assert "deleted in the roots, but edited here; kept" in report["diverged"][0]
    assert tree(dst)["a.sls"] == b"edited by hand on this master"


def test_a_file_that_was_there_before_is_not_overwritten_but_a_removed_one_comes_back(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "top.sls", b"replicated")
    write(dst, "top.sls", b"local before the roots were replicated")
    cache = MemoryCache()
    do_sync(cache, src)
    receiver = applier(cache, dst, state)
    assert receiver.apply()["counts"]["diverged"] == 1
    assert tree(dst)["top.sls"] == b"local before the roots were replicated"
    os.unlink(dst / "top.sls")  # the operator resolves it by removing the local file
    assert receiver.apply()["written"] == ["file_roots/base/top.sls"]
    assert tree(dst)["top.sls"] == b"replicated"


def test_a_symlink_planted_in_the_receiving_tree_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "sub/file.sls", b"payload")
    write(src, "victim", b"payload")
    dst.mkdir()
    (dst / "sub").symlink_to(outside)  # a directory component that is a link
    (dst / "victim").symlink_to(outside / "victim")  # the file itself is a link
    cache = MemoryCache()
    do_sync(cache, src)
    report = applier(cache, dst, state).apply()
    assert report["counts"]["written"] == 0 and report["counts"]["diverged"] == 2
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"precious"
    assert os.path.islink(dst / "sub") and os.path.islink(dst / "victim")


def test_a_manifest_naming_paths_outside_the_root_writes_nothing(tmp_path):
    """A forged manifest (the log is authenticated, but defence in depth): nothing outside the
    root is created, and the whole manifest is refused."""
    dst, state = tmp_path / "root" / "dst", tmp_path / "state"
    cache = MemoryCache()
    sha = hashlib.sha256(b"evil").hexdigest()
    cache.store(layout.blob_bank(sha), "000000", b"evil")
    cache.store(layout.blob_bank(sha), layout.INFO_KEY, {"size": 4, "chunks": 1})
    for path in ("../escape", "/tmp/abs-escape", "ok/../../escape2"):
        envs = {"base": {path: [sha, 4, 0o644], "fine.sls": [sha, 4, 0o644]}}
        cache.store(layout.MANIFESTS_BANK, "file_roots", layout.manifest(envs, "m1", 0))
        report = applier(cache, dst, state).apply()
        assert report["counts"]["failed"] == 1 and "manifest refused" in report["failed"][0]
    assert not os.path.exists("/tmp/abs-escape")
    assert set(os.listdir(tmp_path)) <= {"root", "state"}  # no escape, escape2
    assert not (tmp_path / "root").exists() or os.listdir(tmp_path / "root") == []


def test_environments_this_master_does_not_configure_are_reported_not_written(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    do_sync(cache, src, env="dev")
    report = applier(cache, dst, state, env="base").apply()
    assert report["skipped_envs"] == ["file_roots/dev"]
    assert not dst.exists()


def test_the_record_survives_a_restart_and_an_unchanged_file_is_not_read_again(synced):
    cache, src, dst, receiver = synced
    do_sync(cache, src)
    receiver.apply()
    again = applier(cache, dst, os.path.dirname(receiver.state_path))  # a new engine process
    again.state_path = receiver.state_path
    report = again.apply()
    assert report["counts"] == {
        "written": 0,
        "deleted": 0,
        "diverged": 0,
        "failed": 0,
        "in_sync": 2,
    }
    assert os.stat(os.path.dirname(receiver.state_path)).st_mode & 0o077 == 0


def test_an_environment_whose_directory_cannot_be_made_fails_alone(tmp_path):
    src, state = tmp_path / "src", tmp_path / "state"
    write(src, "a.sls", b"a")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    cache = MemoryCache()
    do_sync(cache, src)
    report = applier(cache, blocker / "dst", state).apply()
    assert report["counts"]["failed"] == 1 and report["failed"][0].startswith("file_roots/base:")


def test_a_diverged_path_is_logged_once_not_on_every_pass(synced, caplog):
    cache, src, dst, receiver = synced
    do_sync(cache, src)
    write(dst, "a.sls", b"edited here")
    for _ in range(3):
        assert receiver.apply()["counts"]["diverged"] == 1
    warnings = [r for r in caplog.records if "edited here" in r.getMessage()]
    assert len(warnings) == 1
