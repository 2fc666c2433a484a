"""Replicated roots through real Raft: three in-process engines (runtime + cache service each,
tests/functional/cache/inprocess.py), each with the engine's roots service and its own
``file_roots``; the sync runs as ``salt-run raft.sync_roots`` runs it, through master 1's cache
socket. Covers what a unit test with an in-memory cache cannot: chunks and manifests committed
through the log, applied on every master once its local copy shows them, and a master that was
stopped during a sync converging when it starts again from its own log."""

from __future__ import annotations

import dataclasses
import os

import pytest
import salt.cache
import salt.config
from salt.exceptions import SaltCacheError

from saltext_raft.replicated.config import BACKENDS
from saltext_raft.roots import config as rootsconfig
from saltext_raft.roots import layout
from saltext_raft.roots import sync
from saltext_raft.roots.service import RootsService
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import InProcessCluster
from tests.unit.roots.helpers import tree
from tests.unit.roots.helpers import write

IDS = ("m1", "m2", "m3")
BIG = os.urandom(3 * layout.CHUNK_BYTES + 123)


def wait_for(predicate, what, timeout=20):
    try:
        return wait_until(predicate, timeout, what, interval=0.02)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def _started_cluster(tmp_path, backend, scan_interval=None):
    """The three engines; with ``scan_interval``, m1's roots service scans its trees at that
    interval (below the option's 5 s floor, which ``test_config`` covers, to keep this short)."""
    roots_dir = tmp_path / "roots"
    services: dict[str, RootsService] = {}

    def opts(nid):
        return dict(
            c.opts(nid), raft_roots=["file_roots"], file_roots={"base": [str(roots_dir / nid)]}
        )

    def attach(nid, cache_service):
        old = services.pop(nid, None)
        if old is not None:
            old.stop()
        o = opts(nid)
        settings = rootsconfig.from_opts(o)
        if scan_interval is not None and nid == "m1":
            settings = dataclasses.replace(settings, scan_interval=scan_interval)
        roots = RootsService(o, settings, recheck=0.5)
        cache_service.watch(layout.ROOTS_BANK, roots.changed)
        roots.start()
        services[nid] = roots

    os.makedirs(roots_dir / "m1")
    c = InProcessCluster(
        str(tmp_path / "c"), ids=IDS, base_opts={"raft_cache_backend": backend}, on_service=attach
    )
    c.roots, c.roots_dir, c.roots_opts = services, roots_dir, opts
    try:
        for nid in IDS:
            c.start(nid)
        wait_for(lambda: c.leader() is not None, "a leader")
        c.wait_caught_up()
        yield c
    finally:
        for service in services.values():
            service.stop()
        c.close()


# Each fixture runs once per layout of the local copies (``raft_cache_backend``): the roots
# service reads the manifests and blobs through the driver, whatever the layout.
@pytest.fixture(params=BACKENDS)
def cluster(tmp_path, request):
    yield from _started_cluster(tmp_path, request.param)


@pytest.fixture(params=BACKENDS)
def scanning_cluster(tmp_path, request):
    yield from _started_cluster(tmp_path, request.param, scan_interval=0.3)


def writes(c) -> int:
    return sum(s.counters["writes"] for s in c.services.values())


def same_tree(c, nid):
    return tree(c.roots_dir / nid) == tree(c.roots_dir / "m1")


def test_a_sync_on_one_master_is_served_by_every_master_and_a_master_down_converges(cluster):
    c = cluster
    src = c.roots_dir / "m1"
    write(src, "top.sls", b"base:\n  '*': [web]\n")
    write(src, "web/init.sls", b"nginx: pkg.installed\n")
    write(src, "web/files/big.bin", BIG)
    report = sync.sync_from_opts(c.roots_opts("m1"))
    assert report["sent_blobs"] == 3 and report["sent_chunks"] == 4 + 2
    for nid in ("m2", "m3"):
        wait_for(lambda nid=nid: same_tree(c, nid), f"{nid}'s tree equal to m1's")

    # idempotence: an unchanged tree commits nothing
    before = writes(c)
    again = sync.sync_from_opts(c.roots_opts("m1"))
    assert again["unchanged"] == 3 and again["sent_bytes"] == 0
    assert writes(c) == before

    # m3 is down while a file changes and another is deleted
    c.roots["m3"].stop()
    c.stop("m3")
    write(src, "top.sls", b"base:\n  '*': [web, db]\n")
    os.unlink(src / "web" / "files" / "big.bin")
    report = sync.sync_from_opts(c.roots_opts("m1"))
    assert report["changed"] == ["file_roots/base/top.sls"]
    assert report["deleted"] == ["file_roots/base/web/files/big.bin"]
    wait_for(lambda: same_tree(c, "m2"), "m2 shows the change and the delete")
    assert (c.roots_dir / "m3" / "web" / "files" / "big.bin").exists()  # m3 is still down
    c.start("m3")  # from its own log; catches up with the cluster, then applies
    wait_for(
        lambda: c.roots["m3"].status()["passes"] >= 1 and same_tree(c, "m3"),
        "m3 converged after its restart (a pass done, its tree equal to m1's)",
    )
    # the emptied directory goes right after its last file, within the same pass
    wait_for(lambda: not (c.roots_dir / "m3" / "web" / "files").exists(), "web/files removed")
    status = c.roots["m3"].status()
    assert status["last_error"] is None
    assert status["last_pass"]["counts"]["failed"] == 0


