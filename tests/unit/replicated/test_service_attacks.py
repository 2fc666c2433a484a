"""Attacks on the engine's cache socket (``replicated/service.py``): a request one client sends
must never cost another client its write."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.kv import decode_entry
from saltext_raft.replicated.mirror import Applied
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime.errors import Rejected
from tests.unit.replicated.test_service import attach
from tests.unit.replicated.test_service import settings
from tests.unit.replicated.test_service import store_req


@pytest.mark.parametrize("seq", [2**64, -1, 10**40, float("inf")])
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
