"""The engine's cache service: writes of one loop turn become one entry, each answered; a batch
waits (briefly) for workers answered a moment ago."""

from __future__ import annotations

import asyncio
import os

import pytest

from saltext_raft.kv import decode_entry
from saltext_raft.kv.machine import COMMAND_FRAMING_MAX
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.replicated import service as cacheservice
from saltext_raft.replicated.config import CacheSettings
from saltext_raft.replicated.mirror import Applied
from saltext_raft.replicated.service import ENTRY_ROOM
from saltext_raft.replicated.service import CacheService
from saltext_raft.replicated.service import entry_values_max
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES
from tests.unit.replicated.fakeruntime import LeaderPort


class FakeRuntime(LeaderPort):
    """Records proposals; the test settles them."""

    def __init__(self, refuse=None):
        super().__init__()
        self.proposals: list[tuple[bytes, float, asyncio.Future]] = []
        self.refuse = refuse

    def submit(self, data, timeout):
        if self.refuse is not None:
            raise self.refuse
        fut = asyncio.get_running_loop().create_future()
        self.proposals.append((data, timeout, fut))
        return fut


def settings(tmp_path, backend="sqlite", batch_wait=0.002):
    return CacheSettings(
        socket=str(tmp_path / "cache.sock"),
        root=str(tmp_path / "kv"),
        timeout=5.0,
        linearizable_reads=False,
        backend=backend,
        batch_wait=batch_wait,
    )


def caught_up_service(tmp_path, runtime) -> CacheService:
    """A ``localfs``-layout service that has run its catch-up after start against
    ``runtime`` (anything with ``async wait_caught_up()``), its writer stopped again."""
    svc = CacheService(settings(tmp_path, backend="localfs"), clock=lambda: 1)

    async def main():
        svc.start_writer(asyncio.get_running_loop())
        await asyncio.wait_for(svc._catch_up(runtime), 10)  # pylint: disable=protected-access

    try:
        asyncio.run(main())
    finally:
        svc.writer.stop()
    return svc


def store_req(key, value=b"v", timeout=None, seq=1):
    import base64  # pylint: disable=import-outside-toplevel

    req = {"bank": "b", "key": key, "value": base64.b64encode(value).decode(), "client": key}
    req["seq"] = seq
    if timeout is not None:
        req["timeout"] = timeout
    return req


@pytest.fixture
def service(tmp_path):
    svc = CacheService(settings(tmp_path), clock=lambda: 1234)
    yield svc
    svc.writer.stop()


def run(coro):
    return asyncio.run(coro)


def attach(svc) -> FakeRuntime:
    """Start ``svc``'s writer on the running loop and give it a fake runtime."""
    svc.start_writer(asyncio.get_running_loop())
    rt = svc.runtime = FakeRuntime()
    return rt


def test_writes_of_one_turn_become_one_entry_and_each_gets_its_result(service):
    async def main():
        rt = attach(service)
        futs = [
            service._store(rt, store_req("k1", timeout=3.0)),
            service._store(rt, store_req("k2", timeout=1.5)),
            service._flush(rt, {"bank": "b", "key": "k0", "client": "c9", "seq": 4}),
        ]
        await asyncio.sleep(0)  # the end of the turn: the batch is proposed
        assert len(rt.proposals) == 1
        data, timeout, proposal = rt.proposals[0]
        batch, cmds = decode_entry(data)
        assert batch and [(c.op, c.key, c.ts, c.client, c.seq) for c in cmds] == [
            (STORE, "k1", 1234, "k1", 1),
            (STORE, "k2", 1234, "k2", 1),
            (FLUSH, "k0", 1234, "c9", 4),
        ]
        assert timeout == 1.5  # the most impatient writer's
        proposal.set_result(Applied([True, True, False], service.writer.ticket))
        return [await asyncio.wait_for(f, 5) for f in futs]

    assert run(main()) == [True, True, False]
    assert service.counters == {
        "writes": 3,
        "entries": 1,
        "largest_batch": 3,
        "waited": 0,
        "wait_expired": 0,
        "relayed": 0,
        "relay_fallbacks": 0,
        "relays_served": 0,
    }


def test_a_lone_write_is_a_plain_command_proposed_without_delay(service):
    async def main():
        rt = attach(service)
        fut = service._store(rt, store_req("k1"))
        await asyncio.sleep(0)
        data, _, proposal = rt.proposals[0]
        assert decode_entry(data)[0] is False
        proposal.set_result(Applied(True, service.writer.ticket))
        return await asyncio.wait_for(fut, 5)

    assert run(main()) is True


def test_big_values_close_the_batch_at_once(service, monkeypatch):
    # a command counts its framing too (COMMAND_FRAMING_MAX)
    monkeypatch.setattr(cacheservice, "MAX_BATCH_BYTES", 100 + 2 * COMMAND_FRAMING_MAX)

    async def main():
        rt = attach(service)
        service._store(rt, store_req("k1", b"x" * 60))
        service._store(rt, store_req("k2", b"x" * 60))  # 120 bytes: proposed right here
        assert len(rt.proposals) == 1
        service._store(rt, store_req("k3", b"x" * 10))
        await asyncio.sleep(0)
        return [len(decode_entry(d)[1]) for d, _, _ in rt.proposals]

    assert run(main()) == [2, 1]


