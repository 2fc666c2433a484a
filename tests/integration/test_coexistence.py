"""Salt 3008 with ``cluster_id``/``cluster_peers`` set: Salt's own core consensus and
saltext-raft run side by side on the same three masters without interfering.

Skipped on Salt lines without core consensus (3007), and when Salt's core cluster does not form
in this environment (the reason is given). The engine's secret is derived from Salt's shared
cluster key (no ``secret_file``), as documented for clustered masters.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import time

import pytest
from pytestshellutils.utils import ports

from saltext_raft.testing.cluster import master_ids
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import log_text
from tests.integration.conftest import wait_for


def _has_core_consensus() -> bool:
    try:
        return importlib.util.find_spec("salt.cluster.consensus.service") is not None
    except ImportError:  # no salt.cluster package at all (3007)
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _has_core_consensus(),
        reason="this Salt has no core consensus (Salt 3008 ships one; 3007 does not)",
    ),
]


def core_joined(master) -> bool:
    return bool(glob.glob(os.path.join(master.config["cachedir"], ".cluster_joined*")))


def test_core_consensus_and_saltext_raft_run_side_by_side(raft_cluster_factory, tmp_path):
    pki = tmp_path / "cluster_pki"
    pki.mkdir()
    pool_port = ports.get_unused_localhost_port()
    ids = master_ids(3)
    c = raft_cluster_factory(
        3,
        engine={"secret_file": None},  # derived from cluster_pki_dir/cluster.pem
        master_config=lambda mid: {
            "cluster_id": "srt-core",
            "cluster_peers": [m for m in ids if m != mid],
            "cluster_pki_dir": str(pki),
            "cluster_pool_port": pool_port,
        },
        name="core",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(core_joined(c.masters[m]) for m in c.ids):
        time.sleep(0.2)
    if not all(core_joined(c.masters[m]) for m in c.ids):
        pytest.skip(
            "Salt 3008's core cluster did not form in this environment within 60 s "
            f"(joined: {[m for m in c.ids if core_joined(c.masters[m])]}); nothing to "
            "coexist with"
        )
    wait_for(c.gates_open, 60, "every saltext-raft gate open")
    for mid in c.ids:
        rc, data, ret = run_json(c.masters[mid], "raft.status")
        assert rc == 0, ret
        assert data["engine"]["salt_core_consensus"] is True, data["engine"]
        assert "derived from" in log_text(c.masters[mid])  # secret from cluster.pem
        assert "Salt's own core consensus is also running" in log_text(c.masters[mid])
    rc, data, ret = run_json(c.masters[c.ids[0]], "raft.members")
    assert rc == 0 and sorted(data["voters"]) == c.ids, ret
    # Runner requests are forwarded to peer masters by Salt's clustering: each engine
    # answered its own (no duplicate or foreign replies broke the runner above), and core's
    # cluster is still joined everywhere.
    assert all(core_joined(c.masters[m]) for m in c.ids)
