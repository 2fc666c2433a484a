"""The engine service's wiring, fast: events, readiness and the readiness file.

Every node of an in-memory cluster runs in a :class:`RaftService`, as on a master, with its
event port recorded, a manual clock for the leader-loss grace, and its readiness file read the
way a request worker reads it (``gate.Gate().for_opts(opts).reader``). The decision function
itself has its own tests (test_service.py); these check that the service feeds it what the
runtime knows (leader seen, committed membership) and tells the outside world: the
``saltext/raft/*`` events reactors listen for and the readiness file the gate reads.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from saltext_raft.master import gate
from saltext_raft.master import health
from saltext_raft.master import readiness
from saltext_raft.master.config import from_opts
from saltext_raft.master.readiness import ReadinessReader
from saltext_raft.master.readiness import ReadinessWriter
from saltext_raft.master.service import EVENT_PREFIX
from saltext_raft.master.service import RaftService
from tests.unit.master.services import ServiceCluster

IDS = ("m1", "m2", "m3")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def all_open(sc: ServiceCluster, ids=IDS):
    await sc.until(f"the gates of {list(ids)} open", lambda: all(sc.gate_open(n) for n in ids))


def test_bootstrap_fires_started_membership_leader_and_gate_open_on_every_master(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path) as sc:
            leader = await sc.cluster.leader()
            await all_open(sc)
            for nid in IDS:
                bus = sc.buses[nid]
                assert bus.tags()[0] == EVENT_PREFIX + "started", bus.tags()
                assert sc.events(nid, "started") == [
                    {"founding": True, "node_id": nid, "cluster_id": "saltext-raft"}
                ]
                boot = sc.events(nid, "membership")[0]
                assert boot["op"] == "bootstrap" and boot["membership"]["voters"] == list(IDS)
                assert {(e["leader"], e["term"]) for e in sc.events(nid, "leader")} == {
                    (leader.id, leader.node.term)
                }
                assert sc.events(nid, "gate/open") == [
                    {"reason": "ready", "node_id": nid, "cluster_id": "saltext-raft"}
                ]
                assert not sc.events(nid, "gate/closed")
                # The readiness file carries what the runtime knows, for the gate and salt-call.
                reader = sc.gate_reader(nid)
                assert reader.check()
                state = reader.state
                assert state["leader"] == leader.id and state["voters"] == list(IDS)
                assert state["role"] == ("leader" if nid == leader.id else "follower")
                assert state["node_id"] == nid and state["gate"] is True

    run(main())


def test_a_master_that_joins_is_gated_until_promoted_then_removal_closes_its_gate(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path, extra=("m4",)) as sc:
            leader = await sc.cluster.leader()
            await all_open(sc)
            svc = await sc.start("m4", join=True)  # m4 is in nobody's peers: it asks to join
            await all_open(sc, ("m4",))
            assert sc.events("m4", "started")[0]["founding"] is False
            for nid in IDS:
                ops = [(e["op"], e["node"]) for e in sc.events(nid, "membership")]
                assert ops == [("bootstrap", ""), ("add_learner", "m4"), ("promote", "m4")], ops
            # It opened once, and only once a committed voter: never while a learner.
            seen = [(t, d.get("op")) for t, d in sc.buses["m4"].events]
            assert seen.count((EVENT_PREFIX + "gate/open", None)) == 1, seen
            promoted = seen.index((EVENT_PREFIX + "membership", "promote"))
            assert seen.index((EVENT_PREFIX + "gate/open", None)) > promoted, seen
            assert "m4" in sc.events("m4", "membership")[-1]["membership"]["voters"]

            await leader.remove("m4", timeout=5)
            for nid in IDS:
                await sc.until(
                    f"{nid} to announce m4's removal",
                    lambda n=nid: (
                        ("remove", "m4")
                        in [(e["op"], e["node"]) for e in sc.events(n, "membership")]
                    ),
                )
            # The removed master hears of its removal, or loses its leader (the leader stops
            # talking to it): then, past the grace period, its gate closes either way.
            m4 = sc.cluster.nodes["m4"].node
            await sc.until(
                "m4 to learn its removal or lose its leader",
                lambda: "m4" not in m4.membership.members or not m4.leader,
            )
            sc.clock.advance(sc.engine_options["gate_grace"] + 1)
            await sc.until("m4's gate to close", lambda: not sc.gate_open("m4"))
            closed = sc.events("m4", "gate/closed")
            assert len(closed) == 1 and closed[0]["reason"] == svc.reason, closed
            assert "not a member" in svc.reason or "no leader for more than" in svc.reason
            # The others are not affected.
            for nid in IDS:
                sc.services[nid].update_readiness()
                assert sc.gate_open(nid) and not sc.events(nid, "gate/closed"), nid

    run(main())


def test_events_false_fires_no_event_at_all(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path, node_options={"m1": {"events": False}}) as sc:
            await sc.cluster.leader()
            await all_open(sc)
            # m1 lived through everything the others announced: start, election, gate open.
            for nid in ("m2", "m3"):
                assert {"started", "leader", "membership", "gate/open"} <= {
                    tag.removeprefix(EVENT_PREFIX) for tag in sc.buses[nid].tags()
                }
            await sc.stop("m1")
            assert sc.buses["m1"].events == []

    run(main())


def test_readiness_follows_the_leader_seen_on_the_injected_clock(tmp_path):
    """Last leader seen: the grace runs from the last evaluation that saw a leader, on the
    service's clock, not from when the leader was lost."""

    async def main():
        async with ServiceCluster(tmp_path, gate_grace=5.0) as sc:
            leader = await sc.cluster.leader()
            await all_open(sc)
            follower = next(n for n in IDS if n != leader.id)
            svc = sc.services[follower]
            sc.clock.advance(100.0)  # long after the last look: the leader is still there
            svc.update_readiness()
            assert svc.ready and svc.reason == "ready"
            for nid in IDS:
                if nid != follower:
                    sc.cluster.net.cut(follower, nid)
            await sc.until(
                f"{follower} to lose its leader",
                lambda: not sc.cluster.nodes[follower].node.leader,
            )
            svc.update_readiness()
            assert svc.ready and "grace" in svc.reason, svc.reason
            sc.clock.advance(5.5)
            svc.update_readiness()
            assert not svc.ready and svc.reason == "no leader for more than 5s"

    run(main())


