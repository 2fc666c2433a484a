"""InstallSnapshot transfer under faults (thesis §5.3 + Raft paper §7): a follower never applies
an entry the cluster did not commit, whatever happens to the chunks and to the leader's
snapshot while they are in flight.

The regression scenario is the bug found by the review of 579b614: the leader took a newer,
smaller snapshot while a transfer of the older one was in flight, counted a partial byte
acknowledgement of the old snapshot as complete (it compared the acknowledged byte count with
the size of its *current* snapshot), raised the follower's match to the old snapshot's index,
and the following heartbeats told the follower to commit its own uncommitted, divergent entries.

The randomized test drives chunk transfers with loss, duplication and reordering, takes newer
snapshots of shrinking and growing size mid-transfer, and checks after every step that every
node's applied entries are a prefix of what the cluster committed.
"""

from __future__ import annotations

import random

import pytest

from saltext_raft.core import Message
from saltext_raft.core import MsgType
from saltext_raft.core import RaftNode
from saltext_raft.core import Role

from .cluster import Cluster

#: Randomized cases: the issue asks for at least 1,000 with no divergence.
RANDOM_CASES = 1000


def _isolate(c: Cluster, nid: str, others) -> None:
    for o in others:
        c.dropped.add((nid, o))
        c.dropped.add((o, nid))


def _heal(c: Cluster, nid: str, others) -> None:
    for o in others:
        c.dropped.discard((nid, o))
        c.dropped.discard((o, nid))


#: Messages one settling round may deliver before the network counts as live-locked (a leader and
#: a follower sending each other the same rejected append forever, as 579b614 did once a partial
#: acknowledgement had set the follower's match beyond its log).
SETTLE_BUDGET = 20_000


def _settle(c: Cluster) -> None:
    """Deliver until the network is quiet, within ``SETTLE_BUDGET`` messages."""
    delivered = 0
    c.process()
    while c.net:
        delivered += c.deliver(limit=SETTLE_BUDGET - delivered)
        assert delivered < SETTLE_BUDGET, "the network never goes quiet: a message loop"
        c.process()


def _elect_among(c: Cluster, ids) -> RaftNode:
    """Tick until one of ``ids`` leads (bounded: 30 election timeouts of ticks)."""
    for _ in range(30 * 20):
        _settle(c)
        leaders = [n for n in c.leaders() if n.id in ids]
        if leaders:
            return leaders[0]
        c.tick()
    raise AssertionError(f"none of {ids} became leader")


def _normal_applied(c: Cluster, nid: str) -> list[bytes]:
    return [x for x in c.applied[nid] if isinstance(x, bytes)]