def test_a_failed_or_refused_batch_fails_every_write_in_it(service):
    async def main():
        rt = attach(service)
        futs = [service._store(rt, store_req(f"k{i}")) for i in range(3)]
        await asyncio.sleep(0)
        rt.proposals[0][2].set_exception(CommitTimeout("not committed within 5s"))
        failed = await asyncio.gather(*futs, return_exceptions=True)
        rt = service.runtime = FakeRuntime(refuse=NoLeader("no leader"))
        refused = await asyncio.gather(service._store(rt, store_req("k9")), return_exceptions=True)
        return failed, refused

    failed, refused = run(main())
    assert all(isinstance(e, CommitTimeout) for e in failed)
    assert isinstance(refused[0], NoLeader)


def test_a_bad_name_is_refused_before_it_joins_a_batch(service):
    async def main():
        rt = attach(service)
        with pytest.raises(Rejected):
            service._store(rt, store_req("../etc"))
        with pytest.raises(Rejected, match="seq must be an integer"):
            service._flush(rt, {"bank": "b", "key": None, "client": "c", "seq": "seven"})
        with pytest.raises(Rejected):
            service._store(rt, dict(store_req("k"), value="not base64!"))
        await asyncio.sleep(0)
        return rt.proposals

    assert run(main()) == []


def test_names_checked_once_are_still_checked_for_every_other_write(service):
    """The service remembers names that passed; a bad one, or one of another type, is refused
    with the name rule's own message however many good writes came before."""

    async def main():
        rt = attach(service)
        good = [service._store(rt, store_req("k", seq=i)) for i in (1, 2)]
        for bad in ({"bank": ["b"], "key": "k"}, {"bank": "b", "key": ["k"]}, {"key": "a/../.."}):
            with pytest.raises(Rejected, match="must be a non-empty string|would leave"):
                service._store(rt, dict(store_req("k", seq=3), **bad))
        await asyncio.sleep(0)
        return good, rt.proposals

    good, proposals = run(main())
    assert len(good) == 2 and len(proposals) == 1  # the two good writes, in one entry


@pytest.mark.parametrize("bank", ["", "/"])
def test_a_flush_of_the_root_bank_is_refused_before_it_is_proposed(service, bank):
    """Regression (issue 18, L7): the engine's socket accepted ``cache.flush`` of bank "",
    which the state machine applied as "remove every bank"."""

    async def main():
        rt = attach(service)
        with pytest.raises(Rejected, match="would remove every bank|would leave"):
            service._flush(rt, {"bank": bank, "key": None, "client": "c", "seq": 1})
        await asyncio.sleep(0)
        return rt.proposals

    assert run(main()) == []


def test_the_answer_waits_for_the_local_copy(tmp_path):
    svc = CacheService(settings(tmp_path, backend="localfs"), clock=lambda: 1)

    async def main():
        rt = attach(svc)
        fut = svc._store(rt, store_req("k1"))
        await asyncio.sleep(0)
        ticket = svc.writer.enqueue(("store", "b", "k1", b"\xa1v", 1))
        rt.proposals[0][2].set_result(Applied(True, ticket))
        await asyncio.sleep(0)
        answered_early = fut.done() and not svc.writer.done(ticket)
        await asyncio.wait_for(fut, 5)
        return answered_early, svc.writer.done(ticket)

    try:
        assert run(main()) == (False, True)
    finally:
        svc.writer.stop()


def keys_of(proposal) -> list[str]:
    return [c.key for c in decode_entry(proposal[0])[1]]


async def settle(svc, proposal, results) -> None:
    proposal[2].set_result(Applied(results, svc.writer.ticket))
    await asyncio.sleep(0)  # _applied runs: the futures are answered


async def answered_pair(svc, rt):
    """Two writes proposed and answered together: two workers are now awaited."""
    futs = [svc._store(rt, store_req("a")), svc._store(rt, store_req("b"))]
    await asyncio.sleep(0)
    await settle(svc, rt.proposals[-1], [True, True])
    assert all(f.done() for f in futs)


def test_a_batch_waits_for_the_workers_just_answered_and_goes_when_all_are_back(service):
    async def main():
        rt = attach(service)
        await answered_pair(service, rt)
        service._store(rt, store_req("a", seq=2))
        for _ in range(3):
            await asyncio.sleep(0)
        held = len(rt.proposals)  # one of the two is back: the batch waits for the other
        service._store(rt, store_req("b", seq=2))
        await asyncio.sleep(0)  # both are back: proposed at the end of this turn
        return held, [keys_of(p) for p in rt.proposals]

    held, proposals = run(main())
    assert held == 1
    assert proposals == [["a", "b"], ["a", "b"]]
    assert service.counters["waited"] == 1 and service.counters["wait_expired"] == 0


