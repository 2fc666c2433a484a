"""Relayed writes (``replicated.relay``): a follower's batch joins the leader's entry, and a
relay that fails in any way applies at most once."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from saltext_raft.kv import decode_entry
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import KVStateMachine
from saltext_raft.replicated import relay
from saltext_raft.replicated import service as cacheservice
from saltext_raft.replicated.mirror import Applied
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES
from saltext_raft.runtime.remote import RemoteNotLeader
from tests.unit.replicated.test_service import FakeRuntime
from tests.unit.replicated.test_service import settings
from tests.unit.replicated.test_service import store_req
from tests.unit.runtime.test_remote_serve import remote as remote_for_test

BOUND = 5.0


class FollowerRuntime(FakeRuntime):
    """A follower of leader ``L``: records relays (the test answers them) and proposals."""

    is_leader = False
    leader = "L"

    def __init__(self):
        super().__init__()
        self.asked: list[tuple[str, dict, float, asyncio.Future]] = []
        self.waited: list[int] = []

    async def ask(self, to, body, timeout):
        fut = asyncio.get_running_loop().create_future()
        self.asked.append((to, body, timeout, fut))
        return await fut

    async def wait_applied(self, index, timeout):
        self.waited.append(index)


def follower(tmp_path) -> tuple[CacheService, FollowerRuntime]:
    svc = CacheService(settings(tmp_path), clock=lambda: 1234)
    svc.start_writer(asyncio.get_running_loop())
    rt = svc.runtime = FollowerRuntime()
    return svc, rt


async def until(what, check):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {BOUND}s: {what}")
        await asyncio.sleep(0.001)


def test_a_followers_batch_goes_to_the_leader_and_is_answered_once_applied_here(tmp_path):
    async def main():
        svc, rt = follower(tmp_path)
        try:
            futs = [svc._store(rt, store_req(k, timeout=2.0)) for k in ("k1", "k2", "k3")]
            await until("the relay", lambda: rt.asked)
            to, body, timeout, answer = rt.asked[0]
            assert to == "L" and body["op"] == relay.RELAY_OP and not rt.proposals
            assert timeout == pytest.approx(2.0 * 0.5)  # half the batch's time, then ours
            assert [c[2] for c in body["cmds"]] == ["k1", "k2", "k3"]
            assert [(c[5], c[6]) for c in body["cmds"]] == [("k1", 1), ("k2", 1), ("k3", 1)]
            answer.set_result(relay.reply_body(9, [True, False, True]))
            got = [await asyncio.wait_for(f, BOUND) for f in futs]
            assert got == [True, False, True] and rt.waited == [9]
            assert svc.counters["relayed"] == 1 and svc.counters["relay_fallbacks"] == 0
        finally:
            svc.writer.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    "failure,again",
    [
        # an older leader: it does not know the request; the next batch goes straight to Raft
        (Rejected("unknown request 'cache.relay'"), False),
        # the leader stepped down after the follower chose it
        (RemoteNotLeader("M", "M leads now"), True),
        # no answer in half the time: the leader may have crashed, with or without the entry
        (CommitTimeout("no answer from L to cache.relay within 1s"), True),
        # an answer of the wrong shape (a bug or a skewed version)
        ("bad reply", True),
    ],
)
def test_a_relay_that_fails_is_proposed_here_with_the_same_client_and_seq(tmp_path, failure, again):
    async def main():
        svc, rt = follower(tmp_path)
        try:
            futs = [svc._store(rt, store_req(k, timeout=2.0, seq=7)) for k in ("k1", "k2")]
            await until("the relay", lambda: rt.asked)
            relayed = rt.asked[0][1]["cmds"]
            answer = rt.asked[0][3]
            if failure == "bad reply":
                answer.set_result({"index": 3, "results": [True]})  # 1 result for 2 writes
            else:
                answer.set_exception(failure)
            await until("the proposal here", lambda: rt.proposals)
            data, timeout, proposal = rt.proposals[0]
            _, cmds = decode_entry(data)
            assert [[c.op, c.bank, c.key, c.value, c.ts, c.client, c.seq] for c in cmds] == relayed
            assert 0 < timeout <= 2.0
            proposal.set_result(Applied([True, True], svc.writer.ticket, 4))
            assert [await asyncio.wait_for(f, BOUND) for f in futs] == [True, True]
            assert svc.counters["relay_fallbacks"] == 1
            # the next batch: relayed again, unless the leader does not know relays
            nxt = svc._store(rt, store_req("k3", seq=8))
            await until("the next batch", lambda: len(rt.asked) + len(rt.proposals) > 2)
            assert (len(rt.asked) == 2) is again and (len(rt.proposals) == 2) is not again
            nxt.cancel()
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_relay_committed_but_unanswered_and_proposed_again_applies_once(tmp_path):
    """The leader committed the relayed ADD, but its answer was lost: the follower proposes the
    same commands itself. The state machine, given both entries, applies the write once and
    answers the second with the first's result (a second apply would say False)."""

    async def main():
        svc, rt = follower(tmp_path)
        try:
            req = dict(store_req("k1", timeout=2.0, seq=5))
            fut = svc._add(rt, req)
            await until("the relay", lambda: rt.asked)
            relayed = rt.asked[0][1]["cmds"]
            rt.asked[0][3].set_exception(CommitTimeout("no answer"))
            await until("the proposal here", lambda: rt.proposals)
            kv = KVStateMachine()
            first = kv.apply_command(Command(*relayed[0]))  # the leader's entry
            _, cmds = decode_entry(rt.proposals[0][0])
            second = kv.apply_command(cmds[0])  # the follower's copy
            assert first is True and second is True
            assert kv.applied_commands == 1
            rt.proposals[0][2].set_result(Applied(second, svc.writer.ticket, 6))
            assert await asyncio.wait_for(fut, BOUND) is True
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_writes_without_a_client_id_are_never_relayed(tmp_path):
    """The engine's own writes carry no ``(client, seq)``: a relay falling back could apply
    them twice, so they go to Raft from here."""

    async def main():
        svc, rt = follower(tmp_path)
        try:
            svc.propose(STORE, "b", "k", b"v")
            svc._store(rt, dict(store_req("k2"), client=""))
            await until("the proposal", lambda: rt.proposals)
            assert not rt.asked and len(decode_entry(rt.proposals[0][0])[1]) == 2
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_leader_puts_a_relay_in_its_open_batch_and_answers_the_entry_index(tmp_path):
    async def main():
        svc = CacheService(settings(tmp_path), clock=lambda: 1234)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FakeRuntime()
        try:
            body = relay.request_body(
                [
                    Command(STORE, "b", "r1", b"x", 1200, "f:1", 3),
                    Command(ADD, "b", "r2", b"y", 1200, "f:2", 4),
                ]
            )
            served = asyncio.ensure_future(svc._serve_relay("F", body))
            await asyncio.sleep(0)  # the relay is queued; a worker's write in the same turn
            local = svc._store(rt, store_req("mine"))
            await until("one proposal", lambda: rt.proposals)
            await asyncio.sleep(0.01)
            assert len(rt.proposals) == 1
            _, cmds = decode_entry(rt.proposals[0][0])
            assert [(c.key, c.client, c.seq, c.ts) for c in cmds] == [
                ("r1", "f:1", 3, 1200),  # the follower's time and ids, as relayed
                ("r2", "f:2", 4, 1200),
                ("mine", "mine", 1, 1234),
            ]
            rt.proposals[0][2].set_result(Applied([True, False, True], svc.writer.ticket, 12))
            assert await asyncio.wait_for(local, BOUND) is True
            assert await asyncio.wait_for(served, BOUND) == {"index": 12, "results": [True, False]}
            assert svc.counters["relays_served"] == 1
        finally:
            svc.writer.stop()

    asyncio.run(main())