def test_partial_ack_of_an_older_snapshot_is_not_a_completed_transfer():
    c = Cluster(ids=("a", "b", "c", "d", "e"), snapshot_chunk_bytes=64)
    c.elect("a")
    # a (term 2) appends three entries that reach only e: e now holds uncommitted entries
    for x in ("b", "c", "d"):
        c.dropped.add(("a", x))
    for i in range(3):
        c.nodes["a"].propose(b"old%d" % i)
    _settle(c)
    old_last = c.nodes["e"].log.last_index
    assert c.nodes["e"].commit_index < old_last
    # a is gone, e is cut off; b, c and d elect one of them (term 3) and commit their own entries
    c.crash("a")
    _isolate(c, "e", ("b", "c", "d"))
    for x in ("b", "c", "d"):
        c.dropped.discard(("a", x))
    b = _elect_among(c, ("b", "c", "d"))
    for i in range(10):
        b.propose(b"new%d" % i)
    _settle(c)
    assert b.commit_index > old_last
    # a big snapshot: e needs it (b's log is compacted past e's divergent entries)
    first = b.create_snapshot(b.applied_index, b"S" * 1000)
    _heal(c, "e", ("b", "c", "d"))
    c.tick(b.id, 2)
    c.deliver(lambda m: m.type is not MsgType.SNAPSHOT)  # the probe rounds, until chunks wait
    chunks = [m for m in c.net if m.type is MsgType.SNAPSHOT and m.to == "e"]
    assert chunks and chunks[0].snapshot.meta == first.meta and chunks[0].snapshot.offset == 0
    # e gets the first chunk only; its partial acknowledgement (64 bytes) stays in the network
    c.deliver(lambda m: m is chunks[0])
    c.net = [m for m in c.net if m.type is not MsgType.SNAPSHOT]
    acks = [m for m in c.net if m.type is MsgType.SNAPSHOT_RESP]
    assert len(acks) == 1 and 0 < acks[0].index < 1000
    c.net.remove(acks[0])
    # meanwhile b commits more and takes a newer snapshot smaller than the acknowledged bytes
    b.propose(b"newer")
    c.process()
    c.deliver(lambda m: "e" not in (m.to, m.frm))
    second = b.create_snapshot(b.applied_index, b"s" * 10)
    assert second.meta.index > first.meta.index and len(second.data) < acks[0].index
    # the late partial ack of the first snapshot arrives; the chunks sent in reply are lost
    b.step(acks[0])
    c.process()
    c.net = [m for m in c.net if m.type is not MsgType.SNAPSHOT]
    # the next heartbeat reaches e first: its commit index is min(leader commit, e's match)
    c.tick(b.id)
    c.deliver(lambda m: m.type is MsgType.HEARTBEAT and m.to == "e")
    assert not c.divergences, c.divergences
    assert not any(x.startswith(b"old") for x in _normal_applied(c, "e"))
    assert b.progress["e"].match < first.meta.index, "a partial ack counted as installed"
    # the transfer then completes, and e applies only what the cluster committed
    for _ in range(20):
        c.tick(b.id)
        _settle(c)
    assert not c.divergences, c.divergences
    assert c.nodes["e"].commit_index >= second.meta.index
    b.propose(b"after")
    _settle(c)
    assert _normal_applied(c, "e")[-1] == b"after"


def test_a_late_final_ack_of_an_older_snapshot_still_completes_that_transfer():
    """A full acknowledgement of the snapshot being sent is a completed transfer even if the
    leader has taken a newer one since: the follower holds the older snapshot's index."""
    c = Cluster(snapshot_chunk_bytes=64)
    a = c.elect("a")
    c.crash("c")
    for i in range(5):
        a.propose(b"v%d" % i)
    _settle(c)
    first = a.create_snapshot(a.applied_index, b"S" * 100)
    c.restart("c")
    c.tick("a", 2)
    c.deliver(lambda m: m.type is not MsgType.SNAPSHOT_RESP or m.index < 100)
    final = [m for m in c.net if m.type is MsgType.SNAPSHOT_RESP and m.index >= 100]
    assert len(final) == 1
    c.net.remove(final[0])
    assert c.nodes["c"].snapshot.meta == first.meta  # c installed the first snapshot
    a.propose(b"more")
    c.process()
    c.deliver(lambda m: "c" not in (m.to, m.frm))
    a.create_snapshot(a.applied_index, b"s" * 10)
    a.step(final[0])
    assert a.progress["c"].match == first.meta.index
    c.tick("a", 2)
    _settle(c)
    a.propose(b"after")
    _settle(c)
    assert _normal_applied(c, "c")[-1] == b"after"
    assert not c.divergences, c.divergences


# --- randomized chunk transfers -------------------------------------------------------------
def _snapshot_data(rng: random.Random) -> bytes:
    """State that shrinks and grows: tiny (fits in one chunk, smaller than a partial ack of a
    bigger snapshot) or large (many chunks, several windows)."""
    return bytes(rng.randint(0, 48) if rng.random() < 0.5 else rng.randint(100, 1200))


