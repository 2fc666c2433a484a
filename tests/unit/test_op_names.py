"""One name per operation: ``add_learner`` and ``transfer_leader`` in the runtime API, between
masters, on the standalone node's control channel and between runner and engine. Operators
keep typing ``salt-run raft.add`` (a documented alias: the runner's name, not an op)."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.master import control as engine_control
from saltext_raft.runners import raft as runner
from saltext_raft.runtime import control as runtime_control
from tests.unit.master.services import ServiceCluster

#: Second names the protocols used to have for the same operations.
RETIRED = ("add", "transfer")


def test_each_protocol_names_the_operations_once():
    for vocabulary in (set(runtime_control.HANDLERS), set(engine_control.OPS)):
        assert {"add_learner", "transfer_leader"} <= vocabulary
        assert not vocabulary & set(RETIRED)


def test_the_add_runner_sends_add_learner_and_reports_errors_as_raft_add(monkeypatch):
    sent = []

    class Client:
        def __init__(self, opts):
            pass

        def call(self, op, args, timeout):
            sent.append((op, args["node"], args["address"]))
            raise engine_control.ControlError("engine not running")

    monkeypatch.setattr(runner, "__opts__", {}, raising=False)
    monkeypatch.setattr(runner._control, "ControlClient", Client)  # pylint: disable=protected-access
    out = runner.add("m4", "10.0.0.4:4606")
    assert sent == [("add_learner", "m4", "10.0.0.4:4606")]
    assert out["error"] == "raft.add: engine not running" and out["retcode"] == 1


@pytest.mark.parametrize("retired", RETIRED)
def test_the_engine_client_refuses_a_retired_name(retired):
    with pytest.raises(engine_control.ControlError, match="unknown operation"):
        engine_control.ControlClient({}).call(retired, {})


def test_the_engine_serves_add_learner_and_transfer_leader(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path) as sc:
            leader = await sc.cluster.leader()
            svc = sc.services[leader.id]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None,
                svc.handle_control,
                "add_learner",
                {"node": "m9", "address": "127.0.0.9:4606", "timeout": 5},
            )
            assert "m9" in leader.node.membership.learners
            other = next(n for n in sc.services if n != leader.id)
            out = await loop.run_in_executor(
                None, svc.handle_control, "transfer_leader", {"node": other, "timeout": 5}
            )
            assert out["leader"] == other

    asyncio.run(asyncio.wait_for(main(), 60))
