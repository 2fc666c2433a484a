"""Attacks on forwarded proposals and backpressure (issue 17, parts 3 and 5).

Lives here: regression tests found by trying to break the re-send of forwarded proposals and
the ``max_pending_proposals`` bound on the in-memory cluster. Must not live here: the tests of
the intended behaviour (test_forwarding.py).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from saltext_raft.core import MsgType
from saltext_raft.runtime import CommitTimeout
from saltext_raft.runtime import NoLeader
from saltext_raft.runtime import RaftRuntimeError

from .helpers import LocalCluster
from .test_forwarding import RecordingMachine


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_proposals_refused_without_a_leader_do_not_pile_up_in_memory():
    """A node in a minority partition keeps its clients' proposals until a leader is known or
    they time out. Before, a timed-out proposal was answered but stayed in the queue (with its
    data) for as long as no leader was known: a client retrying every timeout grew the queue
    without bound, past ``max_pending_proposals``."""

    async def main():
        limit = 5
        async with LocalCluster(max_pending_proposals=limit, request_timeout=0.05) as c:
            lone = c.nodes["n1"]
            await c.leader()
            for other in ("n2", "n3"):
                await c.stop(other)
            await c.until("no leader known", lambda: lone.node.leader == "", timeout=5.0)
            for _ in range(6):  # bounded rounds of a client retrying after each refusal
                futs = [lone.submit(b"x" * 1000) for _ in range(limit)]
                for fut in futs:
                    with pytest.raises(NoLeader):
                        await fut
                runtime = lone.status()["runtime"]
                assert runtime["waiting_proposals"] == 0
                assert runtime["pending_proposals"] <= limit, runtime

    run(main())


def test_proposals_lost_on_the_way_to_a_live_leader_do_not_pile_up_in_memory():
    """A follower remembers each proposal it forwarded (with its data) until it sees it applied
    or sees a later term applied, so that it can re-send it. One-way partition: the leader
    reaches the follower (it stays a follower of that leader) but nothing of the follower's
    reaches the leader, and nobody else writes, so the follower applies nothing. Before, every
    timed-out proposal stayed remembered: a client retrying every timeout grew that record
    without bound, past ``max_pending_proposals``."""

    async def main():
        limit = 5
        async with LocalCluster(max_pending_proposals=limit, request_timeout=0.05) as c:
            leader = await c.leader()
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            c.net.cut(follower.id, leader.id, both=False)
            for _ in range(6):  # bounded rounds of a client retrying after each timeout
                futs = [follower.submit(b"x" * 1000) for _ in range(limit)]
                for fut in futs:
                    with pytest.raises(CommitTimeout):
                        await fut
                assert follower.node.leader == leader.id  # still forwarding to a live leader
                runtime = follower.status()["runtime"]
                assert runtime["waiting_proposals"] == 0
                assert runtime["sent_proposals"] <= 2 * limit, runtime

    run(main())


class _Chaos:
    """A network filter that delays (reorders) and duplicates messages, never a proposal: the
    real transport drops a replayed frame, which is what keeps a proposal from being appended
    twice in one term. Delayed copies are sent again through the sender's own transport."""

    def __init__(self, c: LocalCluster, rng: random.Random):
        self.c, self.rng = c, rng
        self.released: set[int] = set()
        self.on = True

    def __call__(self, m) -> bool:
        if id(m) in self.released:
            self.released.discard(id(m))
            return True
        if not self.on:
            return True
        loop = asyncio.get_running_loop()
        roll = self.rng.random()
        if roll < 0.25:  # delayed: arrives after later messages
            self._later(loop, m)
            return False
        if roll < 0.35 and m.type is not MsgType.PROPOSE:  # duplicated
            self._later(loop, m)
        return True

    def _later(self, loop, m) -> None:
        def release():
            rt = self.c.nodes.get(m.frm)
            if rt is not None and rt.running:
                self.released.add(id(m))
                rt.transport.send(m)

        # A proposal may arrive long after it was sent: at a node that leads again, in a
        # later term, after its proposer re-sent it elsewhere.
        late = 0.8 if m.type is MsgType.PROPOSE else 0.03
        loop.call_later(self.rng.uniform(0.0, late), release)


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_writes_through_every_node_under_leader_loss_delay_and_duplication_apply_at_most_once(
    seed,
):
    """Five nodes, a sequential writer on each, while the network delays, reorders and
    duplicates messages and the leader is repeatedly cut off: every write is applied at most
    once on every node, every node applies the same sequence, an acknowledged write is applied
    and a write refused definitely is applied nowhere. With the leader's term check on
    forwarded proposals removed (a planted bug), 6 of 8 seeds applied a write twice."""

    async def main():
        ids = ("n1", "n2", "n3", "n4", "n5")
        rng = random.Random(seed)
        async with LocalCluster(ids=ids, sm_factory=RecordingMachine, request_timeout=1.0) as c:
            await c.leader()
            chaos = _Chaos(c, rng)
            c.net.filter = chaos
            outcomes: dict[bytes, str] = {}
            stop = asyncio.Event()

            async def writer(nid: str):
                for i in range(200):  # bounded in count, and stopped after the faults
                    if stop.is_set():
                        return
                    data = f"{nid}-{i}".encode()
                    try:
                        await c.nodes[nid].propose(data)
                        outcomes[data] = "ok"
                    except RaftRuntimeError as exc:
                        outcomes[data] = "definite" if exc.definite else exc.code
                        await asyncio.sleep(0.01)

            tasks = [asyncio.ensure_future(writer(nid)) for nid in ids]
            for _ in range(10):  # leader losses
                await asyncio.sleep(rng.uniform(0.05, 0.15))
                leaders = c.leaders()
                if leaders:
                    for other in ids:
                        if other != leaders[0].id:
                            c.net.cut(leaders[0].id, other)
                await asyncio.sleep(rng.uniform(0.1, 0.2))
                c.net.heal()
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            chaos.on = False
            c.net.heal()
            await c.leader()
            await c.nodes["n1"].propose(b"last")  # every node catches up to one final write
            await c.until(
                "every node applied the final write",
                lambda: all(b"last" in rt.sm.payloads for rt in c.nodes.values()),
                timeout=10.0,
            )
            sequences = {nid: rt.sm.payloads for nid, rt in c.nodes.items()}
            reference = sequences["n1"]
            for nid, seq in sequences.items():
                assert seq == reference, nid
            assert len(set(reference)) == len(reference), "a write applied twice"
            applied = set(reference)
            assert {d for d, o in outcomes.items() if o == "ok"} <= applied
            assert not {d for d, o in outcomes.items() if o == "definite"} & applied
            assert sum(1 for o in outcomes.values() if o == "ok") > 50  # the test did work
            c.net.filter = None

    run(main())


