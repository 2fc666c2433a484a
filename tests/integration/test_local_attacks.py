"""A local unprivileged user against a real master (issue 18, H1): the attack runs where it
lives, on a salt-master with the raft engine, ``cache: raft`` and ``keys.cache_driver: raft``."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import salt.config

from saltext_raft.testing.cluster import RaftCluster
from tests.attacker import NOBODY
from tests.attacker import as_nobody
from tests.attacker import plant_rogue_key
from tests.attacker import sticky_shared_dir
from tests.integration.conftest import log_text
from tests.integration.conftest import ready_state
from tests.integration.conftest import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user"),
    pytest.mark.skipif(
        "keys.cache_driver" not in salt.config.DEFAULT_MASTER_OPTS,
        reason="minion keys go through the cache driver on Salt 3008 only",
    ),
]


def accepted_keys(master) -> list:
    ret = master.salt_key_cli(timeout=60).run("-L", "--out", "json", _timeout=60)
    try:
        return list(json.loads(ret.stdout).get("minions", []))
    except ValueError:
        return []  # salt-key failed: it listed nothing


def test_a_cache_dir_planted_by_a_local_user_is_refused_by_a_real_master(salt_factories, tmp_path):
    """Regression (H1): uid 65534 created the suggested ``/dev/shm/salt-raft-cache`` first and
    planted ``rogue`` as accepted; ``salt-key -L`` listed it and the engine wrote
    ``pki_dir/minions/rogue``."""
    with sticky_shared_dir() as shared:
        root = os.path.join(shared, "salt-raft-cache")
        as_nobody(lambda: plant_rogue_key(root))
        with RaftCluster(
            salt_factories,
            tmp_path,
            1,
            cache="raft",
            keys_cache_driver="raft",
            # the planted key is in the localfs layout: the layout whose reads it could fool
            # (tests/unit/master/test_private_dirs.py covers both layouts)
            master_config={"raft_cache_dir": root, "raft_cache_backend": "localfs"},
            name="planted-cache",
        ) as c:
            f = c.start().masters[c.ids[0]]
            assert "rogue" not in accepted_keys(f)  # the workers do not read it
            wait_for(
                lambda: "not starting" in log_text(f) and f"owned by uid {NOBODY}" in log_text(f),
                60,
                "the engine's refusal of the planted directory in the master log",
            )
            assert "rogue" not in accepted_keys(f)
            assert not os.path.exists(os.path.join(f.config["pki_dir"], "minions", "rogue"))
            assert ready_state(f).get("ready") is not True
        assert sorted(os.listdir(root)) == ["saltext_raft_keys"]  # nothing written into it


def ping(master, minion_id) -> bool:
    """One ``salt <minion> test.ping`` (salt's timeout 8 s): the minion's return goes through the
    master's request workers, hence through the gate."""
    try:
        ret = master.salt_cli(timeout=40).run("test.ping", "-t", "8", minion_tgt=minion_id)
    except Exception:  # pylint: disable=broad-except
        return False
    return ret.returncode == 0 and ret.data is True


def test_a_hung_engine_with_the_wall_clock_stepped_back_closes_a_real_masters_gate(
    raft_cluster_factory,
):
    """Regression (L8): the workers judged the engine alive by ``now - mtime`` of the
    readiness file; with the engine not running and the wall clock stepped back an hour, its
    last "ready" stayed believed. Here the engine is stopped (SIGSTOP: the master's process
    manager would restart a killed one) and the file's mtime put an hour ahead."""
    c = raft_cluster_factory(1)
    mid = c.ids[0]
    f = c.masters[mid]
    wait_for(lambda: ready_state(f).get("ready"), 60, "the single master's gate to open")
    c.minion(mid, "minion-clock")
    f.salt_key_cli(timeout=60).run("-y", "-a", "minion-clock", _timeout=60)
    wait_for(lambda: ping(f, "minion-clock"), 90, "the minion to answer through the gate")
    engine_pid = ready_state(f)["pid"]
    path = os.path.join(f.config["cachedir"], "saltext_raft", "ready")
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        future = time.time() + 3600
        os.utime(path, (future, future))
        wait_for(lambda: not ping(f, "minion-clock"), 60, "the gate to close")
        assert ready_state(f).get("ready") is True  # the file still says so; not believed
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    wait_for(lambda: ping(f, "minion-clock"), 90, "the gate to reopen with the engine back")
