"""A client's ``timeout`` (runtime API, the engine's control, the runners): a NaN or an
infinite one is refused before anything starts (red team 2026-12-07).

Before, ``salt-run raft.add node=m9 address=... timeout=nan`` (the runner turned the text into
a float) reached the engine, whose control thread gave up on the operation at once
(``Future.result(nan)``) while the operation itself stayed on the loop with a deadline no
comparison ever passed: without quorum it was pending for ever, one more per call."""

from __future__ import annotations

import asyncio
import math

import pytest

from saltext_raft.runners import raft as runner
from saltext_raft.runtime.errors import Rejected
from tests.unit.master.services import ServiceCluster
from tests.unit.runtime.helpers import LocalCluster

BAD = (math.nan, math.inf, -math.inf)


def run(coro, bound: float = 60):
    return asyncio.run(asyncio.wait_for(coro, bound))


@pytest.mark.parametrize("timeout", BAD)
def test_a_membership_change_without_quorum_and_a_nan_timeout_is_refused_at_once(timeout):
    async def main():
        async with LocalCluster() as c:
            leader = await c.leader()
            for nid in [n for n in list(c.nodes) if n != leader.id]:
                await c.stop(nid)  # no quorum: nothing can commit
            last = leader.node.log.last_index
            task = asyncio.ensure_future(leader.add_learner("n9", "mem://n9", timeout))
            done, _ = await asyncio.wait({task}, timeout=3)
            if not done:
                task.cancel()
            assert done, "add_learner with a non-finite timeout was still pending after 3 s"
            with pytest.raises(Rejected, match="timeout must be a finite number"):
                task.result()
            assert leader.node.log.last_index == last  # nothing was proposed
            for call in (leader.propose(b"x", timeout), leader.read(timeout)):
                with pytest.raises(Rejected, match="timeout must be a finite number"):
                    await call

    run(main())


def test_the_engine_answers_a_nan_timeout_with_the_reason_and_starts_nothing(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path) as sc:
            leader = await sc.cluster.leader()
            svc = sc.services[leader.id]
            last = leader.node.log.last_index
            loop = asyncio.get_running_loop()
            with pytest.raises(Rejected, match="timeout must be a finite number .*nan"):
                await loop.run_in_executor(
                    None,
                    svc.handle_control,
                    "add_learner",
                    {"node": "m9", "address": "127.0.0.9:4606", "timeout": math.nan},
                )
            await sc.cluster.settled()
            assert "m9" not in leader.node.membership.members
            assert leader.node.log.last_index == last + 1  # the marker only: no add_learner

    run(main())


@pytest.mark.parametrize("timeout", ("nan", "inf", "abc", math.nan, None))
def test_the_runners_refuse_a_timeout_that_is_no_finite_number_before_asking(timeout, monkeypatch):
    sent = []

    class Client:
        def __init__(self, opts):
            pass

        def call(self, op, args, timeout):
            sent.append(op)
            return {}

    monkeypatch.setattr(runner._control, "ControlClient", Client)
    monkeypatch.setattr(runner, "__opts__", {}, raising=False)
    out = runner.add("m9", "127.0.0.9:4606", timeout=timeout)
    assert out["result"] is False and out["retcode"] == 1
    assert out["error"].startswith("raft.add: timeout must be a number of seconds above 0")
    assert runner.status(timeout="30") == {} and sent == ["status"]  # text that is a number