def test_a_forwarded_proposal_overtaken_by_a_snapshot_is_answered_at_once_and_applied_once():
    """The proposer is cut off right after its leader appended its proposal; the others commit
    it and much more, then snapshot and compact past it. On healing the proposer installs the
    snapshot: it must answer its caller at once (outcome unknown), not re-send the proposal
    (that could apply it twice) and not leave it waiting for its timeout."""

    async def main():
        async with LocalCluster(
            sm_factory=RecordingMachine,
            request_timeout=20.0,
            snapshot_interval=10,
            snapshot_keep=0,
        ) as c:
            leader = await c.leader()
            proposer = next(rt for rt in c.nodes.values() if rt is not leader)
            before = leader.node.last_index
            c.net.filter = lambda m: not (m.frm == leader.id and m.to == proposer.id)
            fut = asyncio.ensure_future(proposer.propose(b"in-the-snapshot"))
            await c.until("the leader appended it", lambda: leader.node.last_index > before)
            for other in c.nodes:
                if other != proposer.id:
                    c.net.cut(proposer.id, other)
            c.net.filter = None
            for i in range(30):
                await leader.propose(b"more-%d" % i)
            await c.until(
                "the leader compacted past the proposal",
                lambda: leader.node.snapshot_meta.index > before + 1,
            )
            c.net.heal()
            await c.until("the proposal answered", fut.done, timeout=5.0)
            with pytest.raises(CommitTimeout, match="snapshot"):
                fut.result()
            await leader.propose(b"last")
            await c.until(
                "the proposer caught up",
                lambda: proposer.node.applied_index >= leader.node.commit_index,
            )
            assert proposer.counters["proposals_resent"] == 0
            assert proposer.node.applied_index == leader.node.applied_index
            assert proposer.sm.count == leader.sm.count  # entries applied, snapshot included
            for rt in c.nodes.values():
                assert rt.sm.payloads.count(b"in-the-snapshot") <= 1, rt.id
            assert leader.sm.payloads.count(b"in-the-snapshot") == 1

    run(main())
