"""The ``raft`` cache driver through a real Salt loader (``salt.cache.Cache(opts)`` with
``cache: raft``) against in-process engines (runtime + CacheService per "master").

Several "masters" share this process, but Salt's loader gives an extension module the
``__opts__`` of the loader used last (a real master process has one set of opts, so this only
matters here): every operation therefore goes through a freshly built ``Cache``.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import salt.cache
import salt.config
from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import UnknownCommand
from saltext_raft.kv.machine import decode_entry
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import driver as cachedriver
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import InProcessCluster
from tests.functional.cache.inprocess import started_cluster


def wait_for(predicate, timeout, what):
    try:
        return wait_until(predicate, timeout, what, interval=0.01)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def salt_opts(opts: dict) -> dict:
    full = salt.config.DEFAULT_MASTER_OPTS.copy()
    full.update(opts)
    full["__role"] = "master"
    return full


LAYOUTS = ("localfs", "sqlite")


@pytest.fixture(scope="module", params=LAYOUTS)
def cluster(tmp_path_factory, request):
    """Three masters whose local copies use one layout (``raft_cache_backend``)."""
    with started_cluster(
        str(tmp_path_factory.mktemp("cache")),
        ("m1", "m2", "m3"),
        base_opts={"raft_cache_backend": request.param},
    ) as c:
        yield c


class Caches:
    """``caches[nid]`` is a fresh ``salt.cache.Cache`` for that master (see the docstring)."""

    def __init__(self, cluster, **extra):
        self.cluster = cluster
        self.extra = extra

    def __getitem__(self, nid):
        return salt.cache.Cache(salt_opts(dict(self.cluster.opts(nid), **self.extra)))


@pytest.fixture(scope="module")
def caches(cluster):
    return Caches(cluster)


def test_the_loader_finds_the_raft_driver(caches):
    cache = caches["m1"]
    assert cache.driver == "raft"
    assert "raft.store" in cache.modules and "raft.list" in cache.modules


def test_store_then_fetch_on_the_same_master_needs_no_wait(caches):
    # read-your-writes on the writing master: store returns after the local mirror has it
    for i in range(20):
        caches["m2"].store("ryw", "k", {"i": i})
        assert caches["m2"].fetch("ryw", "k") == {"i": i}


def test_a_value_stored_on_one_master_is_read_on_the_others(caches):
    caches["m1"].store("minions/web1", "data", {"grains": {"os": "Debian"}, "pillar": {}})
    for nid in ("m2", "m3"):
        wait_for(
            lambda nid=nid: caches[nid].fetch("minions/web1", "data") != {},
            5,
            f"minions/web1 on {nid}",
        )
        assert caches[nid].fetch("minions/web1", "data")["grains"] == {"os": "Debian"}
        assert caches[nid].list("minions") == ["web1"]
        assert caches[nid].contains("minions/web1", "data")
        assert caches[nid].contains("minions/web1")
        assert not caches[nid].contains("minions/web1", "mine")
    # updated comes from the proposer's timestamp: equal on every master
    stamps = {caches[n].updated("minions/web1", "data") for n in ("m1", "m2", "m3")}
    assert len(stamps) == 1 and abs(stamps.pop() - time.time()) < 60


def test_missing_keys_read_like_localfs(caches):
    assert caches["m1"].fetch("nothere", "k") == {}
    assert caches["m1"].updated("nothere", "k") is None
    assert caches["m1"].list("nothere") == []
    assert caches["m1"].contains("nothere") is False


def test_flush_key_and_bank_replicate(caches):
    c1 = caches["m1"]
    c1.store("fl/a", "k1", 1)
    c1.store("fl/a", "k2", 2)
    c1.store("fl/b", "k", 3)
    assert c1.flush("fl/a", "k1") is True
    assert c1.flush("fl/a", "k1") is False  # already gone: as localfs says
    assert sorted(c1.list("fl/a")) == ["k2"]
    assert c1.flush("fl") is True
    assert c1.list("fl") == [] and not c1.contains("fl")
    wait_for(lambda: not caches["m3"].contains("fl"), 5, "the flush on m3")


def test_add_stores_once_through_the_cluster_and_refuses_a_keyless_request(cluster, caches):
    """``cachedriver.add`` (the cache import's write) is decided by the cluster: the first add
    stores and replicates, a later one leaves the key as it is."""
    opts = salt_opts(cluster.opts("m1"))
    assert cachedriver.add(opts, "adds/web1", "mine", {"v": 1}) is True
    assert cachedriver.add(salt_opts(cluster.opts("m2")), "adds/web1", "mine", {"v": 2}) is False
    wait_for(lambda: caches["m3"].fetch("adds/web1", "mine") == {"v": 1}, 5, "the add on m3")
    assert caches["m2"].fetch("adds/web1", "mine") == {"v": 1}
    client = cachedriver.EngineClient(cachedriver._settings(opts).socket)
    try:
        answer = client.call({"op": "cache.add", "bank": "adds", "key": None, "value": ""}, 5)
    finally:
        client.close()
    assert answer["ok"] is False and answer["error"]["code"] == "rejected", answer
    with pytest.raises(SaltCacheError, match="leave the cache directory"):
        cachedriver.add(opts, "../escape", "k", 1)


def test_linearizable_reads_see_a_write_made_on_another_master(cluster, caches):
    lin = Caches(cluster, raft_cache_linearizable_reads=True)
    for i in range(10):
        caches["m1"].store("lin", "k", i)
        assert lin["m3"].fetch("lin", "k") == i  # no polling: the barrier waits for the mirror


def test_concurrent_writers_in_one_process_lose_nothing(caches):
    # Threads of one worker get their own client ids: dedup by (client, seq) must not drop the
    # write of a thread whose sequence number happens to commit after another thread's.
    errors = []

    cache = caches["m2"]  # one loader shared by the threads, as in a worker

    def writer(t):
        try:
            for i in range(25):
                cache.store(f"conc/t{t}", f"k{i}", i)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    for t in range(16):
        assert len(caches["m2"].list(f"conc/t{t}")) == 25


@pytest.mark.skipif(
    "expires" not in salt.cache.Cache.store.__code__.co_varnames, reason="Salt 3008+ only"
)
def test_expires_is_honoured_like_salt_does_for_drivers_without_native_expiry(caches):
    caches["m1"].store("exp", "live", "v", expires=3600)
    caches["m1"].store("exp", "dead", "v", expires=-10)
    assert caches["m1"].fetch("exp", "live") == "v"
    assert caches["m1"].fetch("exp", "dead") == {}


def test_bad_names_are_refused_before_reaching_the_engine(caches):
    with pytest.raises(SaltCacheError, match="leave the cache directory"):
        caches["m1"].store("../escape", "k", 1)


def test_flushing_the_root_bank_is_refused_and_every_bank_stays(caches):
    """Regression (issue 18, L7): ``flush("")`` through the driver removed every bank on every
    master (the minion keys of 3008's key store included)."""
    c1 = caches["m1"]
    c1.store("root-flush/a", "k", "kept")
    wait_for(lambda: caches["m3"].fetch("root-flush/a", "k") == "kept", 5, "the store on m3")
    for bank in ("", "/"):
        with pytest.raises(SaltCacheError, match="would remove every bank|would leave"):
            c1.flush(bank)
    for nid in ("m1", "m2", "m3"):
        assert caches[nid].fetch("root-flush/a", "k") == "kept"


def test_a_dot_part_cannot_reach_the_reserved_key_store_bank(caches):
    """``./saltext_raft_keys/keys`` is a bank "." in the state machine but the key store's bank
    in the local copy: refused before the reserved-bank check could be sidestepped."""
    with pytest.raises(SaltCacheError, match="'.' part"):
        caches["m1"].store("./saltext_raft_keys/keys", "rogue", {"state": "accepted"})
    with pytest.raises(SaltCacheError, match="reserved"):
        caches["m1"].store("saltext_raft_keys//keys", "rogue", {"state": "accepted"})


def test_a_key_of_the_root_bank_cannot_reach_the_reserved_key_store_bank(cluster, caches):
    """Red team 2026-12-07: the root bank's key ``saltext_raft_keys/keys/rogue`` passed the
    reserved-bank check (the bank is "") and the ``localfs`` copy wrote it where the key store
    keeps minion ``rogue``'s key (Salt's ``localfs`` joins bank and key as one path)."""
    with pytest.raises(SaltCacheError, match="root bank"):
        caches["m1"].store("", "saltext_raft_keys/keys/rogue", {"state": "accepted"})
    root = cacheconfig.from_opts(cluster.opts("m1")).root
    assert not os.path.exists(os.path.join(root, "saltext_raft_keys", "keys", "rogue.p"))
    with pytest.raises(SaltCacheError, match="empty part"):
        caches["m1"].store("b", "a//k", 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_the_engine_writes_and_reads_fail_clearly(tmp_path, layout):
    """An engine that never started has never caught up: its copy (whatever a previous run
    left) is not served."""
    c = InProcessCluster(str(tmp_path), ids=("solo",), base_opts={"raft_cache_backend": layout})
    try:
        opts = salt_opts(dict(c.opts("solo"), raft_cache_timeout=0.3))
        cache = salt.cache.Cache(opts)
        t0 = time.monotonic()
        with pytest.raises(SaltCacheError, match="local raft engine is not reachable"):
            cache.store("b", "k", 1)
        # Refused, not hung: a generous bound (raft_cache_timeout is 0.3 s here), never a
        # figure: a loaded machine is slow, not wrong.
        assert time.monotonic() - t0 < 30
        for read in (
            lambda: cache.fetch("b", "k"),
            lambda: cache.list("b"),
            lambda: cache.contains("b"),
            lambda: cache.updated("b", "k"),
        ):
            with pytest.raises(SaltCacheError, match="has not caught up.*retry"):
                read()
    finally:
        c.close()


def three_masters(tmp_path, layout):
    """p1, p2, p3 started, with a leader; closed on exit."""
    return started_cluster(str(tmp_path), ("p1", "p2", "p3"), {"raft_cache_backend": layout})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_master_cut_off_from_the_quorum_refuses_writes_and_still_reads(tmp_path, layout):
    with three_masters(tmp_path, layout) as c:
        caches = Caches(c)
        caches["p1"].store("part", "k", "before")
        wait_for(lambda: caches["p3"].fetch("part", "k") == "before", 5, "replication to p3")
        lonely = "p3"
        for other in ("p1", "p2"):
            c.net.cut(lonely, other)
        t0 = time.monotonic()
        with pytest.raises(SaltCacheError, match="quorum"):
            caches[lonely].store("part", "k", "after")
        assert time.monotonic() - t0 < 30  # refused, not hung (raft_cache_timeout is 2 s)
        assert caches[lonely].fetch("part", "k") == "before"  # local reads keep working
        # the majority side keeps accepting writes
        wait_for(lambda: c.leader() in ("p1", "p2"), 10, "a leader on the majority side")
        caches["p1"].store("part", "k", "majority")
        c.net.heal()
        wait_for(lambda: caches[lonely].fetch("part", "k") == "majority", 10, "p3 catching up")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_master_that_does_not_know_a_command_stops_and_applies_it_once_upgraded(tmp_path, layout):
    """A rolling upgrade, half done: p3 runs a (simulated) older version that does not know
    the add command. It must not skip the entry the others applied: its engine stops, its
    writes fail saying why, the others go on; restarted with the current code, it applies the
    entry and has the value."""
    with three_masters(tmp_path, layout) as c:
        old = c.services["p3"].state_machine
        current_apply = old.apply

        def old_version_apply(entry):
            if any(cmd.op == ADD for cmd in decode_entry(entry.data)[1]):
                raise UnknownCommand(f"KV command type {ADD} is not known to this version")
            return current_apply(entry)

        old.apply = old_version_apply
        caches = Caches(c)
        assert cachedriver.add(salt_opts(c.opts("p1")), "up", "k", "added") is True
        wait_for(lambda: not c.runtimes["p3"].running, 5, "p3's engine to stop")
        failure = c.runtimes["p3"].status()["runtime"]["failure"]
        assert "cannot apply entry" in failure and "not known to this version" in failure
        with pytest.raises(SaltCacheError, match="has stopped.*cannot apply entry"):
            caches["p3"].store("up", "other", 1)
        assert caches["p3"].fetch("up", "k") == {}  # skipped it would stay so for good
        wait_for(lambda: c.leader() in ("p1", "p2"), 10, "a leader among p1 and p2")
        caches["p2"].store("up", "after", 2)  # p1 and p2 are a quorum
        c.stop("p3")
        c.start("p3")  # upgraded
        wait_for(lambda: caches["p3"].fetch("up", "after") == 2, 10, "p3 catching up")
        assert caches["p3"].fetch("up", "k") == "added"
