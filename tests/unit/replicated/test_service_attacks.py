"""Attacks on the engine's cache socket (``replicated/service.py``): a request one client sends
must never cost another client its write."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.kv import decode_entry
from saltext_raft.replicated.mirror import Applied
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES
from tests.unit.replicated.test_service import FakeRuntime
from tests.unit.replicated.test_service import attach
from tests.unit.replicated.test_service import settings
from tests.unit.replicated.test_service import store_req


@pytest.mark.parametrize(
    "seq",
    # loose values an int() parse took (as 1, 1, 7, 0, 0, 0, 12, 0): a seq is taken as sent
    [2**64, -1, 10**40, float("inf"), 1.5, True, "7", False, "", 0.0, " 12 ", None, [], {}],
)
def test_a_seq_msgpack_cannot_hold_is_refused_alone_and_the_batch_goes(tmp_path, seq):
    """Regression: a write whose ``seq`` does not fit msgpack's 64 bits joined the batch; the
    batch's encoding then raised in a loop callback, nothing was proposed and every other
    client's write in that turn was never answered (each worker waited its whole timeout, the
    write lost)."""
    svc = CacheService(settings(tmp_path), clock=lambda: 1)

    async def main():
        rt = attach(svc)
        good = svc._store(rt, store_req("k1", seq=1))
        with pytest.raises(Rejected, match="seq"):
            svc._store(rt, store_req("k2", seq=seq))
        other = svc._store(rt, store_req("k3", seq=1))
        for _ in range(20):  # bounded: the batch is proposed at the end of this turn
            if rt.proposals:
                break
            await asyncio.sleep(0)
        assert len(rt.proposals) == 1, "the batch of the well-formed writes was never proposed"
        _, cmds = decode_entry(rt.proposals[0][0])
        assert [c.key for c in cmds] == ["k1", "k3"]
        rt.proposals[0][2].set_result(Applied([True, True], 0))
        return await asyncio.wait_for(asyncio.gather(good, other), 5)

    try:
        assert asyncio.run(main()) == [True, True]
    finally:
        svc.writer.stop()


class LimitedRuntime(FakeRuntime):
    """Refuses a proposal over the runtime's entry limit, as ``runtime/proposals.py`` does."""

    def submit(self, data, timeout):
        if len(data) > DEFAULT_MAX_ENTRY_BYTES:
            raise Rejected(f"a proposal of {len(data)} bytes is larger than max_entry_bytes")
        return super().submit(data, timeout)


@pytest.mark.parametrize(
    "hostile",
    [
        {"key": "x" * DEFAULT_MAX_ENTRY_BYTES},  # a name as large as an entry (the value is 1 byte)
        {"client": "c" * DEFAULT_MAX_ENTRY_BYTES},
        {"key": "k\ud800"},  # JSON "\ud800": a lone surrogate, which msgpack cannot encode
        {"bank": "b/\udcff"},
        {"client": "\ud800"},
    ],
    ids=["huge-key", "huge-client", "surrogate-key", "surrogate-bank", "surrogate-client"],
)
def test_a_write_that_cannot_share_an_entry_costs_no_other_write(tmp_path, hostile):
    """Regression: the batch counted only value bytes, and names were never encoded before the
    batch was. A write with a name as large as an entry made the whole batch larger than
    ``max_entry_bytes`` (every write in it refused); a name with a lone surrogate (valid JSON)
    broke the batch's encoding (every write in it unanswered)."""
    svc = CacheService(settings(tmp_path), clock=lambda: 1)

    async def main():
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = LimitedRuntime()
        good = svc._store(rt, store_req("k1", seq=1))
        try:
            bad = svc._store(rt, dict(store_req("k2", seq=1), **hostile))
        except Rejected as exc:
            bad = exc
        other = svc._store(rt, store_req("k3", seq=1))
        for _ in range(20):  # bounded: each batch is proposed by the end of this turn
            if len(rt.proposals) >= 1 and not svc._batch:
                break
            await asyncio.sleep(0)
        keys = [[c.key for c in decode_entry(p[0])[1]] for p in rt.proposals]
        shown = [[k[:12] for k in ks] for ks in keys]
        assert ["k1", "k3"] in keys or (["k1"] in keys and ["k3"] in keys), shown
        for data, _, fut in rt.proposals:
            batch, cmds = decode_entry(data)
            fut.set_result(Applied([True] * len(cmds) if batch else True, 0))
        done = await asyncio.wait_for(asyncio.gather(good, other), 5)
        if isinstance(bad, asyncio.Future):
            bad = (await asyncio.gather(bad, return_exceptions=True))[0]
        return done, bad

    try:
        done, bad = asyncio.run(main())
    finally:
        svc.writer.stop()
    assert done == [True, True]
    assert isinstance(bad, Rejected), f"{bad!r:.200}"
