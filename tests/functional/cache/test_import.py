"""Importing an existing localfs cache into the replicated one (``cacheimport``, the
``raft.import_cache`` runner and its command line), through a real Salt loader against
in-process engines: a master switched to ``cache: raft`` must not lose what it had cached.
Also from Salt's ``redis`` cache driver, against a real Redis server (skipped without
``redis-server`` on a developer's machine, a failure in CI)."""

from __future__ import annotations

import os
import time

import pytest
import salt.cache
import salt.config
from salt.exceptions import SaltCacheError

from saltext_raft.replicated import importer as cacheimport
from saltext_raft.runners import raft as runner
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import started_cluster
from tests.functional.storage.backends import redis_server  # noqa: F401  pylint: disable=unused-import

IDS = ("m1", "m2", "m3")


def salt_opts(opts: dict, **extra) -> dict:
    full = salt.config.DEFAULT_MASTER_OPTS.copy()
    full.update(opts)
    full["__role"] = "master"
    full.update(extra)
    return full


def raft_cache(cluster, nid, **extra) -> salt.cache.Cache:
    return salt.cache.Cache(salt_opts(cluster.opts(nid), **extra))


def old_cache(cluster, nid) -> salt.cache.Cache:
    """What the master used before the switch: Salt's localfs in the same cachedir."""
    return salt.cache.Cache(salt_opts(cluster.opts(nid), cache="localfs"))


def wait_for(predicate, timeout, what):
    try:
        return wait_until(predicate, timeout, what, interval=0.01)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def fill_old_cache(cluster, nid) -> dict:
    """Minion data as Salt leaves it in localfs, plus a runner's nested bank; returns what
    should be imported, as {(bank, key): value}."""
    old = old_cache(cluster, nid)
    want = {}
    for minion in ("web1", "db1"):
        for bank, value in (
            ("grains", {"id": minion, "os": "Debian"}),
            ("pillar", {"role": minion[:2]}),
            ("mine", {"network.ip_addrs": ["10.0.0.1"]}),
            ("minions/" + minion, None),  # 3007's layout: minions/<id>/data
        ):
            if value is None:
                old.store(bank, "data", {"grains": {"id": minion}, "pillar": {}})
                want[(bank, "data")] = {"grains": {"id": minion}, "pillar": {}}
            else:
                old.store(bank, minion, value)
                want[(bank, minion)] = value
    old.store("custom/deep/er", "k", [1, 2, 3])
    old.store("custom", "deep", "a key beside the sub-bank of the same name")
    want[("custom/deep/er", "k")] = [1, 2, 3]
    want[("custom", "deep")] = "a key beside the sub-bank of the same name"
    return want


@pytest.fixture(params=["localfs", "sqlite"])
def cluster(tmp_path, request):
    with started_cluster(str(tmp_path), IDS, base_opts={"raft_cache_backend": request.param}) as c:
        yield c


def test_an_existing_cache_is_copied_to_every_master_and_a_second_run_copies_nothing(cluster):
    want = fill_old_cache(cluster, "m1")
    now = time.time()
    old = old_cache(cluster, "m1")
    # expiry envelopes (Salt 3008's Cache.store(expires=...)) are copied as they are, and an
    # expired one is not copied at all
    old.store("mine", "fresh", {"data": {"x": 1}, "_expires": int(now + 3600)})
    old.store("mine", "stale", {"data": {"x": 2}, "_expires": int(now - 10)})
    want[("mine", "fresh")] = {"data": {"x": 1}, "_expires": int(now + 3600)}
    # a key written through the replicated cache since the switch is newer: kept
    raft_cache(cluster, "m2").store("grains", "web1", {"id": "web1", "os": "Debian 13"})
    del want[("grains", "web1")]
    wait_for(lambda: raft_cache(cluster, "m1").contains("grains", "web1"), 5, "m2's write on m1")

    opts = salt_opts(cluster.opts("m1"))
    report = cacheimport.import_cache(opts, ["grains", "pillar", "mine", "minions", "custom"])
    assert report["imported"] == len(want)
    assert (report["already_present"], report["expired"], report["unreadable"]) == (1, 1, 0), report

    for nid in IDS:
        wait_for(
            lambda nid=nid: all(raft_cache(cluster, nid).contains(bank, key) for bank, key in want),
            5,
            f"every imported key on {nid}",
        )
        cache = raft_cache(cluster, nid)
        for (bank, key), value in want.items():
            if "_expires" in str(value):
                continue  # Cache.fetch on 3008 unwraps envelopes; checked raw below
            assert cache.fetch(bank, key) == value, (nid, bank, key)
        assert cache.fetch("grains", "web1") == {"id": "web1", "os": "Debian 13"}
        assert not cache.contains("mine", "stale")
    raw = raft_cache(cluster, "m3")
    assert raw.modules["raft.fetch"]("mine", "fresh") == want[("mine", "fresh")]

    again = cacheimport.import_cache(opts, ["grains", "pillar", "mine", "minions", "custom"])
    assert again["imported"] == 0 and again["already_present"] == len(want) + 1


