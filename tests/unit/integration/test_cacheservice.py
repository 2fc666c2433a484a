"""The engine's cache service: writes of one loop turn become one entry, each answered."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.integration import cacheservice
from saltext_raft.integration.cacheconfig import CacheSettings
from saltext_raft.integration.cachemirror import Applied
from saltext_raft.integration.cacheservice import CacheService
from saltext_raft.kv import decode_entry
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Rejected


class FakeRuntime:
    """Records proposals; the test settles them."""

    def __init__(self, refuse=None):
        self.proposals: list[tuple[bytes, float, asyncio.Future]] = []
        self.refuse = refuse

    def submit(self, data, timeout):
        if self.refuse is not None:
            raise self.refuse
        fut = asyncio.get_running_loop().create_future()
        self.proposals.append((data, timeout, fut))
        return fut


def settings(tmp_path, backend="sqlite"):
    return CacheSettings(
        socket=str(tmp_path / "cache.sock"),
        root=str(tmp_path / "kv"),
        timeout=5.0,
        linearizable_reads=False,
        backend=backend,
    )


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
    assert service.counters == {"writes": 3, "entries": 1, "largest_batch": 3}


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
    monkeypatch.setattr(cacheservice, "MAX_BATCH_BYTES", 100)

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
