"""Relayed writes through real Raft (``replicated.relay``): three in-process masters, the
``raft`` driver through Salt's loader, workers on the followers."""

from __future__ import annotations

import threading

import pytest

from saltext_raft.core import MsgType
from saltext_raft.replicated import driver as cachedriver
from saltext_raft.waiting import wait_until
from tests.functional.cache.inprocess import started_cluster
from tests.functional.cache.test_driver import LAYOUTS
from tests.functional.cache.test_driver import salt_opts

WRITERS = 4
WRITES = 25


@pytest.mark.parametrize("layout", LAYOUTS)
def test_followers_writes_join_the_leaders_entries_and_each_reads_its_own_write(tmp_path, layout):
    with started_cluster(str(tmp_path), ("m1", "m2", "m3"), {"raft_cache_backend": layout}) as c:
        leader = c.leader()
        followers = [nid for nid in c.ids if nid != leader]
        errors, stale = [], []
        before = sum(svc.counters["writes"] for svc in c.services.values())

        def writer(nid, w):
            # The driver itself, with this master's opts: through Salt's loader, threads that
            # use Cache objects of different masters in one process can see each other's
            # __opts__ (one master per process in production), and read another's copy.
            opts = salt_opts(c.opts(nid))
            try:
                for i in range(WRITES):
                    key = f"{nid}-{w}-{i}"
                    cachedriver.store(opts, "relay", key, {"n": i})
                    got = cachedriver.fetch(opts, "relay", key)  # where the write was taken
                    if got != {"n": i}:
                        stale.append((key, got))
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(repr(exc))

        threads = [
            threading.Thread(target=writer, args=(nid, w))
            for nid in followers
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "writers still running after 60s"
        assert errors == [] and stale == []
        total = len(followers) * WRITERS * WRITES
        # each write counted once, on the master that received it (not again by the leader)
        assert sum(svc.counters["writes"] for svc in c.services.values()) - before == total
        served = c.services[leader].counters
        assert served["relays_served"] > 0
        for nid in followers:
            counters = c.services[nid].counters
            assert counters["relayed"] > 0 and counters["entries"] == 0, counters
        # every master has every write
        for nid in c.ids:
            wait_until(
                lambda nid=nid: len(cachedriver.list_(salt_opts(c.opts(nid)), "relay")) == total,
                10,
                f"{nid} showing all {total} writes",
                0.02,
            )
        assert served["entries"] < total  # writes of several workers shared entries


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_relay_whose_answer_is_lost_is_proposed_again_and_applied_once(tmp_path, layout):
    """The leader commits the relayed ``add`` but every answer it sends is lost: the follower
    proposes the same write itself after half its time. The add is answered True (its first
    apply's result: a second apply would say False) and applied once on every master."""
    with started_cluster(str(tmp_path), ("m1", "m2", "m3"), {"raft_cache_backend": layout}) as c:
        leader = c.leader()
        follower = next(nid for nid in c.ids if nid != leader)
        applied_before = {nid: s.state_machine.kv.applied_commands for nid, s in c.services.items()}
        c.net.filter = lambda m: not (m.type is MsgType.APP and m.frm == leader)
        try:
            opts = salt_opts(c.opts(follower))
            assert cachedriver.add(opts, "once", "k", "first") is True
        finally:
            c.net.filter = None
        counters = c.services[follower].counters
        assert counters["relayed"] == 1 and counters["relay_fallbacks"] == 1, counters
        assert c.services[leader].counters["relays_served"] == 1
        for nid, svc in c.services.items():
            wait_until(
                lambda svc=svc, nid=nid: (
                    svc.state_machine.kv.applied_commands == applied_before[nid] + 1
                ),
                10,
                f"{nid} applying the add",
                0.02,
            )
            assert svc.state_machine.kv.fetch("once", "k") is not None
        # and nothing more arrives later: the second copy was not applied
        c.run(_settle(c))
        for nid, svc in c.services.items():
            assert svc.state_machine.kv.applied_commands == applied_before[nid] + 1


async def _settle(c) -> None:
    """Until every master applied everything the leader committed."""
    leader = c.runtimes[c.leader()]
    for rt in c.runtimes.values():
        await rt.wait_applied(leader.node.commit_index, 5)


@pytest.mark.parametrize("forwarded", [True, False])
def test_a_relay_taken_by_a_leader_that_loses_its_leadership_applies_once(tmp_path, forwarded):
    """The leader takes a follower's relayed ``add`` and proposes it, but none of its appends
    or heartbeats reach anyone: the others elect a new leader. Either the old leader forwards
    its proposal to the new one once it steps down (``forwarded``: the relay is answered), or
    that is lost too: the follower gets no answer in half its time and proposes the add
    itself, and the old leader's copy of the entry is replaced once it is heard again. Both
    ways the add is answered True and applied once on every master, and the next write of the
    same key is not undone by anything arriving late."""
    with started_cluster(str(tmp_path), ("m1", "m2", "m3"), {"raft_cache_backend": "sqlite"}) as c:
        old = c.leader()
        follower = next(nid for nid in c.ids if nid != old)
        applied_before = {nid: s.state_machine.kv.applied_commands for nid, s in c.services.items()}
        cut = {MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT}
        if not forwarded:
            cut.add(MsgType.PROPOSE)
        c.net.filter = lambda m: not (m.frm == old and m.type in cut)
        try:
            opts = salt_opts(c.opts(follower))
            assert cachedriver.add(opts, "moved", "k", "first") is True
        finally:
            c.net.filter = None
        assert c.services[old].counters["relays_served"] == 1  # the old leader did take it
        assert c.services[follower].counters["relay_fallbacks"] == (0 if forwarded else 1)
        cachedriver.store(opts, "moved", "k", "second")
        c.run(_settle(c))
        for nid, svc in c.services.items():
            assert svc.state_machine.kv.applied_commands == applied_before[nid] + 2, nid
        wait_until(
            lambda: all(
                cachedriver.fetch(salt_opts(c.opts(nid)), "moved", "k") == "second" for nid in c.ids
            ),
            10,
            "every master showing the second write",
            0.02,
        )


def test_a_relayed_write_answered_while_the_follower_lags_waits_for_its_snapshot(tmp_path):
    """The leader commits and answers a follower's relayed store, but the follower gets none of
    the leader's appends; the leader then compacts its log, so the follower catches up from a
    snapshot instead of the entry. The worker is answered only once the follower's own copy
    shows its write (it reads it back there at once)."""
    layout = {"raft_cache_backend": "sqlite"}
    with started_cluster(str(tmp_path), ("m1", "m2", "m3"), layout, {"snapshot_keep": 0}) as c:
        leader = c.leader()
        follower = next(nid for nid in c.ids if nid != leader)
        c.net.filter = lambda m: not (m.to == follower and m.type is MsgType.APPEND)
        opts = salt_opts(c.opts(follower))
        restored = c.runtimes[follower].counters["snapshots_restored"]
        done = []

        def write():  # and read back on the same master as soon as the write is answered
            done.append(cachedriver.store(opts, "lag", "k", "v"))
            done.append(cachedriver.fetch(opts, "lag", "k"))

        writer = threading.Thread(target=write)
        try:
            writer.start()
            wait_until(
                lambda: c.services[leader].state_machine.kv.fetch("lag", "k") is not None,
                10,
                "the leader applying the relayed store",
                0.01,
            )
            assert not done  # the follower has not applied it: its worker waits
            assert c.services[follower].state_machine.kv.fetch("lag", "k") is None
            c.run(c.runtimes[leader].take_snapshot())
        finally:
            c.net.filter = None
        writer.join(10)
        assert done == [True, "v"]
        assert c.services[leader].counters["relays_served"] == 1
        assert c.services[follower].counters["relay_fallbacks"] == 0
        assert c.runtimes[follower].counters["snapshots_restored"] == restored + 1
