"""``raft.members`` as the engine service answers it (``RaftService.members``), read from the
runtime's view: voters, the committed membership, and on the leader each follower's match
index, lag and last contact on the service's clock; on a follower, a note to ask the leader."""

from __future__ import annotations

import asyncio

from saltext_raft.runtime import DictStateMachine
from tests.unit.master.services import ServiceCluster

IDS = ("m1", "m2", "m3")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_members_on_the_leader_shows_replication_and_contact_and_a_follower_defers_to_it(
    tmp_path,
):
    async def main():
        async with ServiceCluster(tmp_path) as sc:
            leader = await sc.cluster.leader()
            await leader.propose(DictStateMachine.set_command(b"k", b"v"))
            last = leader.node.last_index
            svc = sc.services[leader.id]
            await sc.until(
                "the leader saw every follower reach its last entry",
                lambda: all(
                    m["match_index"] == last
                    for m in (svc.update_readiness() or svc.members())["members"].values()
                ),
            )
            sc.clock.advance(2.5)
            out = svc.members()
            assert out["leader"] == leader.id and out["answered_by"] == leader.id
            assert out["voters"] == list(IDS) and out["learners"] == []
            assert out["committed"] is True and "note" not in out
            assert out["commit_index"] == leader.node.commit_index
            assert out["term"] == leader.node.term
            for nid in IDS:
                entry = out["members"][nid]
                assert entry["role"] == "voter" and entry["lag"] == 0
                assert entry["address"] == f"mem://{nid}"
                if nid == leader.id:
                    assert entry["last_contact"] == 0.0
                else:  # seen at the last readiness pass, 2.5 s ago on the service's clock
                    assert entry["last_contact"] == 2.5
            follower = next(n for n in IDS if n != leader.id)
            theirs = sc.services[follower].members()
            assert theirs["answered_by"] == follower and theirs["leader"] == leader.id
            assert "run this on " + leader.id in theirs["note"]
            others = [n for n in IDS if n != follower]
            assert all(theirs["members"][n]["match_index"] is None for n in others)

    run(main())
