"""Scenarios on real masters: election, members, failover, the gate with a minion."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.integration.conftest import Cluster
from tests.integration.conftest import ready_state
from tests.integration.conftest import run_json
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def cluster(salt_factories, tmp_path):
    c = Cluster(salt_factories, tmp_path)
    with contextlib.ExitStack() as stack:
        c.stack = stack
        yield c


def start_all(c):
    for mid in c.ids:
        f = c.master_factory(mid)
        c.stack.enter_context(f.started(start_timeout=120))
    return c


def leaders(c, ids=None):
    return {ready_state(c.masters[m]).get("leader") for m in (ids or c.ids)}


def test_three_masters_elect_one_leader_and_agree_on_members(cluster):
    start_all(cluster)
    t_last_up = time.monotonic()
    wait_for(lambda: all(cluster.ready(m) for m in cluster.ids), 30, "every gate open")
    print(f"\nall gates open {time.monotonic() - t_last_up:.2f}s after the last master started")
    roles = [ready_state(cluster.masters[m]).get("role") for m in cluster.ids]
    assert roles.count("leader") == 1, roles
    seen = []
    for mid in cluster.ids:
        rc, data, ret = run_json(cluster.masters[mid], "raft.members")
        assert rc == 0, ret
        seen.append((tuple(data["voters"]), data["leader"]))
        assert data["learners"] == []
    assert len(set(seen)) == 1, seen
    assert sorted(seen[0][0]) == sorted(cluster.ids)


def test_runner_fails_clearly_when_the_engine_is_not_running(salt_factories, tmp_path):
    c = Cluster(salt_factories, tmp_path, size=1)
    bad = c.engine(secret_file=str(tmp_path / "missing"))
    f = c.master_factory(c.ids[0], engine=bad)
    with f.started(start_timeout=120):
        rc, data, ret = run_json(f, "raft.status", "timeout=2")
        assert rc != 0, ret
        assert "no reply from the raft engine" in ret.stdout
        wait_for(lambda: "secret_file" in open(f.config["log_file"]).read(), 20,
                 "the engine's config error in the master log")