def cmd(**kw):
    fields = {"op": STORE, "bank": "b", "key": "k", "value": b"v", "ts": 1, "client": "c", "seq": 1}
    fields.update(kw)
    return list(fields.values())


@pytest.mark.parametrize(
    "cmds",
    [
        [cmd(key="a//b")],  # a name the copy would alias
        [cmd(bank="", key="saltext_raft_keys/keys/m")],  # a root key naming another bank
        [cmd(bank="../up")],  # out of the copy
        [cmd(client="")],  # no client id: could apply twice
        [cmd(op=99)],  # unknown command
        [cmd(op=True)],  # not an int
        [cmd(ts=True)],
        [cmd(seq=-1)],
        [cmd(seq=1.5)],  # a loose int() parse took these as 1, 1, 7, 0
        [cmd(seq=True)],
        [cmd(seq="7")],
        [cmd(seq=None)],  # a relayed command always carries its own
        [cmd(seq=2**64)],
        [cmd(value="text")],  # not bytes
        [cmd(), cmd(key=b"bytes")],  # one bad command refuses the relay, not just itself
        [cmd()[:6]],  # 6 fields
        [],
        [cmd()] * (relay.MAX_RELAY_COMMANDS + 1),
        [cmd(value=b"x" * relay.MAX_RELAY_BYTES)],
    ],
)
def test_a_relay_with_a_bad_command_is_refused_whole_and_queues_nothing(tmp_path, cmds):
    async def main():
        svc = CacheService(settings(tmp_path), clock=lambda: 1234)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FakeRuntime()
        try:
            with pytest.raises(Rejected):
                await svc._serve_relay("F", {"op": relay.RELAY_OP, "cmds": cmds})
            await asyncio.sleep(0.01)
            assert not rt.proposals and not svc._batch
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_follower_sends_a_relay_back_with_its_leader(tmp_path):
    async def main():
        svc, rt = follower(tmp_path)
        try:
            body = relay.request_body([Command(STORE, "b", "k", b"v", 1, "c", 1)])
            with pytest.raises(RemoteNotLeader) as exc:
                await svc._serve_relay("F", body)
            assert exc.value.leader == "L" and not svc._batch
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_follower_without_a_leader_proposes_and_gets_the_runtimes_answer(tmp_path):
    async def main():
        svc, rt = follower(tmp_path)
        rt.leader = ""
        rt.refuse = NoLeader("no leader known")
        try:
            with pytest.raises(NoLeader):
                await asyncio.wait_for(svc._store(rt, store_req("k")), BOUND)
            assert not rt.asked
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_relays_can_be_turned_off(tmp_path):
    async def main():
        svc = CacheService(dataclasses.replace(settings(tmp_path), relay=False), clock=lambda: 1)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FollowerRuntime()
        try:
            svc._store(rt, store_req("k"))
            await until("the proposal", lambda: rt.proposals)
            assert not rt.asked
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_leader_that_did_not_know_relays_is_asked_again_after_a_while(tmp_path, monkeypatch):
    """During a rolling upgrade the old leader is upgraded (or its service was still starting):
    the follower relays again once ``NO_RELAY_RETRY`` has passed."""
    monkeypatch.setattr(cacheservice, "NO_RELAY_RETRY", 0.05)

    async def main():
        svc, rt = follower(tmp_path)
        try:
            svc._store(rt, store_req("k1"))
            await until("the relay", lambda: rt.asked)
            rt.asked[0][3].set_exception(Rejected("unknown request 'cache.relay'"))
            await until("the proposal here", lambda: rt.proposals)
            svc._store(rt, store_req("k2"))
            await until("the second proposal", lambda: len(rt.proposals) == 2)
            assert len(rt.asked) == 1  # within the retry time: not asked
            await asyncio.sleep(0.06)
            svc._store(rt, store_req("k3"))
            await until("a relay again", lambda: len(rt.asked) == 2)
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_relays_timeout_does_not_shorten_the_leaders_own_writes(tmp_path):
    """Regression: a member's relay carried the deadline of the leader's whole batch (its
    ``min``), so a relay asking for 1 µs made the leader's own workers' writes in the same
    entry fail with CommitTimeout, batch after batch; and one asking for 3600 s kept the
    leader's entry and the serving task waiting an hour. A relayed write now waits on the
    leader as long as the leader's own ``raft_cache_timeout``."""

    async def main():
        svc = CacheService(settings(tmp_path), clock=lambda: 1234)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FakeRuntime()
        try:
            for hostile in (1e-6, 3600):
                rt.proposals.clear()
                cmds = [Command(STORE, "b", "r", b"x", 1, "f:1", 3)]
                body = dict(relay.request_body(cmds), timeout=hostile)  # an older follower's
                served = asyncio.ensure_future(svc._serve_relay("F", body))
                await asyncio.sleep(0)  # the relay is queued; a worker's write in the same turn
                local = svc._store(rt, store_req("mine", timeout=4.0))
                await until("one proposal", lambda: rt.proposals)
                _, timeout, proposal = rt.proposals[0]
                assert len(decode_entry(rt.proposals[0][0])[1]) == 2
                assert timeout == 4.0  # the worker's own, not the member's
                proposal.set_result(Applied([True, True], svc.writer.ticket, 12))
                assert await asyncio.wait_for(local, BOUND) is True
                await asyncio.wait_for(served, BOUND)
            # a batch of relays alone waits as long as the leader's own writes would
            body = dict(
                relay.request_body([Command(STORE, "b", "r", b"x", 1, "f:1", 4)]), timeout=3600
            )
            rt.proposals.clear()
            served = asyncio.ensure_future(svc._serve_relay("F", body))
            await until("one proposal", lambda: rt.proposals)
            assert rt.proposals[0][1] == svc.settings.timeout
            served.cancel()
        finally:
            svc.writer.stop()

    asyncio.run(main())


