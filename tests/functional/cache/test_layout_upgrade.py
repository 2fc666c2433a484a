"""The default layout of the local copy changed from ``localfs`` to ``sqlite`` (0.1.0): a master
upgraded with no ``raft_cache_backend`` in its config restarts with its copy still in the
``localfs`` layout. It must rebuild the copy as a database from the Raft state, serve the same
data through the driver, and say in its log what happened and how to keep the old layout; a
master that pinned ``raft_cache_backend: localfs`` keeps its files.

In-process engines (tests/functional/cache/inprocess.py), read through a real Salt loader
(``salt.cache.Cache`` with ``cache: raft``), as in test_driver.py.
"""

from __future__ import annotations

import os

import pytest
import salt.cache
import salt.config

from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated.sqlite import DB_NAME
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import started_cluster

IDS = ("m1", "m2", "m3")
PINNED = {"raft_cache_backend": "localfs"}
#: What a master cached before the upgrade: nested banks, a key with "/" in it, several kinds
#: of value.
BEFORE = {
    ("minions/web1", "data"): {"grains": {"os": "Debian"}, "pillar": {"role": "web"}},
    ("minions/web1", "mine"): {"network.ip_addrs": ["10.0.0.1"]},
    ("minions/db1", "data"): {"grains": {"os": "Rocky"}, "pillar": {}},
    ("runner/deep/er", "a/b"): [1, 2, 3],
    ("top", "k"): "text é",
}


def wait_for(predicate, timeout, what):
    try:
        return wait_until(predicate, timeout, what, interval=0.01)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def cache(cluster, nid):
    """A fresh ``salt.cache.Cache`` for ``nid``'s current config (see test_driver.py)."""
    full = salt.config.DEFAULT_MASTER_OPTS.copy()
    full.update(cluster.opts(nid))
    full["__role"] = "master"
    return salt.cache.Cache(full)


def banks_of(items):
    """Every bank the keys of ``items`` are in, and their parents."""
    banks = set()
    for bank, _ in items:
        parts = bank.split("/")
        banks.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(banks)


def snapshot(cluster, nid, items):
    """What ``nid``'s workers read for ``items``: value, ``updated`` and ``contains`` of each
    key."""
    c = cache(cluster, nid)
    return {(b, k): (c.fetch(b, k), c.updated(b, k), c.contains(b, k)) for b, k in items}


def listings(cluster, nid, items):
    c = cache(cluster, nid)
    return {b: sorted(c.list(b)) for b in banks_of(items)}


def model_listings(cluster, nid, items):
    """The listings of the replicated state itself (the KV state machine), which the
    ``sqlite`` copy answers. The ``localfs`` copy answers Salt's ``localfs`` listing, where a
    key with "/" in it (``a/b``) lists as its first part (``a``, a directory there)."""
    kv = cluster.services[nid].state_machine.kv
    return {b: kv.list(b) for b in banks_of(items)}


def restart(cluster, nid):
    cluster.stop(nid)
    cluster.start(nid)
    cluster.wait_caught_up()


def root_of(cluster, nid):
    return cacheconfig.from_opts(cluster.opts(nid)).root


def localfs_tree_holds(root, items):
    return all(os.path.isfile(os.path.join(root, b, k + ".p")) for b, k in items)


