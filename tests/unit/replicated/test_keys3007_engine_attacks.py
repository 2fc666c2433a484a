"""Attacks and faults against the engine side of ``keys: replicate``: the reconciler's thread
and the ``keys.sync`` request that ``_auth`` sends for any id a minion names, against the real
cache service."""

from __future__ import annotations

import asyncio
import os

import pytest

from saltext_raft.replicated import keys3007
from saltext_raft.replicated.config import CacheSettings
from saltext_raft.replicated.keys3007 import KeyLogError
from saltext_raft.replicated.keys3007 import KeyReplication
from saltext_raft.replicated.keystore import MIRROR_PREFIX
from saltext_raft.replicated.service import CacheService
from tests.unit.replicated.test_keys3007_engine import PEM
from tests.unit.replicated.test_keys3007_engine import CommittingRuntime
from tests.unit.replicated.test_keys3007_engine import log_state
from tests.unit.replicated.test_keys3007_engine import until


class CountingRuntime(CommittingRuntime):
    reads = 0

    async def read(self, timeout=None):
        self.reads += 1
        return await super().read(timeout)


@pytest.fixture
def keyengine(tmp_path):
    """A cache service (sqlite), a pki dir and a state dir for one master."""
    svc = CacheService(
        CacheSettings(socket=str(tmp_path / "c.sock"), root=str(tmp_path / "kv"), backend="sqlite")
    )
    state = tmp_path / "state"
    state.mkdir()
    yield svc, {"pki_dir": str(tmp_path / "pki"), "id": "m1"}, str(state)
    svc.writer.stop()


def start_keys(svc, opts, state_dir, rt):
    keys = KeyReplication(opts, svc, state_dir, poll=0.05)
    keys.start(asyncio.get_running_loop(), rt)
    svc.caught_up = True
    svc.watch(MIRROR_PREFIX, keys.changed)
    return keys


def test_a_log_read_failing_while_answering_a_sync_does_not_stop_the_thread(
    keyengine,  # pylint: disable=redefined-outer-name
    monkeypatch,
):
    """A sync that came before the first pass is answered by its own pass after it; the log
    read of that pass times out (the loop busy): the thread must live on and keep replicating."""
    svc, opts, state_dir = keyengine
    pki = opts["pki_dir"]
    real_read = keys3007.EngineLog.read
    failing = {"web1"}

    def read(self, bank, minion_id):
        if minion_id in failing:
            raise KeyLogError("TimeoutError: the loop did not answer")
        return real_read(self, bank, minion_id)

    monkeypatch.setattr(keys3007.EngineLog, "read", read)

    async def main():
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = CountingRuntime(svc)
        keys = KeyReplication(opts, svc, state_dir, poll=0.05)
        keys.start(asyncio.get_running_loop(), rt)
        try:
            early = asyncio.ensure_future(keys.handle_sync(rt, {"minion": "web1", "timeout": 5}))
            # its barrier returns and it is queued in the same step: before the catch-up
            await until("the early sync's barrier", lambda: rt.reads == 1)
            svc.caught_up = True
            svc.watch(MIRROR_PREFIX, keys.changed)
            keys.changed(None, None)
            await until("the key view started", lambda: keys.started)
            with pytest.raises(KeyLogError):  # answered, not left to time out
                await early
            failing.clear()
            with open(os.path.join(pki, "minions_pre", "web2"), "w") as fh:
                fh.write(PEM.format(2))
            await until("web2 in the log", lambda: log_state(svc, "web2") is not None)
        finally:
            await asyncio.to_thread(keys.stop)

    asyncio.run(main())


def test_a_flood_of_syncs_for_new_ids_writes_nothing_and_answers_every_one(
    keyengine,  # pylint: disable=redefined-outer-name
):
    """A minion names 200 new ids to ``_auth`` at once: every sync is answered (none pending),
    nothing is written to the directories or proposed for them; each took one barrier."""
    svc, opts, state_dir = keyengine
    pki = opts["pki_dir"]
    count = 200

    async def main():
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = CountingRuntime(svc)
        keys = start_keys(svc, opts, state_dir, rt)
        keys.changed(None, None)
        try:
            await until("the key view started", lambda: keys.started)
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        keys.handle_sync(rt, {"minion": f"flood{i}", "timeout": 5})
                        for i in range(count)
                    )
                ),
                30,
            )
            assert all(a == {"keys": None, "denied_keys": None} for a in answers)
            assert rt.reads == count
            for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
                assert os.listdir(os.path.join(pki, sub)) == []
            assert keys.status()["proposed"] == 0
            assert all(log_state(svc, f"flood{i}") is None for i in range(count))
        finally:
            await asyncio.to_thread(keys.stop)

    asyncio.run(main())


class QuorumlessRuntime(CommittingRuntime):
    """A ReadIndex that is never confirmed: it waits for its timeout as the real one does (a
    NaN timeout never ends in ``asyncio.wait``)."""

    async def read(self, timeout=None):
        never = asyncio.get_running_loop().create_future()
        await asyncio.wait((never,), timeout=timeout)
        raise asyncio.TimeoutError("read not confirmed")


@pytest.mark.parametrize("timeout", [float("nan"), "abc", [1], -1.0])
def test_a_sync_with_a_bad_timeout_gets_a_clear_error_at_once(
    keyengine,  # pylint: disable=redefined-outer-name
    timeout,
):
    """``keys.sync`` comes over the cache socket as JSON, which carries NaN: a bad ``timeout``
    is refused, not a barrier that never ends or a TypeError."""
    from saltext_raft.runtime.errors import Rejected  # pylint: disable=import-outside-toplevel

    svc, opts, state_dir = keyengine

    async def main():
        svc.start_writer(asyncio.get_running_loop())
        rt = svc.runtime = QuorumlessRuntime(svc)
        keys = KeyReplication(opts, svc, state_dir, poll=0.05)
        try:
            with pytest.raises(Rejected):
                await asyncio.wait_for(
                    keys.handle_sync(rt, {"minion": "web1", "timeout": timeout}), 10
                )
        finally:
            await asyncio.to_thread(keys.stop)

    asyncio.run(main())
