"""Salt 3007 minion keys with nothing shared (engine option ``keys: replicate``), on real
masters (pytest-salt-factories, through ``saltext_raft.testing.RaftCluster``).

Three masters on 127.0.0.1-3, each with its own root_dir, pki_dir and cachedir (the factory
gives every daemon its own root; no path of one master's config points into another's, which
the first test checks). Salt's clustering (``cluster_id``) is not used: minion keys do not
need it, so Salt reads them from each master's own ``pki_dir``. Keys are accepted by
pytest-salt-factories as Salt operators do it: ``salt-key -a`` on the master the minion
authenticated with (its auth-event callback). The tests share one cluster and run in file
order.

Salt 3008 keeps keys behind ``keys.cache_driver`` (``tests/scenarios/test_keys.py``): the
module skips there.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import salt.config

from saltext_raft.testing.cluster import RaftCluster
from tests.preconditions import require
from tests.scenarios.masters import wait_for

pytest.importorskip("saltfactories")

if "keys.cache_driver" in salt.config.DEFAULT_MASTER_OPTS:
    pytest.skip(
        "keys: replicate is for Salt 3007 (plain key files); Salt 3008 replicates keys with "
        "keys.cache_driver: raft (tests/scenarios/test_keys.py)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.integration, pytest.mark.slow]

M1, M2, M3 = "k7-minion-1", "k7-minion-2", "k7-minion-3"
PATH_OPTIONS = ("root_dir", "pki_dir", "cachedir", "sock_dir", "cluster_pki_dir", "log_file")


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with RaftCluster(
        salt_factories,
        tmp_path_factory.mktemp("k3007-secret"),
        cache="raft",
        engine={"keys": "replicate"},
        master_config={"open_mode": False, "auto_accept": False, "raft_cache_timeout": 5},
        name="k7",
    ) as c:
        c.start()
        c.wait_gates_open()
        yield c


def key_state(master, minion_id):
    ret = master.salt_key_cli(timeout=60).run("-L", "--out", "json", _timeout=60)
    assert ret.returncode == 0, ret
    for state, ids in (ret.data or {}).items():
        if minion_id in (ids or []):
            return state
    return None


def wait_state(cluster, mids, minion_id, state, timeout=60):
    for mid in mids:
        wait_for(
            lambda mid=mid: key_state(cluster.masters[mid], minion_id) == state,
            timeout,
            f"{minion_id} {state or 'absent'} on {mid}",
            interval=0.5,
        )


def master_log(master, minion_id) -> list[str]:
    """The engine's log lines about ``minion_id``'s key (``saltext-raft keys: ...``)."""
    path = master.config["log_file"]
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line for line in fh if "saltext-raft keys:" in line and minion_id in line]


def proposed_lines(master, minion_id) -> list[str]:
    """The engine's log lines of local key changes it proposed for ``minion_id``."""
    return [
        line
        for line in master_log(master, minion_id)
        if f"keys/{minion_id}: local change proposed" in line
    ]


def test_no_master_shares_a_path_with_another(cluster):
    paths = {}
    for mid in cluster.ids:
        config = cluster.masters[mid].config
        assert not config.get("cluster_id"), "the scenario runs without Salt's clustering"
        for option in PATH_OPTIONS:
            value = config.get(option)
            if value:
                paths.setdefault(os.path.realpath(value), []).append((mid, option))
    shared = {p: users for p, users in paths.items() if len({m for m, _ in users}) > 1}
    assert not shared, shared
    roots = [os.path.realpath(cluster.masters[m].config["root_dir"]) for m in cluster.ids]
    for mid in cluster.ids:
        pki = os.path.realpath(cluster.masters[mid].config["pki_dir"])
        others = [
            r for r in roots if r != os.path.realpath(cluster.masters[mid].config["root_dir"])
        ]
        assert not any(pki.startswith(r + os.sep) for r in others), (mid, pki)


def test_a_key_accepted_on_master_1_is_accepted_on_masters_2_and_3(cluster):
    m1 = cluster.ids[0]
    cluster.minion(m1, M1)  # pending through master 1's _auth, accepted with salt-key there
    wait_state(cluster, cluster.ids, M1, "minions")
    for mid in cluster.ids[1:]:  # the key file is the engine's view, written on each master
        path = os.path.join(cluster.masters[mid].config["pki_dir"], "minions", M1)
        assert os.path.isfile(path)
    ret = cluster.masters[m1].salt_cli(timeout=60).run("test.ping", minion_tgt=M1)
    assert ret.returncode == 0 and ret.data is True, ret