def test_a_key_written_between_the_check_and_the_copy_is_kept(cluster, monkeypatch):
    """A minion's write through another master lands after the import saw the key missing and
    before its copy commits: the cluster's add finds the key and keeps the newer value."""
    old_cache(cluster, "m1").store("grains", "web1", {"id": "web1", "os": "Debian 12"})
    old_cache(cluster, "m1").store("grains", "db1", {"id": "db1"})
    newer = {"id": "web1", "os": "Debian 13"}
    real_add = cacheimport.cachedriver.add
    raced = []

    def add_after_a_minion_write(opts, bank, key, value):
        if (bank, key) == ("grains", "web1"):
            raft_cache(cluster, "m2").store("grains", "web1", newer)  # committed before the add
            raced.append(key)
        return real_add(opts, bank, key, value)

    monkeypatch.setattr(cacheimport.cachedriver, "add", add_after_a_minion_write)
    report = cacheimport.import_cache(salt_opts(cluster.opts("m1")), ["grains"])
    assert raced == ["web1"]
    assert (report["imported"], report["already_present"]) == (1, 1), report
    for nid in IDS:
        wait_for(
            lambda nid=nid: raft_cache(cluster, nid).contains("grains", "db1"), 5, f"db1 on {nid}"
        )
        assert raft_cache(cluster, nid).fetch("grains", "web1") == newer, nid


def test_overwrite_replaces_what_the_replicated_cache_has(cluster):
    old_cache(cluster, "m1").store("grains", "web1", {"id": "web1", "os": "Debian 12"})
    raft_cache(cluster, "m2").store("grains", "web1", {"id": "web1", "os": "Debian 13"})
    wait_for(lambda: raft_cache(cluster, "m1").contains("grains", "web1"), 5, "m2's write on m1")
    opts = salt_opts(cluster.opts("m1"))
    report = cacheimport.import_cache(opts, ["grains"], overwrite=True)
    assert (report["imported"], report["already_present"]) == (1, 0), report
    for nid in IDS:
        wait_for(
            lambda nid=nid: raft_cache(cluster, nid).fetch("grains", "web1")["os"] == "Debian 12",
            5,
            f"the imported value on {nid}",
        )


def test_the_default_banks_are_the_minion_data_banks_present(cluster):
    old = old_cache(cluster, "m1")
    old.store("grains", "web1", {"id": "web1"})
    old.store("jobs", "not-cache-data", {"jid": 1})  # cachedir holds more than cache banks
    report = cacheimport.import_cache(salt_opts(cluster.opts("m1")))
    assert report["banks"] == ["grains"]
    assert report["imported"] == 1
    wait_for(lambda: raft_cache(cluster, "m3").contains("grains", "web1"), 5, "grains on m3")
    assert not raft_cache(cluster, "m3").contains("jobs")


def test_an_unreadable_key_is_named_and_the_rest_is_copied(cluster):
    old = old_cache(cluster, "m1")
    old.store("pillar", "good", {"a": 1})
    old.store("pillar", "torn", {"b": 2})
    path = os.path.join(cluster.opts("m1")["cachedir"], "pillar", "torn.p")
    with open(path, "r+b") as fh:
        fh.truncate(3)  # a torn file: msgpack cannot decode it
    report = cacheimport.import_cache(salt_opts(cluster.opts("m1")), ["pillar"])
    assert report["imported"] == 1 and report["unreadable"] == 1
    assert report["unreadable_keys"][0].startswith("pillar/torn: ")
    assert raft_cache(cluster, "m1").fetch("pillar", "good") == {"a": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"banks": ["saltext_raft"]}, "belongs to saltext-raft itself"),
        ({"banks": ["saltext_raft_cache/x"]}, "belongs to saltext-raft itself"),
        ({"banks": ["/"]}, "not a bank name"),
        ({"source_driver": "raft"}, "cannot be 'raft'"),
        ({"workers": 0}, "workers must be a whole number from 1 to 64"),
    ],
)
def test_requests_that_make_no_sense_are_refused_before_anything_is_written(cluster, kwargs, match):
    with pytest.raises(cacheimport.ImportRefused, match=match):
        cacheimport.import_cache(salt_opts(cluster.opts("m1")), **kwargs)


def test_a_master_not_switched_to_the_raft_cache_is_told_so(cluster):
    with pytest.raises(cacheimport.ImportRefused, match="set cache: raft"):
        cacheimport.import_cache(salt_opts(cluster.opts("m1"), cache="localfs"))