def _run_random_case(seed: int) -> None:
    rng = random.Random(seed)
    c = Cluster(
        ids=("a", "b", "c", "d", "e"),
        seed=seed,
        snapshot_chunk_bytes=rng.choice((16, 32, 64)),
    )
    ids = sorted(c.nodes)
    leader = c.elect(rng.choice(ids))
    lagging = rng.choice([n for n in ids if n != leader.id])
    others = [n for n in ids if n not in (leader.id, lagging)]
    if rng.random() < 0.85:
        # the lagging node first takes uncommitted entries from a leader that then loses office
        for o in others:
            c.dropped.add((leader.id, o))
        for i in range(rng.randint(1, 4)):
            leader.propose(b"stale-%d-%d" % (seed, i))
        _settle(c)
        for o in others:
            c.dropped.discard((leader.id, o))
        _isolate(c, leader.id, [n for n in ids if n != leader.id])
        _isolate(c, lagging, [n for n in ids if n != lagging])
        old = leader.id
        leader = _elect_among(c, others)
        _heal(c, old, [o for o in ids if o not in (old, lagging)])  # the old leader rejoins
    else:
        _isolate(c, lagging, [n for n in ids if n != lagging])
    for i in range(rng.randint(3, 12)):
        leader.propose(b"v-%d-%d" % (seed, i))
    _settle(c)
    # a first snapshot of many chunks: the lagging node needs it (its log diverged or is empty)
    keep = rng.choice((0, 1, 3, 8))  # entries kept behind a snapshot for slow followers
    leader.create_snapshot(leader.applied_index, bytes(rng.randint(200, 1500)), keep=keep)
    _heal(c, lagging, [n for n in ids if n != lagging])
    # the transfer under loss, duplication and reordering, with newer snapshots of random size
    slow = rng.choice((0.0, 0.5, 0.8))
    late: list[tuple[int, Message]] = []  # (step at which it is delivered, message)
    for step in range(rng.randint(200, 500)):
        for due in [x for x in late if x[0] <= step]:
            late.remove(due)
            c.net.append(due[1])
        r = rng.random()
        if r < 0.1 and leader.role is Role.LEADER:
            leader.propose(b"w-%d-%d" % (seed, step))
        elif (
            r < 0.2
            and leader.role is Role.LEADER
            and leader.applied_index > (leader.snapshot_meta.index)
        ):
            leader.create_snapshot(leader.applied_index, _snapshot_data(rng), keep=keep)
        elif r < 0.25:
            c.tick(leader.id)
        elif c.net:
            # a random link; on it mostly in order, one in four from anywhere (reordering)
            links = sorted({(m.frm, m.to) for m in c.net})
            link = rng.choice(links)
            if lagging in link and rng.random() < slow:
                continue  # the lagging node's link is slow: its transfer spans snapshots
            queued = [k for k, m in enumerate(c.net) if (m.frm, m.to) == link]
            m = c.net.pop(rng.choice(queued) if rng.random() < 0.25 else queued[0])
            if rng.random() < 0.15:
                continue  # loss
            if rng.random() < 0.15:
                late.append((step + rng.randint(5, 60), m))  # late: overtaken by what follows
                continue
            if rng.random() < 0.15:
                c.net.insert(rng.randrange(len(c.net) + 1), m)  # duplication
            target = c.nodes.get(m.to)
            if target is None:
                continue
            if (
                m.type is MsgType.SNAPSHOT_RESP
                and rng.random() < 0.3
                and target.role is Role.LEADER
                and target.applied_index > target.snapshot_meta.index
            ):
                # the leader takes a newer snapshot while this acknowledgement was in flight
                target.create_snapshot(target.applied_index, _snapshot_data(rng), keep=keep)
            target.step(m)
        c.process()
        assert not c.divergences, f"seed {seed}: {c.divergences[0]}"
    # heal everything and let it settle: every node must catch up on the same entries
    c.dropped.clear()
    for _ in range(60):
        c.tick()
        _settle(c)
    assert not c.divergences, f"seed {seed}: {c.divergences[0]}"
    leaders = c.leaders()
    assert len(leaders) == 1, f"seed {seed}: leaders {[n.id for n in leaders]}"
    final = leaders[0]
    final.propose(b"final-%d" % seed)
    for _ in range(10):
        c.tick()
        _settle(c)
    assert not c.divergences, f"seed {seed}: {c.divergences[0]}"
    for nid, n in c.nodes.items():
        assert n.applied_index == final.applied_index, (
            f"seed {seed}: {nid} is stuck at {n.applied_index}, leader at {final.applied_index}"
        )


@pytest.mark.parametrize("block", range(10))
def test_random_snapshot_transfers_never_apply_an_uncommitted_entry(block):
    per_block = RANDOM_CASES // 10
    for seed in range(block * per_block, (block + 1) * per_block):
        _run_random_case(seed)
