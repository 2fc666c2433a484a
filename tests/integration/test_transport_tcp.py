"""The request gate with ``transport: tcp``: a minion started before the cluster is ready has
its requests held (and refused, then retried) while master 1 has no quorum, and served once the
gate opens. The zeromq case is the first scenario of ``test_cluster.py``."""

from __future__ import annotations

import pytest

from saltext_raft.testing.cluster import RaftCluster
from tests.integration.conftest import gates_vs_ports
from tests.integration.conftest import log_text
from tests.integration.conftest import start_with_early_minion

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def tcp_cluster(salt_factories, tmp_path_factory):
    with RaftCluster(
        salt_factories, tmp_path_factory.mktemp("tcp"), transport="tcp", name="tcp"
    ) as c:
        c.early = start_with_early_minion(c, "minion-tcp")
        yield c


def test_gate_holds_then_serves_a_minion_over_tcp(tcp_cluster):
    c = tcp_cluster
    m1 = c.masters[c.ids[0]]
    assert m1.config["transport"] == "tcp"
    early = c.early
    assert early["closed_at_minion_start"] and early["closed_after_auth"], early
    assert not early["minion_errors"], early["minion_errors"]
    # While master 1 had no quorum, the minion's requests reached the gate: held, and either
    # served once the gate opened within the hold or refused after it (the minion retried).
    text = log_text(m1)
    assert "saltext-raft gate: refused a request" in text or "saltext-raft gate: held a" in text
    ret = m1.salt_cli(timeout=90).run("test.ping", minion_tgt="minion-tcp")
    assert ret.returncode == 0 and ret.data is True, ret
    print(f"\n(tcp) {gates_vs_ports(early['all_open_after_last_port'])}")