@pytest.mark.parametrize("timeout", ["absent", None, -1, "soon", True])
def test_a_relay_carries_no_deadline_and_the_leader_reads_none(timeout):
    """The leader gives relayed writes its own deadline, so a relay's ``timeout`` was checked
    and returned by ``commands_of`` only to be thrown away: a relay is its commands alone,
    and a field beside them (an older follower's timeout) is neither read nor refused."""
    cmds = [Command(STORE, "b", "k", b"v", 1, "c", 1)]
    body = relay.request_body(cmds)
    assert set(body) == {"op", "cmds"}
    if timeout != "absent":
        body["timeout"] = timeout
    assert relay.commands_of(body) == [[STORE, "b", "k", b"v", 1, "c", 1]]


def test_a_relay_taken_by_a_leader_that_stepped_down_is_answered_with_the_entry_index(tmp_path):
    """Regression: a leader that took a relay and stepped down before proposing its batch
    sends that batch to the new leader; it answered the first follower with index 0 (which
    the follower refuses, proposing the same writes again) instead of the entry's index."""

    async def main():
        svc = CacheService(settings(tmp_path), clock=lambda: 1234)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FollowerRuntime()
        rt.is_leader, rt.leader = True, ""
        try:
            body = relay.request_body([Command(STORE, "b", "r", b"x", 1, "f:1", 3)])
            served = asyncio.ensure_future(svc._serve_relay("F", body))
            await asyncio.sleep(0)  # queued in the open batch; then the leadership moves to M
            rt.is_leader, rt.leader = False, "M"
            await until("the relay to M", lambda: rt.asked)
            to, sent, _, answer = rt.asked[0]
            assert to == "M" and [c[5] for c in sent["cmds"]] == ["f:1"]
            answer.set_result(relay.reply_body(20, [True]))
            reply = await asyncio.wait_for(served, BOUND)
            assert relay.reply_of(reply, 1) == (20, [True]) and rt.waited == [20]
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_batch_whose_leader_is_gone_when_the_relay_starts_is_proposed_at_once(tmp_path):
    """Regression: the relay task read the leader again when it started (a loop turn after
    the batch chose to relay); a leader lost meanwhile made it ask nobody ("") and wait half
    the batch's time before proposing, and a node that had just become the leader asked
    itself."""

    async def main():
        svc, rt = follower(tmp_path)
        try:
            for now_leader, now_leading in (("", False), ("me", True)):
                rt.proposals.clear()
                rt.asked.clear()
                rt.leader, rt.is_leader = "L", False
                fut = svc._store(rt, store_req("k", timeout=2.0))
                svc._propose_batch()  # the batch chooses to relay to L (its task starts later)
                assert svc._relays
                rt.leader, rt.is_leader = now_leader, now_leading  # in the same loop turn
                await until("the proposal", lambda: rt.proposals or rt.asked)
                assert not rt.asked and len(rt.proposals) == 1
                rt.proposals[0][2].set_result(Applied(True, svc.writer.ticket, 3))
                assert await asyncio.wait_for(fut, BOUND) is True
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_relay_the_transport_dropped_is_proposed_here_at_once(tmp_path):
    """Regression: ``Remote.request`` ignored a send the transport dropped (its queue to the
    leader full, the leader down): the relay waited half the batch's time for an answer that
    could not come before the follower proposed the batch itself."""

    async def main():
        svc, rt = follower(tmp_path)
        sent = []
        dropping = remote_for_test(sent, queued=False)  # a real Remote; every send dropped

        async def ask(to, body, timeout):
            return await dropping.request(to, body, timeout)

        rt.ask = ask
        try:
            fut = svc._store(rt, store_req("k", timeout=30.0))  # half: 15 s, far past BOUND
            await until("the proposal here", lambda: rt.proposals)
            assert len(sent) == 1 and svc.counters["relay_fallbacks"] == 1
            data, timeout, proposal = rt.proposals[0]
            assert timeout > 25.0  # nearly all of the batch's time is left for it
            proposal.set_result(Applied(True, svc.writer.ticket, 3))
            assert await asyncio.wait_for(fut, BOUND) is True
            # a dropped send is not an older leader: the next batch is relayed again
            assert svc._no_relay == ("", 0.0)
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_relays_of_many_small_writes_never_make_an_entry_larger_than_the_runtime_takes(tmp_path):
    """Regression: a batch was closed by the bytes of its names and values alone, not the
    ~20-40 bytes msgpack adds around each command. One master's workers never wrote enough
    commands at once for that to matter, but relays let a member (buggy or hostile) put
    60 x 4,096 tiny writes into the leader's open batch in one turn: a 6.6 MB entry, which the
    runtime refuses (``max_entry_bytes``) together with the leader's own workers' writes."""

    async def main():
        svc = CacheService(settings(tmp_path), clock=lambda: 1234)
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = FakeRuntime()
        served = []
        try:
            for r in range(60):
                cmds = [
                    Command(STORE, "b", "k", b"", 1 << 40, f"c{r}", (1 << 40) + i)
                    for i in range(relay.MAX_RELAY_COMMANDS)
                ]
                body = relay.request_body(cmds)
                served.append(asyncio.ensure_future(svc._serve_relay("F", body)))
            local = svc._store(rt, store_req("mine"))
            await until("every relay queued", lambda: svc.counters["relays_served"] == 60)
            await until("the last batch proposed", lambda: not svc._batch)
            sizes = [len(data) for data, _, _ in rt.proposals]
            assert sum(len(decode_entry(d)[1]) for d, _, _ in rt.proposals) == 60 * 4096 + 1
            assert max(sizes) <= DEFAULT_MAX_ENTRY_BYTES, sizes
            local.cancel()
            for task in served:
                task.cancel()
        finally:
            svc.writer.stop()

    asyncio.run(main())


def test_a_relay_always_fits_the_open_batch_whole():
    """A relay never straddles two entries: an open batch holds less than ``MAX_BATCH_BYTES``
    when a relay arrives (it is proposed at once past that), and a relay adds at most
    ``MAX_RELAY_BYTES``, so the leader's entry-size cut (``ENTRY_VALUES_MAX``) never falls
    inside a relay (its writes then share one index, one fate, one answer). This holds for
    the default ``max_entry_bytes`` (the engine's); a runtime configured below about 2.3 MiB
    may cut a relay in two entries, which stays safe: its answer waits for both (the larger
    index), and a relay one of them failed is proposed again by its follower, applied at most
    once by ``(client, seq)``."""
    assert cacheservice.MAX_BATCH_BYTES + relay.MAX_RELAY_BYTES <= cacheservice.ENTRY_VALUES_MAX