def test_a_master_upgraded_without_the_option_rebuilds_its_localfs_copy_in_sqlite(tmp_path, caplog):
    """A rolling upgrade: each master in turn restarts with the new default. Nothing it had is
    lost, what was written while it was down is there too, the old tree stays (the operator's
    to delete) and the log names it and the way to keep the localfs layout."""
    with started_cluster(str(tmp_path), IDS, {"raft_cache_backend": "localfs"}) as c:
        c.node_opts = {nid: dict(PINNED) for nid in IDS}  # what an existing install has
        c.base_opts.pop("raft_cache_backend")
        for (bank, key), value in BEFORE.items():
            cache(c, "m1").store(bank, key, value)
        wait_for(
            lambda: all(cache(c, n).fetch("top", "k") == "text é" for n in IDS),
            10,
            "every master's copy",
        )
        for nid in IDS:
            assert localfs_tree_holds(root_of(c, nid), BEFORE)
            assert not os.path.exists(os.path.join(root_of(c, nid), DB_NAME))
        assert snapshot(c, "m1", list(BEFORE))[("top", "k")][0] == "text é"  # read, not empty

        items = list(BEFORE)
        for n, nid in enumerate(IDS):
            caplog.clear()
            c.stop(nid)
            # written while this master was down: it must get it from the Raft state
            writer = IDS[(n + 1) % len(IDS)]
            cache(c, writer).store("during", nid, {"while": nid})
            items.append(("during", nid))
            c.node_opts[nid] = {}  # upgraded: the option is not set
            with caplog.at_level("WARNING", logger="saltext_raft"):
                c.start(nid)
                c.wait_caught_up()
                wait_for(
                    lambda nid=nid: cache(c, nid).fetch("during", nid) == {"while": nid},
                    10,
                    f"the write made while {nid} was down",
                )
            root = root_of(c, nid)
            assert cacheconfig.from_opts(c.opts(nid)).backend == "sqlite"
            assert os.path.isfile(os.path.join(root, DB_NAME))
            # the same answers as a master not yet upgraded (or upgraded earlier)
            expected = snapshot(c, IDS[(n + 1) % len(IDS)], items)
            assert snapshot(c, nid, items) == expected
            assert expected[("minions/web1", "data")][0]["pillar"] == {"role": "web"}
            assert listings(c, nid, items) == model_listings(c, nid, items)
            assert listings(c, nid, items)["minions"] == ["db1", "web1"]
            # the old tree is left in place, and the log says what it is and what to do
            assert localfs_tree_holds(root, BEFORE)
            text = caplog.text
            assert "now in the sqlite layout" in text and root in text
            assert "rebuilt from the Raft state" in text
            assert "raft_cache_backend: localfs" in text
            assert "delete them" in text and "minions" in text
        # every master upgraded: writes and reads go on
        cache(c, "m3").store("after", "k", 1)
        wait_for(lambda: cache(c, "m1").fetch("after", "k") == 1, 10, "a write after the upgrade")


def test_a_master_that_pinned_localfs_keeps_it_across_restarts(tmp_path, caplog):
    with started_cluster(str(tmp_path), IDS, PINNED) as c:
        for (bank, key), value in BEFORE.items():
            cache(c, "m2").store(bank, key, value)
        wait_for(lambda: cache(c, "m3").fetch("top", "k") == "text é", 10, "m3's copy")
        before = snapshot(c, "m3", list(BEFORE))
        with caplog.at_level("WARNING", logger="saltext_raft"):
            restart(c, "m3")
        root = root_of(c, "m3")
        assert cacheconfig.from_opts(c.opts("m3")).backend == "localfs"
        assert localfs_tree_holds(root, BEFORE)
        assert not os.path.exists(os.path.join(root, DB_NAME))
        assert snapshot(c, "m3", list(BEFORE)) == before
        assert listings(c, "m3", list(BEFORE))["runner/deep/er"] == ["a"]  # Salt's localfs
        assert "sqlite" not in caplog.text
        cache(c, "m3").store("after", "k", 2)
        assert os.path.isfile(os.path.join(root, "after", "k.p"))


def test_a_master_switched_back_to_localfs_rebuilds_the_tree_and_drops_the_database(tmp_path):
    """What the upgrade warning promises an operator who sets ``raft_cache_backend: localfs``
    after running on the new default for a while."""
    with started_cluster(str(tmp_path), IDS) as c:
        for (bank, key), value in BEFORE.items():
            cache(c, "m1").store(bank, key, value)
        wait_for(lambda: cache(c, "m2").fetch("top", "k") == "text é", 10, "m2's copy")
        root = root_of(c, "m2")
        assert os.path.isfile(os.path.join(root, DB_NAME))
        assert not localfs_tree_holds(root, BEFORE)
        before = snapshot(c, "m2", list(BEFORE))
        c.node_opts["m2"] = dict(PINNED)
        restart(c, "m2")
        assert localfs_tree_holds(root, BEFORE)
        assert not [n for n in os.listdir(root) if n.startswith(DB_NAME)]
        assert snapshot(c, "m2", list(BEFORE)) == before
        assert snapshot(c, "m2", list(BEFORE))[("top", "k")][0] == "text é"
