"""Salt 3008 ``keys.cache_driver: raft`` through real Salt code (``salt.cache.Cache``,
``salt.key.Key``, ``salt.crypt.MasterKeys``) against in-process engines: three "masters", each
with its own ``pki_dir``, ``cachedir`` and engine (runtime + CacheService), no daemons.

Salt's loader gives an extension module the ``__opts__`` of the loader used last (a real master
has one set of opts; here three share a process), so every operation builds a fresh ``Cache`` /
``Key`` for the master it acts on.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import salt.cache
import salt.config
import salt.crypt
import salt.key
import salt.loader
from cryptography.hazmat.primitives import serialization
from salt.exceptions import SaltCacheError

from saltext_raft.master.fileutil import CLUSTER_KEY_FILES
from saltext_raft.master.revocation import KeyRevocation
from saltext_raft.replicated import keystore
from saltext_raft.replicated.config import BACKENDS
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import InProcessCluster
from tests.functional.cache.inprocess import started_cluster

if "keys.cache_driver" not in salt.config.DEFAULT_MASTER_OPTS:
    pytest.skip(
        "this Salt has no keys.cache_driver (Salt 3007): minion keys live in pki_dir only",
        allow_module_level=True,
    )

IDS = ("m1", "m2", "m3")


def wait_for(predicate, timeout, what):
    try:
        return wait_until(predicate, timeout, what, interval=0.01)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def pem() -> str:
    # distinct, well-formed public keys (salt.key checks them when changing state)
    _priv, pub = salt.crypt.gen_keys(2048)
    return pub if isinstance(pub, str) else pub.decode()


@pytest.fixture(scope="module", params=["localfs", "sqlite"])
def cluster(tmp_path_factory, request):
    """The masters, once per layout of their local copies (``raft_cache_backend``)."""
    with started_cluster(
        str(tmp_path_factory.mktemp("keys")), IDS, base_opts={"raft_cache_backend": request.param}
    ) as c:
        yield c


@pytest.fixture(scope="module")
def pubs():
    return [pem() for _ in range(3)]


def master_opts(cluster, nid, **extra) -> dict:
    opts = salt.config.DEFAULT_MASTER_OPTS.copy()
    opts.update(cluster.opts(nid))
    root = os.path.dirname(opts["cachedir"])
    opts.update(
        {
            "__role": "master",
            "cache": "localfs",
            "keys.cache_driver": "raft",
            "pki_dir": os.path.join(root, "pki"),
            "user": None,
            "key_cache": "",
        }
    )
    opts.update(extra)
    os.makedirs(opts["pki_dir"], exist_ok=True)
    return opts


def kcache(cluster, nid, **extra):
    opts = master_opts(cluster, nid, **extra)
    return salt.cache.Cache(opts, driver=opts["keys.cache_driver"])


def key_api(cluster, nid):
    return salt.key.Key(master_opts(cluster, nid))


def listing(cluster, nid):
    return key_api(cluster, nid).list_keys()


def test_a_pending_key_on_one_master_is_accepted_there_and_listed_accepted_everywhere(
    cluster, pubs
):
    # what _auth does for a new minion on m1
    kcache(cluster, "m1").store("keys", "web1", {"state": "pending", "pub": pubs[0]})
    for nid in IDS:
        wait_for(
            lambda nid=nid: listing(cluster, nid)["minions_pre"] == ["web1"],
            5,
            f"web1 pending on {nid}",
        )
    key_api(cluster, "m1").accept("web1")
    for nid in IDS:
        wait_for(
            lambda nid=nid: listing(cluster, nid)["minions"] == ["web1"],
            5,
            f"web1 accepted on {nid}",
        )
        assert listing(cluster, nid)["minions_pre"] == []
    got = kcache(cluster, "m3").fetch("keys", "web1")
    assert got == {"state": "accepted", "pub": pubs[0]}


def test_the_pki_dir_view_follows_writes_and_fetches(cluster, pubs):
    # m1 wrote web1: its pki_dir has Salt's file layout (the request server's token check
    # reads pki_dir/minions/<id> directly)
    m1_pki = master_opts(cluster, "m1")["pki_dir"]
    m2_pki = master_opts(cluster, "m2")["pki_dir"]
    with open(os.path.join(m1_pki, "minions", "web1"), encoding="utf-8") as fh:
        assert fh.read() == pubs[0]
    # m2 has not looked at web1 yet: listings never write the view ...
    listing(cluster, "m2")
    assert not os.path.exists(os.path.join(m2_pki, "minions", "web1"))
    # ... a fetch (what _auth does when the minion authenticates there) does
    assert kcache(cluster, "m2").fetch("keys", "web1")["state"] == "accepted"
    with open(os.path.join(m2_pki, "minions", "web1"), encoding="utf-8") as fh:
        assert fh.read() == pubs[0]
    # a change elsewhere moves the file to the new state's directory on the next fetch
    key_api(cluster, "m3").reject("web1", include_accepted=True)
    wait_for(
        lambda: kcache(cluster, "m2").fetch("keys", "web1")["state"] == "rejected",
        5,
        "web1 rejected on m2",
    )
    assert not os.path.exists(os.path.join(m2_pki, "minions", "web1"))
    assert os.path.exists(os.path.join(m2_pki, "minions_rejected", "web1"))


def test_denied_keys_and_deletes_replicate(cluster, pubs):
    c1 = kcache(cluster, "m1")
    c1.store("keys", "db1", {"state": "accepted", "pub": pubs[1]})
    c1.store("denied_keys", "db1", [pubs[2]])
    wait_for(lambda: listing(cluster, "m2")["minions_denied"] == ["db1"], 5, "db1 denied on m2")
    assert kcache(cluster, "m2").fetch("denied_keys", "db1") == [pubs[2]]
    assert kcache(cluster, "m2").list_all("denied_keys") == {"db1": [pubs[2]]}
    # what salt-key -d does (Key.delete_key also needs a running master for its LocalClient)
    c2 = kcache(cluster, "m2")
    assert c2.flush("keys", "db1") is True
    key_api(cluster, "m2").delete_den()  # the whole denied_keys bank
    for nid in IDS:
        wait_for(
            lambda nid=nid: (
                "db1" not in listing(cluster, nid)["minions"]
                and "db1" not in listing(cluster, nid)["minions_denied"]
            ),
            5,
            f"db1 deleted on {nid}",
        )
    assert kcache(cluster, "m1").fetch("keys", "db1") is None  # absent reads like localfs_key


def test_list_all_shapes_match_localfs_key(cluster, pubs):
    c = kcache(cluster, "m1")
    c.store("keys", "shape1", {"state": "pending", "pub": pubs[1]})
    assert c.list_all("keys")["shape1"] == {"state": "pending"}
    assert c.list_all("keys", include_data=True)["shape1"] == {"state": "pending", "pub": pubs[1]}
    assert "shape1" in c.list("keys") and c.contains("keys", "shape1")
    assert isinstance(c.updated("keys", "shape1"), int)


def test_each_master_keeps_its_own_master_keys(cluster):
    pub = {}
    for nid in IDS:
        opts = master_opts(cluster, nid)
        mk = salt.crypt.MasterKeys(opts)  # generates <id>.pem/.pub through the raft driver
        pub[nid] = mk.get_pub_str()
        assert os.path.isfile(os.path.join(opts["pki_dir"], f"{nid}.pem"))
        assert kcache(cluster, nid).list("master_keys")  # local listing, this master's files
    assert len(set(pub.values())) == 3
    # nothing of master_keys reached the replicated mirror
    for nid in IDS:
        root = master_opts(cluster, nid)["cachedir"]
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    assert b"PRIVATE KEY" not in fh.read(), os.path.join(dirpath, name)


def test_invalid_ids_and_data_are_refused(cluster, pubs):
    c = kcache(cluster, "m1")
    with pytest.raises(SaltCacheError, match="not a valid minion id"):
        c.store("keys", "../evil", {"state": "accepted", "pub": pubs[0]})
    with pytest.raises(SaltCacheError, match="unrecognized key data"):
        c.store("keys", "ok1", {"state": "bogus", "pub": pubs[0]})
    with pytest.raises(SaltCacheError, match="reserved"):
        kcache(cluster, "m1").fetch(keystore.mirror_bank("keys"), "web1")


def test_a_key_write_and_read_check_the_names_once(cluster, pubs, monkeypatch):
    """A key-store call enters at the loader, goes through the key store and the driver: the
    bank/key name is checked once, at the key store's edge, not again by each layer."""
    from saltext_raft.replicated import driver  # pylint: disable=import-outside-toplevel

    calls = []
    real, real_key = driver.check_name, driver.check_key

    def counting(what, name, **kw):
        calls.append((what, name))
        return real(what, name, **kw)

    def counting_key(bank, key):  # a bank and its key, checked together
        calls.extend([("bank", bank), ("key", key)])
        return real_key(bank, key)

    monkeypatch.setattr(driver, "check_name", counting)
    monkeypatch.setattr(driver, "check_key", counting_key)
    c = kcache(cluster, "m1")
    c.store("keys", "once1", {"state": "pending", "pub": pubs[0]})
    assert calls == [("bank", keystore.mirror_bank("keys")), ("key", "once1")]
    calls.clear()
    assert c.fetch("keys", "once1")["state"] == "pending"
    assert calls == [("bank", keystore.mirror_bank("keys")), ("key", "once1")]
    calls.clear()
    # a listing of a plain cache bank checks the bank once, not its name again per key listed
    for i in range(3):
        c.store("plainbank", f"k{i}", {"i": i})
    calls.clear()
    assert c.list_all("plainbank", include_data=True) == {f"k{i}": {"i": i} for i in range(3)}
    assert calls == [("bank", "plainbank")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_quorum_key_writes_fail_clearly_and_reads_keep_working(tmp_path, pubs, backend):
    c = InProcessCluster(str(tmp_path), ids=IDS, base_opts={"raft_cache_backend": backend})
    try:
        for nid in c.ids:
            c.start(nid)
        wait_for(lambda: c.leader() is not None, 10, "a leader")
        kcache(c, "m1").store("keys", "lone", {"state": "accepted", "pub": pubs[0]})
        c.stop("m2")
        c.stop("m3")
        cache = kcache(c, "m1", raft_cache_timeout=0.5)
        with pytest.raises(SaltCacheError, match="raft key store: storing the key of minion"):
            cache.store("keys", "late", {"state": "pending", "pub": pubs[1]})
        # an existing key still reads locally (accepted minions keep authenticating)
        assert kcache(c, "m1").fetch("keys", "lone")["state"] == "accepted"
        # a missing key cannot be confirmed absent without the leader: refuse, do not guess
        with pytest.raises(SaltCacheError, match="cannot confirm"):
            kcache(c, "m1", raft_cache_timeout=0.5).fetch("keys", "late")
    finally:
        c.close()


def test_importing_an_existing_pki_dir_makes_its_keys_visible_everywhere(cluster, pubs):
    # a master that used localfs_key before: keys are files in its pki_dir
    opts = master_opts(cluster, "m3")
    old = salt.cache.Cache(dict(opts, **{"keys.cache_driver": "localfs_key"}), driver="localfs_key")
    old.store("keys", "legacy1", {"state": "accepted", "pub": pubs[1]})
    old.store("keys", "legacy2", {"state": "rejected", "pub": pubs[2]})
    # (m3's pki_dir also holds its view of keys the earlier tests replicated: already present)
    assert keystore.import_pki_dir(opts)["imported"] == 2
    wait_for(
        lambda: (
            {"legacy1", "legacy2"}
            <= set(listing(cluster, "m1")["minions"])
            | set(listing(cluster, "m1")["minions_rejected"])
        ),
        5,
        "the imported keys on m1",
    )
    assert kcache(cluster, "m1").fetch("keys", "legacy1") == {"state": "accepted", "pub": pubs[1]}
    assert kcache(cluster, "m1").fetch("keys", "legacy2")["state"] == "rejected"
    # running it again changes nothing
    assert keystore.import_pki_dir(master_opts(cluster, "m3"))["imported"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restarted_master_never_serves_a_key_deleted_while_it_was_down(tmp_path, pubs, backend):
    """Issue 17 part 4: m3 is down while m1 deletes an accepted key; m3 restarts with its old
    local copy (the key still accepted there) and is cut off from the others, so it cannot
    catch up. From the moment it starts, every lookup of that key on m3 (what ``_auth`` does
    on a minion's login) is refused or reports no key: never the deleted key. Once the cut
    heals, m3 catches up and reports the key gone."""
    with started_cluster(str(tmp_path), IDS, {"raft_cache_backend": backend}) as c:
        kcache(c, "m1").store("keys", "gone", {"state": "accepted", "pub": pubs[0]})
        wait_for(
            lambda: (kcache(c, "m3").fetch("keys", "gone") or {}).get("state") == "accepted",
            5,
            "the key accepted on m3",
        )
        c.stop("m3")
        assert kcache(c, "m1").flush("keys", "gone")
        for other in ("m1", "m2"):
            c.net.cut("m3", other)
        seen = []
        stop = threading.Event()

        def lookups():
            while not stop.is_set():
                try:
                    seen.append(kcache(c, "m3", raft_cache_timeout=0.1).fetch("keys", "gone"))
                except SaltCacheError as exc:
                    seen.append(exc)

        poller = threading.Thread(target=lookups, daemon=True)
        poller.start()
        try:
            c.start("m3")
            wait_for(lambda: len(seen) >= 5, 10, "five lookups on m3 while it is cut off")
            assert not c.services["m3"].caught_up
            c.net.heal()
            wait_for(lambda: seen and seen[-1] is None, 10, "m3 reporting the key gone")
        finally:
            stop.set()
            poller.join(10)
        served = [s for s in seen if isinstance(s, dict)]
        assert not served, f"m3 served the deleted key: {served[:3]}"
        refused = [s for s in seen if isinstance(s, SaltCacheError)]
        assert refused and all("caught up" in str(e) or "confirm" in str(e) for e in refused)
        path = os.path.join(master_opts(c, "m3")["pki_dir"], "minions", "gone")
        assert not os.path.exists(path)


def test_a_delete_through_one_master_revokes_the_key_on_the_others_with_one_rotation(
    tmp_path, pubs
):
    """Issue 24: keys accepted on m1 and known to m2 (a login there wrote m2's pki_dir view)
    are deleted through m1. Without any lookup on m2, m2's view loses them at once (Salt's
    token check refuses the minions' requests there) and m2 rotates its AES key once for the
    three deletes; m3, whose view never held them, does not rotate."""
    with started_cluster(str(tmp_path), IDS) as c:
        rotations = {nid: [] for nid in IDS}
        refreshed = {nid: [] for nid in IDS}  # (bank, key) in the order each watcher took them
        watchers = {}
        for nid in IDS:
            opts = master_opts(c, nid)

            def refresh(bank, key, nid=nid, opts=opts):
                refreshed[nid].append((bank, key))
                return keystore.refresh_view(opts, bank, key)

            rev = watchers[nid] = KeyRevocation(
                opts,
                window=5.0,
                refresh=refresh,
                rotate=lambda nid=nid: rotations[nid].append(1) or "rotated",
            )
            rev.start()
            c.services[nid].watch(keystore.MIRROR_PREFIX, rev.changed)
        try:
            names = ("r1", "r2", "r3")
            for name, pub in zip(names, pubs, strict=True):
                kcache(c, "m1").store("keys", name, {"state": "accepted", "pub": pub})
            for name in names:  # a minion login on m2 fetches its key: m2's view gets it
                wait_for(
                    lambda name=name: (
                        (kcache(c, "m2").fetch("keys", name) or {}).get("state") == "accepted"
                    ),
                    5,
                    f"{name} accepted on m2",
                )
            m2_view = os.path.join(master_opts(c, "m2")["pki_dir"], "minions")
            assert sorted(os.listdir(m2_view)) == sorted(names)
            for name in names:
                assert kcache(c, "m1").flush("keys", name)
            wait_for(lambda: not os.listdir(m2_view), 30, "m2's view to lose the three keys")
            wait_for(lambda: rotations["m2"], 30, "m2 rotating its AES key")
            wait_for(lambda: watchers["m2"].status()["revoked"] == 3, 30, "three revocations")
            assert rotations["m2"] == [1], "three deletes within the 5 s window: one rotation"
            # m3 must have taken the deletes before "it revoked nothing" means anything: a key
            # written after them reaches its watcher after them (one log, one watcher thread).
            kcache(c, "m1").store("keys", "marker", {"state": "pending", "pub": pubs[0]})
            wait_for(
                lambda: ("keys", "marker") in refreshed["m3"], 30, "m3's watcher taking the marker"
            )
            assert {("keys", name) for name in names} <= set(refreshed["m3"]), refreshed["m3"]
            assert watchers["m3"].status()["revoked"] == 0 and not rotations["m3"]
        finally:
            for rev in watchers.values():
                rev.stop()


def another_masters_loader_loads_localfs_key_first(monkeypatch, cluster, nid, other):
    """Every cache loader built for ``nid`` from now on: just before it looks up
    ``localfs_key.init_kwargs``, a loader built for master ``other`` loads ``localfs_key``.

    This is what another master's revocation worker did now and then when it built its first
    view cache at the moment this one wrote its view (three masters in one process): Salt's
    loader keeps one ``localfs_key`` module per process and sets its ``__opts__`` at each load,
    and ``init_kwargs`` reads the ``pki_dir`` from them when the caller names none."""
    real = salt.loader.cache
    other_opts = master_opts(cluster, other)

    class Interleaved:
        def __init__(self, loader):
            self.loader = loader

        def __getitem__(self, name):
            if name == "localfs_key.init_kwargs":
                real(other_opts)["localfs_key.fetch"]  # pylint: disable=expression-not-assigned
            return self.loader[name]

        def __getattr__(self, name):
            return getattr(self.loader, name)

    def cache_loader(opts, *args, **kwargs):
        loader = real(opts, *args, **kwargs)
        return Interleaved(loader) if opts.get("id") == nid else loader

    monkeypatch.setattr(salt.loader, "cache", cache_loader)


def test_a_master_writes_its_own_view_whichever_master_loaded_localfs_key_last(
    cluster, pubs, monkeypatch
):
    """The flake of the test above: m1's store of r1 wrote r1 into m3's pki_dir view (m3's
    worker had just loaded ``localfs_key``), so m3 later "revoked" a key it never held and
    rotated its AES key. A write or delete through one master changes that master's view
    only."""
    views = {nid: os.path.join(master_opts(cluster, nid)["pki_dir"], "minions") for nid in IDS}

    def in_view(nid, name):
        return os.path.exists(os.path.join(views[nid], name))

    # m3's view holds lv1 (its minion logged in there); m1's does not (removed here, so that
    # m1's fetch below has to write it)
    kcache(cluster, "m1").store("keys", "lv1", {"state": "accepted", "pub": pubs[0]})
    wait_for(lambda: kcache(cluster, "m3").fetch("keys", "lv1") is not None, 5, "lv1 on m3")
    os.remove(os.path.join(views["m1"], "lv1"))
    another_masters_loader_loads_localfs_key_first(monkeypatch, cluster, "m1", "m3")
    kcache(cluster, "m1").store("keys", "lv2", {"state": "accepted", "pub": pubs[1]})
    assert in_view("m1", "lv2") and not in_view("m3", "lv2")
    assert kcache(cluster, "m1").fetch("keys", "lv1")["state"] == "accepted"
    assert in_view("m1", "lv1")
    # a delete through m1 takes the key out of m1's view; m3's is its engine's to change
    assert kcache(cluster, "m1").flush("keys", "lv1")
    assert not in_view("m1", "lv1") and in_view("m3", "lv1")
    monkeypatch.undo()
    assert kcache(cluster, "m3").fetch("keys", "lv1") is None  # m3's next look at lv1
    assert not in_view("m3", "lv1")
    assert kcache(cluster, "m1").flush("keys", "lv2")


def test_in_salt_cluster_mode_the_master_pair_is_also_where_the_cluster_channel_reads_it(
    cluster, tmp_path
):
    """Salt 3008.4's cluster discover/join reads ``pki_dir/master.pem``/``master.pub``, which
    Salt creates only for ``localfs_key``: without them a joining master died at start."""
    nid = IDS[0]
    cpki = tmp_path / "cluster_pki"
    (cpki / "peers").mkdir(parents=True)
    opts = master_opts(
        cluster, nid, cluster_id="c", cluster_peers=list(IDS[1:]), cluster_pki_dir=str(cpki)
    )
    mk = salt.crypt.MasterKeys(opts)
    # this master's own pair (not the cluster's), as the files Salt's cluster channel reads
    own = mk.master_key.key.public_key().public_numbers()
    with open(os.path.join(opts["pki_dir"], "master.pub"), "rb") as fh:
        assert serialization.load_pem_public_key(fh.read()).public_numbers() == own
    pem = os.path.join(opts["pki_dir"], "master.pem")
    assert os.stat(pem).st_mode & 0o077 == 0
    with open(pem, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    assert key.public_key().public_numbers() == own


def cluster_mode_opts(cluster, tmp_path) -> tuple[dict, str]:
    """Master 1's opts in Salt's cluster mode, its ``cluster_pki_dir`` holding a provisioned
    cluster key pair (as docs/nothing-shared.md asks)."""
    cpki = tmp_path / "cluster_pki"
    (cpki / "peers").mkdir(parents=True)
    priv, pub = salt.crypt.gen_keys(2048)
    for name, data in (("cluster.pem", priv), ("cluster.pub", pub)):
        (cpki / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    opts = master_opts(
        cluster, IDS[0], cluster_id="c", cluster_peers=list(IDS[1:]), cluster_pki_dir=str(cpki)
    )
    return opts, str(cpki)


def salt_rewrites_the_cluster_pair(cpki: str, gap: float, empty: bool) -> threading.Thread:
    """What Salt 3008.4's ``cluster/peer/join-reply`` handler does on a running master: unlink
    ``cluster.pem`` and ``cluster.pub`` and write them again (the same pair, from the peer).
    ``empty``: the files are there but still empty during ``gap`` (opened, not yet written)."""
    files = {}
    for name in CLUSTER_KEY_FILES:
        path = os.path.join(cpki, name)
        with open(path, "rb") as fh:
            files[path] = fh.read()
        os.unlink(path)
        if empty:
            open(path, "wb").close()  # pylint: disable=consider-using-with

    def finish():
        time.sleep(gap)
        for path, data in files.items():
            if os.path.lexists(path):
                os.unlink(path)  # a pair another process generated meanwhile (the bug)
            with open(path, "wb") as fh:
                fh.write(data)

    thread = threading.Thread(target=finish, name="join-reply", daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_a_worker_starting_while_salt_rewrites_the_cluster_pair_signs_with_the_clusters_key(
    cluster, tmp_path, empty
):
    """A request worker builds ``MasterKeys`` when it starts. Salt 3008.4's join handshake
    rewrites the cluster key pair meanwhile (once per peer answering a joining master): the
    worker found no ``cluster.pem``, generated a pair of its own and signed each sign-in answer
    with it while the answer carried the cluster's ``cluster.pub``, so a minion signing in for
    the first time failed with ``Unable to decrypt message`` (test_nothing_shared.py, CI).
    Reads of the pair through the driver now wait for it to be whole again."""
    opts, cpki = cluster_mode_opts(cluster, tmp_path)
    with open(os.path.join(cpki, "cluster.pem"), "rb") as fh:
        provisioned = fh.read()
    rewrite = salt_rewrites_the_cluster_pair(cpki, gap=0.3, empty=empty)
    try:
        worker_keys = salt.crypt.MasterKeys(opts)
    finally:
        rewrite.join(10)
    # a sign-in answer: the cluster.pub it carries, the digest signed with the worker's key
    digest = b"d" * 64
    sig = worker_keys.encrypt(digest)
    try:
        recovered = salt.crypt.PublicKeyString(worker_keys.get_pub_str()).decrypt(sig)
    except ValueError as exc:
        pytest.fail(f"a minion cannot verify this worker's answer with its cluster.pub: {exc}")
    assert recovered == digest
    with open(os.path.join(cpki, "cluster.pem"), "rb") as fh:
        assert fh.read() == provisioned, "a pair of the worker's own replaced the cluster's"


def test_a_cluster_pair_that_stays_missing_is_left_to_salt_after_the_wait(
    cluster, tmp_path, monkeypatch
):
    """A first start without a provisioned pair: Salt generates one, after the bounded wait."""
    monkeypatch.setattr(keystore, "CLUSTER_KEY_SETTLE", 0.2)
    opts, cpki = cluster_mode_opts(cluster, tmp_path)
    for name in CLUSTER_KEY_FILES:
        os.unlink(os.path.join(cpki, name))
    kc = kcache(cluster, IDS[0], **{k: opts[k] for k in ("cluster_id", "cluster_pki_dir")})
    started = time.monotonic()
    assert kc.contains("master_keys", "cluster.pem") is False
    assert kc.fetch("master_keys", "cluster.pub") is None
    assert time.monotonic() - started >= 0.4
    mk = salt.crypt.MasterKeys(opts)
    with open(os.path.join(cpki, "cluster.pub"), encoding="ascii") as fh:
        on_disk = serialization.load_pem_public_key(fh.read().encode()).public_numbers()
    assert mk.cluster_key.public_key().public_numbers() == on_disk
    # this master's own keys are not waited for
    started = time.monotonic()
    assert kc.contains("master_keys", "no-such.pem") is False
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_cluster_pair_with_text_beside_its_pem_block_is_read_without_the_wait(
    cluster, tmp_path, where
):
    """Salt loads a key file with text before or after its PEM block (``openssl`` writes
    ``Bag Attributes`` or a text dump before it; an operator may add a comment line). Such a
    pair is whole: a read through the driver must not wait out ``CLUSTER_KEY_SETTLE`` each
    time (``get_pub_str`` reads ``cluster.pub`` twice per minion sign-in)."""
    opts, cpki = cluster_mode_opts(cluster, tmp_path)
    note = "# cluster pair provisioned from m1\n"
    for name in CLUSTER_KEY_FILES:
        path = os.path.join(cpki, name)
        with open(path, encoding="ascii") as fh:
            pem = fh.read()
        with open(path, "w", encoding="ascii") as fh:
            fh.write(note + pem if where == "before" else pem + note)
    kc = kcache(cluster, IDS[0], **{k: opts[k] for k in ("cluster_id", "cluster_pki_dir")})
    started = time.monotonic()
    assert kc.contains("master_keys", "cluster.pem") is True
    assert "PUBLIC KEY-----" in kc.fetch("master_keys", "cluster.pub")
    assert time.monotonic() - started < 0.5 * keystore.CLUSTER_KEY_SETTLE