def test_without_a_quorum_the_import_stops_with_what_it_did_and_resumes_later(cluster):
    old = old_cache(cluster, "m1")
    for i in range(3):
        old.store("grains", f"m{i}", {"i": i})
    opts = salt_opts(cluster.opts("m1"), raft_cache_timeout=0.5)
    cluster.stop("m2")
    cluster.stop("m3")
    with pytest.raises(SaltCacheError, match=r"import stopped at grains/m\d: .*0 imported"):
        cacheimport.import_cache(opts, ["grains"])
    cluster.start("m2")
    wait_for(lambda: cluster.leader() is not None, 10, "a leader again")
    report = cacheimport.import_cache(salt_opts(cluster.opts("m1")), ["grains"])
    # The writes that timed out were appended to m1's log, and may still have committed once
    # m2 was back (Raft does not take an appended entry back): those are found present, not
    # copied twice.
    assert report["imported"] + report["already_present"] == 3
    wait_for(
        lambda: all(raft_cache(cluster, "m2").contains("grains", f"m{i}") for i in range(3)),
        5,
        "the three keys on m2",
    )
    assert [raft_cache(cluster, "m2").fetch("grains", f"m{i}") for i in range(3)] == [
        {"i": i} for i in range(3)
    ]


def test_the_runner_and_the_command_line(cluster, monkeypatch, capsys):
    old = old_cache(cluster, "m1")
    old.store("mine", "web1", {"f": 1})
    old.store("pillar", "web1", {"p": 1})
    opts = salt_opts(cluster.opts("m1"))
    monkeypatch.setattr(runner, "__opts__", opts, raising=False)
    out = runner.import_cache(banks="mine")
    assert out["result"] is True and out["imported"] == 1 and out["banks"] == ["mine"]
    out = runner.import_cache(banks="saltext_raft")
    assert out["result"] is False and out["retcode"] == 1
    assert "belongs to saltext-raft itself" in out["error"]

    monkeypatch.setattr(salt.config, "master_config", lambda path: opts)
    assert cacheimport.main(["-c", "/nonexistent"]) == 0
    printed = capsys.readouterr().out
    assert "(banks: pillar, mine)" in printed and "1 imported, 1 already present" in printed
    with pytest.raises(SystemExit):
        cacheimport.main(["--from", "raft"])
    assert "cannot be 'raft'" in capsys.readouterr().err


@pytest.mark.skipif(
    "keys.cache_driver" not in salt.config.DEFAULT_MASTER_OPTS,
    reason="Salt 3007 has no keys.cache_driver: its keys are files in pki_dir, not cache banks",
)
def test_the_key_banks_are_left_to_the_key_import(cluster):
    opts = salt_opts(cluster.opts("m1"), **{"keys.cache_driver": "raft"})
    with pytest.raises(cacheimport.ImportRefused, match="saltext_raft keys import"):
        cacheimport.import_cache(opts, ["keys"])


def test_an_existing_redis_cache_is_copied_to_every_master(cluster, redis_server):  # noqa: F811
    """A master that used ``cache: redis`` before the switch: its minion data and a runner's
    nested bank come over from the Redis server, through the cluster, to every master."""
    redis_opts = {"cache.redis.host": "127.0.0.1", "cache.redis.port": redis_server.port}
    opts = salt_opts(cluster.opts("m1"), **redis_opts)
    source = salt.cache.Cache(dict(opts, cache="redis"))
    banks = ["grains", "mine", "custom"]
    for bank in banks:  # one Redis server per session: start from empty banks
        source.flush(bank)
    want = {
        ("grains", "web1"): {"id": "web1", "os": "Debian"},
        ("grains", "db1"): {"id": "db1", "os": "Alma"},
        ("mine", "web1"): {"network.ip_addrs": ["10.0.0.1"]},
        ("custom/deep", "k"): [1, 2, 3],
    }
    for (bank, key), value in want.items():
        source.store(bank, key, value)
    assert source.fetch("grains", "web1") == want[("grains", "web1")]  # really in Redis
    assert not raft_cache(cluster, "m1").contains("grains", "web1")

    report = cacheimport.import_cache(opts, banks, source_driver="redis")
    assert report["source"] == "redis" and report["imported"] == len(want), report
    assert (report["already_present"], report["unreadable"]) == (0, 0), report
    for nid in IDS:
        wait_for(
            lambda nid=nid: all(raft_cache(cluster, nid).contains(bank, key) for bank, key in want),
            5,
            f"every key imported from Redis on {nid}",
        )
        cache = raft_cache(cluster, nid)
        assert {bk: cache.fetch(*bk) for bk in want} == want, nid
    again = cacheimport.import_cache(opts, banks, source_driver="redis")
    assert again["imported"] == 0 and again["already_present"] == len(want), again