def test_a_16_mib_file_goes_through_the_log_in_chunks_and_one_over_the_cap_is_refused(cluster):
    """Through the real runtime's entry and message limits (``max_entry_bytes`` 4 MiB): the
    largest file accepted by default arrives whole on every master."""
    c = cluster
    src = c.roots_dir / "m1"
    cap = layout.DEFAULT_MAX_FILE_BYTES
    write(src, "big/at-cap.bin", os.urandom(cap))
    report = sync.sync_from_opts(c.roots_opts("m1"))
    assert report["sent_chunks"] == 32 and report["sent_bytes"] == cap
    for nid in ("m2", "m3"):
        wait_for(lambda nid=nid: same_tree(c, nid), f"the 16 MiB file on {nid}", timeout=60)
    with open(src / "big" / "over.bin", "wb") as fh:
        fh.truncate(cap + 1)
    with pytest.raises(sync.SyncRefused) as err:
        sync.sync_from_opts(c.roots_opts("m1"))
    assert err.value.refused == [
        ("file_roots/base/big/over.bin", f"{cap + 1} bytes: over raft_roots_max_file_bytes ({cap})")
    ]


def test_the_source_masters_periodic_scan_sends_changes_nobody_synced(scanning_cluster):
    """``raft_roots_scan_interval`` on m1: its roots service runs the sync itself, through
    m1's cache socket and the log; nobody calls ``raft.sync_roots``. A new file, a change and
    a delete all reach the other masters' trees."""
    c = scanning_cluster
    src = c.roots_dir / "m1"
    write(src, "top.sls", b"base:\n  '*': [web]\n")
    write(src, "web/init.sls", b"nginx: pkg.installed\n")
    for nid in ("m2", "m3"):
        wait_for(lambda nid=nid: same_tree(c, nid), f"{nid} has m1's new files, unsynced")
    write(src, "top.sls", b"base:\n  '*': [web, db]\n")
    os.unlink(src / "web" / "init.sls")
    for nid in ("m2", "m3"):
        wait_for(lambda nid=nid: same_tree(c, nid), f"{nid} has m1's change and delete")
    # The emptied directory goes right after its last file, within the same pass: the tree
    # can look equal a moment before (seen once in 20 runs).
    wait_for(lambda: not (c.roots_dir / "m2" / "web").exists(), "m2's emptied web/ removed")
    scan = c.roots["m1"].status()
    assert scan["last_error"] is None, scan
    assert c.roots["m2"].status()["scan_interval"] == 0  # only m1 scans


class SaltCacheStore:
    """The replicated cache as any Salt cache caller reaches it: ``salt.cache.Cache`` with
    ``cache: raft`` (what ``salt-run cache.store``/``cache.fetch``/``cache.list``/
    ``cache.flush`` use, and so whoever is granted them through ``external_auth``)."""

    def __init__(self, opts: dict):
        full = salt.config.DEFAULT_MASTER_OPTS.copy()
        full.update(opts)
        full["__role"] = "master"
        self._cache = salt.cache.Cache(full)

    def fetch(self, bank, key):
        return self._cache.fetch(bank, key)

    def contains(self, bank, key):
        return self._cache.contains(bank, key)

    def list_(self, bank):
        return self._cache.list(bank)

    def store(self, bank, key, value):
        self._cache.store(bank, key, value)

    def flush(self, bank, key=None):
        self._cache.flush(bank, key)


def test_a_salt_cache_caller_cannot_write_the_roots_every_master_serves(cluster, tmp_path):
    """Red team 2026-12-07: the roots store's banks were open to every caller of Salt's cache:
    a user granted ``salt-run cache.store`` (and ``cache.fetch``/``cache.list``) wrote a
    manifest and its blob, and every master put the file into its ``file_roots`` for minions
    to run. The bank is reserved now, as the key store's and the cluster secrets' are: only
    ``raft.sync_roots`` (the master's user) writes it."""
    c = cluster
    rogue = tmp_path / "rogue"
    write(rogue, "top.sls", b"base:\n  '*': [owned]\n")
    write(rogue, "owned.sls", b"run: cmd.run: [{name: 'id > /tmp/owned'}]\n")
    store = SaltCacheStore(c.opts("m2"))
    with pytest.raises(SaltCacheError, match="reserved"):
        sync.sync(store, {"file_roots": {"base": str(rogue)}}, max_file_bytes=1 << 20)
    with pytest.raises(SaltCacheError, match="reserved"):
        store.flush(layout.MANIFESTS_BANK)
    # the way that stays open: the master's user, through raft.sync_roots on master 1
    write(c.roots_dir / "m1", "top.sls", b"base:\n  '*': [web]\n")
    sync.sync_from_opts(c.roots_opts("m1"))
    for nid in ("m2", "m3"):
        wait_for(lambda nid=nid: same_tree(c, nid), f"{nid}'s tree equal to m1's")
    assert not (c.roots_dir / "m2" / "owned.sls").exists()
