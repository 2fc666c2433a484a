"""The engine's side of ``keys: replicate``: the reconciler's thread against the real cache
service (its state machine, its batching, its watchers), with a runtime that commits at once,
and the ``keys.sync`` request the ``_auth`` wrapper sends."""

from __future__ import annotations

import asyncio
import os
import time
import types

import pytest
import salt.payload

from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.replicated.config import CacheSettings
from saltext_raft.replicated.keys3007 import KeyReplication
from saltext_raft.replicated.keystore import MIRROR_PREFIX
from saltext_raft.replicated.keystore import mirror_bank
from saltext_raft.replicated.service import CacheService
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Rejected
from tests.unit.replicated.fakeruntime import LeaderPort

PEM = "-----BEGIN PUBLIC KEY-----\nMIIB{}\n-----END PUBLIC KEY-----\n"
BOUND = 10.0


class CommittingRuntime(LeaderPort):
    """Commits every proposal at once (a one-master cluster); ``down``: no leader."""

    def __init__(self, svc):
        super().__init__()
        self.svc = svc
        self.down = False
        self.index = 0

    def submit(self, data, timeout):
        fut = asyncio.get_running_loop().create_future()
        if self.down:
            fut.set_exception(NoLeader("no leader"))
        else:
            self.index += 1
            entry = types.SimpleNamespace(data=data, index=self.index)
            fut.set_result(self.svc.state_machine.apply(entry))
        return fut

    async def read(self, timeout=None):
        if self.down:
            raise NoLeader("no leader")
        return 1


async def until(what: str, check) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND}s: {what}")
        await asyncio.sleep(0.02)


def log_state(svc, minion_id):
    raw = svc.state_machine.kv.fetch(mirror_bank("keys"), minion_id)
    return None if raw is None else salt.payload.loads(raw)


@pytest.fixture
def engine(tmp_path):
    svc = CacheService(
        CacheSettings(socket=str(tmp_path / "c.sock"), root=str(tmp_path / "kv"), backend="sqlite")
    )
    opts = {"pki_dir": str(tmp_path / "pki"), "id": "m1"}
    state = tmp_path / "state"
    state.mkdir()
    yield svc, opts, str(state)
    svc.writer.stop()


def test_the_engine_reconciles_after_catch_up_and_answers_sync(engine):
    svc, opts, state_dir = engine
    pki = opts["pki_dir"]

    async def main():
        loop = asyncio.get_running_loop()
        svc.start_writer(loop)
        rt = svc.runtime = CommittingRuntime(svc)
        rotations = []
        keys = KeyReplication(
            opts, svc, state_dir, poll=0.05, rotate=lambda: rotations.append(1) or "rotated"
        )
        keys.start(loop, rt)
        try:
            # before the engine caught up nothing is done, and a sync is not answered
            with pytest.raises(asyncio.TimeoutError):
                await keys.handle_sync(rt, {"minion": "web1", "timeout": 0.3})
            assert not os.path.exists(os.path.join(pki, "minions"))
            svc.caught_up = True
            svc.watch(MIRROR_PREFIX, keys.changed)
            keys.changed(None, None)  # what the cache service reports once caught up
            await until("the key view started", lambda: keys.started)
            # a local pending key (as _auth writes it) is proposed
            with open(os.path.join(pki, "minions_pre", "web1"), "w") as fh:
                fh.write(PEM.format(1))
            await until("web1 in the log", lambda: log_state(svc, "web1") is not None)
            assert log_state(svc, "web1") == {"state": "pending", "pub": PEM.format(1)}
            # a change committed through another master reaches the directories
            await svc.propose(  # as if committed through another master
                STORE,
                mirror_bank("keys"),
                "web1",
                salt.payload.dumps({"state": "accepted", "pub": PEM.format(1)}),
            )
            await until(
                "web1 accepted in the view",
                lambda: (
                    os.path.exists(os.path.join(pki, "minions", "web1"))
                    and not os.path.exists(os.path.join(pki, "minions_pre", "web1"))
                ),
            )
            # taken away through another master: the file goes, the AES key is rotated here
            await svc.propose(FLUSH, mirror_bank("keys"), "web1")
            await until(
                "web1 removed from the view",
                lambda: not os.path.exists(os.path.join(pki, "minions", "web1")),
            )
            await until("an AES key rotation", lambda: rotations == [1])
            # keys.sync makes the view show the log's state for one id before it answers
            svc._watchers.clear()  # no watcher: only the sync request can write web2
            await svc.propose(
                STORE,
                mirror_bank("keys"),
                "web2",
                salt.payload.dumps({"state": "accepted", "pub": PEM.format(2)}),
            )
            answer = await keys.handle_sync(rt, {"minion": "web2", "timeout": 5})
            assert answer["keys"] == "accepted"
            assert open(os.path.join(pki, "minions", "web2")).read() == PEM.format(2)
            with pytest.raises(Rejected):
                await keys.handle_sync(rt, {"minion": "../../etc/x", "timeout": 5})
            rt.down = True
            with pytest.raises(NoLeader):
                await keys.handle_sync(rt, {"minion": "web3", "timeout": 5})
            assert keys.status()["proposed"] == 1
        finally:
            await asyncio.to_thread(keys.stop)

    asyncio.run(main())