def test_a_stopped_engine_closes_its_gate_at_once_and_a_restart_reopens_it(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path) as sc:
            await sc.cluster.leader()
            await all_open(sc)
            await sc.stop("m3")
            reader = sc.gate_reader("m3")
            assert not reader.check() and reader.reason == "engine stopped"
            await sc.start("m3")  # same disk: it restarts as the member it was
            await all_open(sc, ("m3",))
            assert len(sc.events("m3", "started")) == 1  # a new bus for the new process

    run(main())


def test_the_stale_rule_has_one_home_and_every_reader_applies_it(tmp_path):
    assert readiness.stale_after(1.0) == 4.0
    assert readiness.stale_after(2.0) == 7.0
    opts = ServiceCluster(tmp_path).master_opts("m1", readiness_interval=2.0)
    assert gate.settings_from_opts(opts).stale_after == 7.0  # the request gate
    cfg = from_opts(opts, opts["engines"][0]["raft"])
    assert cfg.readiness_stale_after == 7.0  # the engine's config
    os.makedirs(os.path.dirname(cfg.readiness_path))
    beat = time.monotonic()
    writer = ReadinessWriter(cfg.readiness_path, cfg.readiness_interval, clock=lambda: beat)
    writer.publish({"ready": True, "reason": "ready", "node_id": "m1"})
    assert health.status(opts)["ready"] is True  # salt-call raft.is_ready
    # A dead engine stops refreshing its heartbeat: as its age crosses the rule, the gate closes.
    for age, want in ((6.9, True), (7.1, False)):
        reader = ReadinessReader(cfg.readiness_path, 7.0, cache_for=0, clock=lambda a=age: beat + a)
        assert reader.check() is want, (age, reader.reason)
    assert "not running" in reader.reason
    # the same file with a heartbeat 7.1 s old, as raft.is_ready sees it
    stale = ReadinessWriter(cfg.readiness_path, cfg.readiness_interval, clock=lambda: beat - 7.1)
    stale.publish({"ready": True, "reason": "ready", "node_id": "m1"})
    assert health.status(opts)["ready"] is False and health.status(opts)["fresh"] is False


def test_the_runners_operations_reach_the_runtime_through_the_engine(tmp_path):
    """Each op of ``control.OPS`` is dispatched to its method; one naming a master needs one."""

    async def main():
        async with ServiceCluster(tmp_path) as sc:
            leader = await sc.cluster.leader()
            svc = sc.services[leader.id]
            assert (await svc.operations.run("ping", {}, 5))["node_id"] == leader.id
            assert (await svc.operations.run("leader", {}, 5))["leader"] == leader.id
            assert (await svc.operations.run("members", {}, 5))["voters"] == list(IDS)
            with pytest.raises(ValueError, match="which master"):
                await svc.operations.run("demote", {}, 5)
            with pytest.raises(ValueError, match="unknown operation"):
                await svc.operations.run("rm -rf", {}, 5)
            with pytest.raises(ValueError, match="address="):
                await svc.operations.run("add_learner", {"node": "m9"}, 5)

    run(main())


@pytest.mark.parametrize("option, inline", [({}, True), ({"follower_inline_saves": False}, False)])
def test_the_inline_saves_option_reaches_the_runtime_the_engine_builds(tmp_path, option, inline):
    """``follower_inline_saves`` (on unless the engine options say false) is what the
    runtime the engine builds for a real master is configured with."""
    sc = ServiceCluster(tmp_path)
    opts = sc.master_opts("m1", **option)
    cfg = from_opts(opts, opts["engines"][0]["raft"])
    os.makedirs(cfg.state_dir, mode=0o700)  # the engine creates it before building the runtime
    rt = RaftService(opts, cfg).build_runtime()
    assert rt.config.follower_inline_saves is inline
