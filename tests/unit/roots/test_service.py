"""The engine's roots worker (``saltext_raft.roots.service``): passes run only once the local
copy caught up, on a manifest change, and the periodic scan runs the sync on a source master."""

from __future__ import annotations

import threading

import pytest

from saltext_raft.roots import layout
from saltext_raft.roots.config import RootsSettings
from saltext_raft.roots.service import RootsService
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.unit.roots.fakes import MemoryCache
from tests.unit.roots.helpers import do_sync
from tests.unit.roots.helpers import tree
from tests.unit.roots.helpers import write


def _service(tmp_path, cache, scan_interval=0.0, syncer=None):
    dst = tmp_path / "dst"
    opts = {"cachedir": str(tmp_path / "cache"), "file_roots": {"base": [str(dst)]}}
    settings = RootsSettings(
        kinds=("file_roots",),
        scan_interval=scan_interval,
        state_dir=str(tmp_path / "cache" / "saltext_raft_roots"),
    )
    return RootsService(opts, settings, reader=cache, syncer=syncer, recheck=3600), dst


def test_nothing_is_applied_before_the_copy_caught_up_then_each_manifest_change_is(tmp_path):
    src = tmp_path / "src"
    write(src, "a.sls", b"a")
    cache = MemoryCache()
    do_sync(cache, src)
    service, dst = _service(tmp_path, cache)
    service.start()
    try:
        service.changed(layout.MANIFESTS_BANK, "file_roots")  # before the catch-up: ignored
        with pytest.raises(WaitTimeout):  # bounded: no pass may come
            wait_until(lambda: service.passes, 0.3, "a pass before the catch-up")
        assert not dst.exists()
        service.changed(None, None)  # caught up
        wait_until(lambda: tree(dst) == {"a.sls": b"a"}, 10, "the first pass")
        write(src, "b.sls", b"b")
        do_sync(cache, src)
        service.changed(f"{layout.BLOBS_BANK}/x", "000000")  # a chunk: no pass for it
        service.changed(layout.MANIFESTS_BANK, "file_roots")
        wait_until(lambda: tree(dst) == tree(src), 10, "the pass for the new manifest")
        assert service.status()["last_error"] is None
    finally:
        service.stop()


def test_a_source_master_runs_the_sync_at_its_scan_interval(tmp_path):
    calls = threading.Semaphore(0)

    def syncer():
        calls.release()
        return {"added": []}

    service, _ = _service(tmp_path, MemoryCache(), scan_interval=0.05, syncer=syncer)
    service.changed(None, None)
    service.start()
    try:
        assert calls.acquire(timeout=10) and calls.acquire(timeout=10)  # two scans
        assert service.status()["last_scan"] == {"added": []}
    finally:
        service.stop()