def test_a_master_down_during_an_accept_learns_it_at_restart(cluster):
    m1, m2, m3 = cluster.ids
    cluster.stop(m3)
    cluster.minion(m1, M2)  # accepted through master 1 while master 3 is down
    wait_state(cluster, (m1, m2), M2, "minions")
    assert key_state(cluster.masters[m3], M2) is None  # salt-key reads m3's own files
    cluster.restart(m3)
    wait_state(cluster, (m3,), M2, "minions")


def test_a_key_deleted_while_a_master_was_down_stays_deleted_there(cluster):
    m1, m2, m3 = cluster.ids
    require(key_state(cluster.masters[m3], M2) == "minions", f"{M2} accepted on {m3}")
    minion = cluster.minions[M2]
    minion.terminate()  # else it authenticates again and is pending anew
    cluster.stop(m3)
    ret = cluster.masters[m1].salt_key_cli(timeout=60).run("-y", "-d", M2, _timeout=60)
    assert ret.returncode == 0, ret
    wait_state(cluster, (m1, m2), M2, None)
    m3_file = os.path.join(cluster.masters[m3].config["pki_dir"], "minions", M2)
    assert os.path.isfile(m3_file)  # master 3's directory still has it
    cluster.restart(m3)
    wait_for(lambda: not os.path.exists(m3_file), 60, f"{M2}'s key removed on {m3}")
    assert proposed_lines(cluster.masters[m3], M2) == []  # never proposed back
    for mid in (m1, m2, m3):
        assert key_state(cluster.masters[mid], M2) is None, mid


def test_a_minion_accepted_via_master_1_authenticates_on_master_2_without_becoming_pending(
    cluster,
):
    """Master 2 is down while M3 is accepted through master 1. Then master 2 comes back alone
    (masters 1 and 3 stopped): its engine cannot catch up with the log, so master 2 has no key
    file for M3 when M3 (the same key) signs in there. _auth must confirm with the cluster,
    cannot, and refuses the sign-in without filing M3 as pending; once master 1 is back, the
    engine writes the accepted key and M3 authenticates on master 2, never pending anywhere."""
    m1, m2, m3 = cluster.ids
    cluster.stop(m2)
    first = cluster.minion(m1, M3)
    wait_state(cluster, (m1,), M3, "minions")
    pki = first.config["pki_dir"]
    first.terminate()
    second = cluster.masters[m2].salt_minion_daemon(M3, overrides={"master": m2, "id": M3})
    new_pki = second.config["pki_dir"]
    if os.path.realpath(new_pki) == os.path.realpath(pki):
        # Same directory: only master 1's public key, cached by the minion, must go.
        os.unlink(os.path.join(pki, "minion_master.pub"))
    else:
        os.makedirs(new_pki, exist_ok=True)
        for name in ("minion.pem", "minion.pub"):
            shutil.copy2(os.path.join(pki, name), os.path.join(new_pki, name))
    cluster.stop(m1)
    cluster.stop(m3)
    cluster.restart(m2)  # alone: no quorum, its engine cannot catch up
    errors = []

    def start_minion():
        try:
            second.start(start_timeout=300, max_start_attempts=1)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    thread = threading.Thread(target=start_minion, name="start-k7-minion-3", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: any(
                "not authenticated" in line for line in master_log(cluster.masters[m2], M3)
            ),
            120,
            f"master 2 refusing {M3}'s sign-in for want of the cluster",
            interval=1,
        )
        m2_pki = cluster.masters[m2].config["pki_dir"]
        for sub in ("minions_pre", "minions"):
            assert not os.path.lexists(os.path.join(m2_pki, sub, M3)), sub
        cluster.restart(m1)  # quorum again: master 2 catches up and writes the accepted key
        thread.join(320)
        assert not thread.is_alive() and not errors, errors
        ret = cluster.masters[m2].salt_cli(timeout=60).run("test.ping", minion_tgt=M3)
        assert ret.returncode == 0 and ret.data is True, ret
        for mid in (m1, m2):
            assert key_state(cluster.masters[mid], M3) == "minions", mid
        log_lines = master_log(cluster.masters[m2], M3)
        assert not [line for line in log_lines if "local change" in line], log_lines
        cluster.restart(m3)
        wait_state(cluster, (m3,), M3, "minions")
    finally:
        thread.join(320)
        second.terminate()
