"""The ``raft`` state module on real masters: the orchestration of docs/examples grows a
cluster from three masters to five and back to three, each step run twice; the second run of
each step must report no changes.

The new masters are started only once the orchestration has added them (as a learner), so it is
the state's ``raft.add`` that makes them members (their own JOIN is then a no-op) and the
leader's promotion the state waits for. The removed masters are stopped (by PID, through their
factories) afterwards.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time

import pytest

from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import ready_state
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples" / "raft_cluster.sls"
HOME = "127.0.0.1"  # runs the orchestration and stays in the cluster
NEW = ["127.0.0.4", "127.0.0.5"]


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    with RaftCluster(salt_factories, tmp_path_factory.mktemp("states"), name="states") as c:
        c.start()
        wait_for(lambda: c.gates_open() and c.leader(), 90, "three masters with a leader")
        home = c.masters[HOME]
        orch = pathlib.Path(home.config["file_roots"]["base"][0]) / "orch" / "raft_cluster.sls"
        orch.parent.mkdir(parents=True, exist_ok=True)
        orch.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
        yield c


def pillar(cluster, ids, retired=()):
    return {
        "raft_masters": {m: f"{m}:{cluster.raft_port}" for m in ids},
        "raft_retired": list(retired),
        "raft_leader": HOME,
    }


def state_results(data) -> dict:
    """The state returns in ``salt-run state.orchestrate --out json`` output, by state id."""
    if isinstance(data, dict):
        if data and all("_|-" in k for k in data):
            return data
        for value in data.values():
            found = state_results(value)
            if found:
                return found
    return {}


def orchestrate_raw(cluster, data, *extra, timeout=600):
    rc, out, ret = run_json(
        cluster.masters[HOME],
        "state.orchestrate",
        "orch.raft_cluster",
        f"pillar={json.dumps(data)}",
        *extra,
        timeout=timeout,
    )
    results = state_results(out)
    assert results, ret
    return rc, results, ret


def orchestrate(cluster, data, timeout=600):
    rc, results, ret = orchestrate_raw(cluster, data, timeout=timeout)
    failed = {k: v["comment"] for k, v in results.items() if v.get("result") is not True}
    assert rc == 0 and not failed, (failed, ret)
    return {k.split("_|-")[1]: v["changes"] for k, v in results.items()}


def members(cluster, via=HOME):
    return cluster.members(via)


def test_the_example_orchestration_grows_three_to_five_and_back_idempotently(cluster):
    five = [*cluster.ids, *NEW]
    # test=True first: the changes it would make, and nothing changed.
    _, results, ret = orchestrate_raw(cluster, pillar(cluster, five), "test=True")
    by_id = {k.split("_|-")[1]: v for k, v in results.items()}
    for mid in NEW:
        dry = by_id[f"raft-member-{mid}"]
        assert dry["result"] is None and "would add" in dry["comment"], ret
        assert dry["changes"]["new"]["role"] == "voter", ret
    data = members(cluster)
    assert sorted(data["voters"]) == cluster.ids and data["learners"] == [], data

    record = {}

    def grow():
        try:
            record["changes"] = orchestrate(cluster, pillar(cluster, five))
        except BaseException as exc:  # pylint: disable=broad-except
            record["error"] = exc

    t0 = time.monotonic()
    runner = threading.Thread(target=grow, daemon=True)
    runner.start()
    # Start each new master once the orchestration has made it a member (it waits for its
    # promotion before it adds the next one).
    for mid in NEW:
        wait_for(
            lambda m=mid: (
                "error" in record or m in (ready_state(cluster.masters[HOME]).get("learners") or [])
            ),
            180,
            f"the orchestration to add {mid} as a learner",
            interval=0.2,
        )
        assert "error" not in record, record["error"]
        cluster.add_master(mid)
        cluster.start([mid])
    runner.join(600)
    assert not runner.is_alive(), "the orchestration did not finish in 600 s"
    assert "error" not in record, record["error"]
    grown = time.monotonic() - t0
    changes = record["changes"]
    for mid in NEW:
        assert changes[f"raft-member-{mid}"] == {
            "old": {"role": "absent"},
            "new": {"role": "voter", "address": f"{mid}:{cluster.raft_port}"},
        }, changes
    for mid in cluster.ids:
        assert changes[f"raft-member-{mid}"] == {}, changes
    data = members(cluster)
    assert sorted(data["voters"]) == sorted(five) and data["learners"] == [], data
    assert data["leader"] == HOME, data

    t0 = time.monotonic()
    again = orchestrate(cluster, pillar(cluster, five))
    grown_again = time.monotonic() - t0
    assert not any(again.values()), again

    t0 = time.monotonic()
    shrink = pillar(cluster, cluster.ids, retired=NEW)
    changes = orchestrate(cluster, shrink)
    shrunk = time.monotonic() - t0
    for mid in NEW:
        assert changes[f"raft-retired-{mid}"] == {
            "old": {"role": "voter", "address": f"{mid}:{cluster.raft_port}"},
            "new": {"role": "absent"},
        }, changes
    data = members(cluster)
    assert sorted(data["voters"]) == sorted(cluster.ids) and data["learners"] == [], data
    for mid in NEW:
        wait_for(lambda m=mid: not cluster.gate_open(m), 30, f"{mid}'s gate to close once removed")
        cluster.masters[mid].terminate()

    t0 = time.monotonic()
    again = orchestrate(cluster, shrink)
    shrunk_again = time.monotonic() - t0
    assert not any(again.values()), again
    assert cluster.gates_open() and wait_for(cluster.leader, 20, "an agreed leader") == HOME
    print(
        f"\n3 -> 5: {grown:.1f}s (new masters started by the test included), again "
        f"{grown_again:.1f}s; 5 -> 3: {shrunk:.1f}s, again {shrunk_again:.1f}s"
    )