def test_a_worker_that_does_not_come_back_delays_the_batch_by_the_wait_only(tmp_path):
    svc = CacheService(settings(tmp_path, batch_wait=0.05), clock=lambda: 1)

    async def main():
        rt = attach(svc)
        await answered_pair(svc, rt)
        loop = asyncio.get_running_loop()
        start = loop.time()
        svc._store(rt, store_req("a", seq=2))
        deadline = start + 5
        while len(rt.proposals) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        waited = loop.time() - start
        # Proposing reset the count: the next write (from anyone) is not held back.
        svc._store(rt, store_req("c"))
        await asyncio.sleep(0)
        return waited, [keys_of(p) for p in rt.proposals]

    try:
        waited, proposals = run(main())
    finally:
        svc.writer.stop()
    assert proposals == [["a", "b"], ["a"], ["c"]]
    assert 0.05 <= waited < 5
    assert svc.counters["waited"] == 1 and svc.counters["wait_expired"] == 1


def test_a_lone_worker_writing_in_a_loop_is_never_held_back(service):
    async def main():
        rt = attach(service)
        for seq in range(1, 4):
            fut = service._store(rt, store_req("k", seq=seq))
            await asyncio.sleep(0)  # proposed at the end of the turn, not after a wait
            assert len(rt.proposals) == seq
            await settle(service, rt.proposals[-1], True)
            assert fut.result() is True

    run(main())


def test_batch_wait_zero_proposes_at_the_end_of_every_turn(tmp_path):
    svc = CacheService(settings(tmp_path, batch_wait=0), clock=lambda: 1)

    async def main():
        rt = attach(svc)
        await answered_pair(svc, rt)
        svc._store(rt, store_req("a", seq=2))
        await asyncio.sleep(0)
        return [keys_of(p) for p in rt.proposals]

    try:
        assert run(main()) == [["a", "b"], ["a"]]
    finally:
        svc.writer.stop()


def test_an_unexpected_error_while_waiting_to_catch_up_is_logged_and_the_wait_goes_on(
    tmp_path, monkeypatch, caplog
):
    """The catch-up task is what lets this master's copy serve reads (and starts the 3007
    key view). An exception other than the engine stopping ended it silently: the copy stayed
    unserved until the engine restarted. Now it is logged and the wait resumes."""
    monkeypatch.setattr(cacheservice, "CATCH_UP_RETRY", 0.01)

    class Flaky:
        calls = 0

        async def wait_caught_up(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise asyncio.TimeoutError("not caught up within 5s")
            return 7

    svc = caught_up_service(tmp_path, Flaky())
    assert svc.caught_up and Flaky.calls == 2
    assert os.path.exists(svc.settings.caught_up_path)
    assert "waiting to catch up failed" in caplog.text


class SmallEntriesRuntime(FakeRuntime):
    """A leader whose runtime takes entries of 64 KiB at most (a non-default
    ``max_entry_bytes``), and refuses a larger one as the real runtime does."""

    config = RuntimeConfig(max_entry_bytes=64 << 10)

    def submit(self, data, timeout):
        if len(data) > self.config.max_entry_bytes:
            raise Rejected(f"a proposal of {len(data)} bytes is larger than max_entry_bytes")
        return super().submit(data, timeout)

    async def wait_caught_up(self):
        await asyncio.Event().wait()  # never: the catch-up is not what this test is about


def test_batches_fit_the_runtimes_configured_max_entry_bytes_not_the_default(tmp_path):
    """Regression: the batch limit was derived from the default ``max_entry_bytes`` (4 MiB),
    whatever the runtime was configured with: below it, a turn's writes made one entry the
    runtime refused, and every write in it failed."""
    svc = CacheService(settings(tmp_path), clock=lambda: 1)

    async def main():
        rt = SmallEntriesRuntime()
        svc.start_writer(asyncio.get_running_loop())
        await svc.start(rt)
        try:
            value = b"x" * (20 << 10)
            futs = [svc._store(rt, store_req(f"k{i}", value=value)) for i in range(8)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while sum(len(decode_entry(d)[1]) for d, _, _ in rt.proposals) < 8:
                assert loop.time() < deadline, "the writes were not all proposed within 5s"
                assert not any(f.done() for f in futs), [f.exception() for f in futs if f.done()]
                await asyncio.sleep(0.001)
            sizes = [len(data) for data, _, _ in rt.proposals]
            assert len(sizes) > 1 and max(sizes) <= 64 << 10, sizes
            for data, _, proposal in rt.proposals:
                n = len(decode_entry(data)[1])
                proposal.set_result(Applied([True] * n if n > 1 else True, svc.writer.ticket, 1))
            assert await asyncio.wait_for(asyncio.gather(*futs), 5) == [True] * 8
        finally:
            await svc.stop()

    asyncio.run(main())


@pytest.mark.parametrize("max_entry_bytes", [1024, 64 << 10, DEFAULT_MAX_ENTRY_BYTES, 64 << 20])
def test_the_batch_limit_follows_max_entry_bytes_and_leaves_room_for_framing(max_entry_bytes):
    limit = entry_values_max(max_entry_bytes)
    assert max_entry_bytes * 3 // 4 <= limit < max_entry_bytes
    assert max_entry_bytes - limit <= ENTRY_ROOM
