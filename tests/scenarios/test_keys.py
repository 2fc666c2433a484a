"""Salt 3008 ``keys.cache_driver: raft`` on real masters (pytest-salt-factories).

Three masters (127.0.0.1-3) with the ``raft`` engine, ``cache: raft`` and
``keys.cache_driver: raft``; each has its own root_dir, cachedir and pki_dir (nothing shared).
Salt-factories' automatic key acceptance is switched off: the tests accept keys with
``salt-key`` on one master and look at the others. The tests share one cluster and run alone
(``pytest -k``) as well as in file order: the restart test accepts the two minions itself
(:func:`ensure_accepted`) when the tests that do so did not run.

Salt 3007 has no ``keys.cache_driver``: the module skips there.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import salt.config

from tests.preconditions import require
from tests.scenarios.masters import IDS
from tests.scenarios.masters import start_masters
from tests.scenarios.masters import starting
from tests.scenarios.masters import wait_for

pytest.importorskip("saltfactories")

if "keys.cache_driver" not in salt.config.DEFAULT_MASTER_OPTS:
    pytest.skip(
        "Salt 3007 has no keys.cache_driver: minion keys live in each master's pki_dir only",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINION_1 = "keys-minion-1"  # connects to master 1; accepted there
MINION_2 = "keys-minion-2"  # connects to master 2; accepted on master 3


def no_auto_accept(master, payload):  # pylint: disable=unused-argument
    """Salt-factories would run ``salt-key --accept`` on every pending key: the tests do it."""


def key_list(master) -> dict:
    ret = master.salt_key_cli(timeout=60).run("-L", "--out", "json", _timeout=60)
    assert ret.returncode == 0, ret
    return ret.data


def key_state(master, minion_id):
    keys = key_list(master)
    for state, ids in keys.items():
        if minion_id in (ids or []):
            return state
    return None


def master_pub(master) -> str:
    # With a keys driver other than localfs_key, Salt names the pair after the master id.
    pki = master.config["pki_dir"]
    path = os.path.join(pki, f"{master.config['id']}.pub")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def accepted_minion(cluster_masters, via, accept_on, minion_id, stack):
    """A minion pointed at master ``via``: wait until its pending key is visible on every
    master, accept it with ``salt-key`` on ``accept_on``, wait until it has started."""
    masters = cluster_masters
    m_via = masters[via]
    minion = m_via.salt_minion_daemon(
        minion_id, overrides={"master": via, "master_port": m_via.config["ret_port"]}
    )
    stack.callback(minion.terminate)  # by its factory (PID), when the module's cluster stops
    join = stack.enter_context(starting(minion))
    for mid in IDS:  # the pending key written by master ``via``'s _auth is replicated
        wait_for(
            lambda mid=mid: key_state(masters[mid], minion_id) == "minions_pre",
            60,
            f"{minion_id} pending on {mid}",
            interval=0.5,
        )
    ret = masters[accept_on].salt_key_cli(timeout=60).run("-y", "-a", minion_id, _timeout=60)
    assert ret.returncode == 0, ret
    errors = join()
    assert not errors, f"{minion_id} did not start after its key was accepted: {errors}"
    return minion


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        masters = start_masters(
            salt_factories,
            tmp_path_factory,
            stack,
            "keys",
            {
                "keys.cache_driver": "raft",
                "raft_cache_timeout": 5,
                "open_mode": False,
                "auto_accept": False,
            },
            on_auth_event_callback=no_auto_accept,
        )
        yield masters, stack


def test_masters_keep_their_own_master_keys(cluster):
    masters, _ = cluster
    pubs = {mid: master_pub(masters[mid]) for mid in IDS}
    assert all("PUBLIC KEY" in p for p in pubs.values()), pubs
    assert len(set(pubs.values())) == 3, "the masters' public keys must differ"
    # and no private key was replicated: the mirror holds no key material of a master
    for mid in IDS:
        mirror = os.path.join(masters[mid].config["cachedir"], "saltext_raft_cache")
        for dirpath, _dirs, files in os.walk(mirror):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    assert b"PRIVATE KEY" not in fh.read(), os.path.join(dirpath, name)


def test_a_key_accepted_on_master_1_is_accepted_on_masters_2_and_3(cluster):
    masters, stack = cluster
    accepted_minion(masters, IDS[0], IDS[0], MINION_1, stack)
    for mid in IDS:
        wait_for(
            lambda mid=mid: key_state(masters[mid], MINION_1) == "minions",
            30,
            f"{MINION_1} accepted on {mid}",
            interval=0.5,
        )
    # the accepted minion works on master 1: its AES requests pass Salt's token check, which
    # reads pki_dir/minions/<id> directly (the keystore keeps that view)
    ret = masters[IDS[0]].salt_cli(timeout=60).run("test.ping", minion_tgt=MINION_1)
    assert ret.returncode == 0 and ret.data is True, ret


def test_a_key_accepted_on_master_3_lets_the_minion_work_on_master_2(cluster):
    masters, stack = cluster
    accepted_minion(masters, IDS[1], IDS[2], MINION_2, stack)
    ret = masters[IDS[1]].salt_cli(timeout=60).run("test.ping", minion_tgt=MINION_2)
    assert ret.returncode == 0 and ret.data is True, ret
    # nobody ran salt-key on master 2: the key file in its pki_dir is the keystore's view
    path = os.path.join(masters[IDS[1]].config["pki_dir"], "minions", MINION_2)
    assert os.path.isfile(path)


def ensure_accepted(cluster, via, accept_on, minion_id):
    """``minion_id``'s key accepted on master 2 (the keystore's view of every master): as the
    test that accepts it leaves it, or accepted now the same way (pointed at ``via``, accepted
    with ``salt-key`` on ``accept_on``)."""
    masters, stack = cluster
    if key_state(masters[IDS[1]], minion_id) != "minions":
        accepted_minion(masters, via, accept_on, minion_id, stack)
        wait_for(
            lambda: key_state(masters[IDS[1]], minion_id) == "minions",
            30,
            f"{minion_id} accepted on {IDS[1]}",
            interval=0.5,
        )


def test_a_restarted_master_keeps_its_key_and_the_accepted_minions(cluster):
    masters, _ = cluster
    m2 = masters[IDS[1]]
    require(m2.is_running(), "master 2 running")
    ensure_accepted(cluster, IDS[0], IDS[0], MINION_1)
    ensure_accepted(cluster, IDS[1], IDS[2], MINION_2)
    before = master_pub(m2)
    m2.terminate()
    m2.start(start_timeout=120)
    assert master_pub(m2) == before
    keys = key_list(m2)
    assert MINION_1 in keys["minions"] and MINION_2 in keys["minions"], keys

    def pings():
        ret = m2.salt_cli(timeout=30).run("test.ping", minion_tgt=MINION_2, _timeout=40)
        return ret.returncode == 0 and ret.data is True

    wait_for(pings, 120, f"{MINION_2} answering master 2 after its restart", interval=2)
