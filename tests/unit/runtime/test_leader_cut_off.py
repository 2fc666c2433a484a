"""A leader cut off from the other masters: its gate closes after ``gate_grace``, reopens on heal.

Three engine services (``RaftService``, as on three masters) over the in-memory network, with
a manual clock for the grace period. Whoever is elected is cut off: the behaviour operators
rely on is that the master on the losing side of a partition stops serving minions, and that
hinges on the leader noticing it lost its quorum (check-quorum, thesis §6.2) and stepping
down; a leader that kept believing in itself would keep its gate open forever.
"""

from __future__ import annotations

import asyncio

from saltext_raft.core import Role
from tests.unit.master.services import ServiceCluster

GRACE = 5.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_cut_off_leader_steps_down_and_its_gate_closes_after_the_grace_then_reopens(tmp_path):
    async def main():
        async with ServiceCluster(tmp_path, gate_grace=GRACE) as sc:
            c = sc.cluster
            old = (await c.leader()).id
            others = [nid for nid in sc.services if nid != old]
            await sc.until("every gate open", lambda: all(sc.gate_open(nid) for nid in sc.services))
            for nid in others:
                c.net.cut(old, nid)
            await sc.until(
                f"the cut-off leader {old} to step down (check-quorum)",
                lambda: c.nodes[old].node.role is not Role.LEADER,
            )
            await sc.until(
                "a new leader on the majority side",
                lambda: any(c.nodes[n].node.role is Role.LEADER for n in others),
            )
            new = next(n for n in others if c.nodes[n].node.role is Role.LEADER)
            svc = sc.services[old]
            assert c.nodes[old].node.leader == ""

            # Within the grace period the gate stays open: a leader election elsewhere must not
            # bounce every master's minions.
            sc.clock.advance(GRACE - 0.5)
            svc.update_readiness()
            assert svc.ready and "grace" in svc.reason, svc.reason
            assert sc.gate_open(old)
            assert not sc.events(old, "gate/closed")

            sc.clock.advance(1.0)
            svc.update_readiness()
            assert not svc.ready and svc.reason == f"no leader for more than {GRACE:g}s"
            reader = sc.gate_reader(old)
            assert not reader.check() and reader.reason == svc.reason
            assert [e["reason"] for e in sc.events(old, "gate/closed")] == [svc.reason]
            # The majority side kept serving throughout.
            for nid in others:
                sc.services[nid].update_readiness()
                assert sc.gate_open(nid), nid
                assert not sc.events(nid, "gate/closed"), nid

            c.net.heal()
            await sc.until(f"{old}'s gate to reopen after the heal", lambda: sc.gate_open(old))
            assert c.nodes[old].node.role is Role.FOLLOWER and c.nodes[old].node.leader == new
            reader = sc.gate_reader(old)
            assert reader.check() and reader.state["leader"] == new
            opened = [tag for tag in sc.buses[old].tags() if tag.endswith(("/open", "/closed"))]
            assert opened[-2:] == ["saltext/raft/gate/closed", "saltext/raft/gate/open"], opened

    run(main())
