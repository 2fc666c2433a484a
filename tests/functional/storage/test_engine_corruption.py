"""Damaged Raft storage under the engine service: it refuses to start, says where the damage
is and what to do, and its master's gate stays closed.

The service is the engine's own (``RaftService`` with its real store over Salt's localfs cache
and its real zmq transport on a loopback port), only its event and control buses are
recorded/idle; a one-master cluster, so that it elects itself and writes a log.
"""

from __future__ import annotations

import asyncio
import gc
import pathlib

import pytest

from saltext_raft.master import gate
from saltext_raft.master.config import from_opts
from saltext_raft.master.secret import generate
from saltext_raft.master.service import RaftService
from saltext_raft.runtime import DictStateMachine
from saltext_raft.storage import StorageCorruption
from saltext_raft.storage.segments import FRAME_MAGIC
from tests.functional.storage.backends import free_port
from tests.functional.storage.backends import master_opts
from tests.unit.master.services import IdleControlBus
from tests.unit.master.services import RecordingBus

pytest.importorskip("zmq")


def engine_opts(tmp_path) -> dict:
    secret = tmp_path / "raft.secret"
    generate(str(secret))
    raft = {
        "peers": {"m1": f"127.0.0.1:{free_port()}"},
        "secret_file": str(secret),
        "readiness_interval": 0.5,
    }
    return master_opts(
        str(tmp_path / "cache"), id="m1", interface="127.0.0.1", engines=[{"raft": raft}]
    )


def service(opts) -> tuple[RaftService, RecordingBus]:
    bus = RecordingBus()
    cfg = from_opts(opts, opts["engines"][0]["raft"])
    return RaftService(opts, cfg, event_bus=bus, control_bus=IdleControlBus()), bus


async def run_until(svc: RaftService, what: str, predicate, timeout: float = 30.0):
    task = asyncio.get_running_loop().create_task(svc.serve())
    try:
        for _ in range(int(timeout / 0.02)):
            if task.done():
                return task.result()  # raised, or returned early
            if predicate():
                return None
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    finally:
        if not task.done():
            svc.stop()
            await asyncio.wait_for(task, 15)


def test_damaged_storage_stops_the_engine_naming_the_key_and_the_gate_stays_closed(tmp_path):
    opts = engine_opts(tmp_path)

    async def write_a_log():
        svc, _ = service(opts)
        written = []

        async def propose():
            for i in range(5):
                await svc.runtime.propose(DictStateMachine.set_command(b"k%d" % i, b"v"), 5)

        def wrote():
            if svc.ready and not written:
                written.append(asyncio.get_running_loop().create_task(propose()))
            return bool(written) and written[0].done()

        await run_until(svc, "five entries committed on the one-master cluster", wrote)
        written[0].result()

    try:
        asyncio.run(write_a_log())
        wal = pathlib.Path(opts["cachedir"]) / "saltext_raft" / "saltext-raft" / "m1" / "wal"
        path = sorted(wal.iterdir())[-1]
        blob = bytearray(path.read_bytes())
        second = blob.find(FRAME_MAGIC, 1)
        assert second > 0, "the segment holds more than one frame"
        blob[second - 1] ^= 0xFF  # damage inside the first frame, an intact one after it
        path.write_bytes(bytes(blob))

        svc, bus = service(opts)

        async def restart():
            await run_until(svc, "the engine to stop on the damage", lambda: False)

        with pytest.raises(StorageCorruption) as err:
            asyncio.run(restart())
    finally:
        gc.unfreeze()
    msg = str(err.value)
    assert path.name in msg and "saltext_raft/saltext-raft/m1/wal" in msg, msg
    assert "remove the node's data" in msg and "learner" in msg, msg
    # The gate: the readiness file says "starting" (written before the store was opened) and
    # nobody refreshes it; it never said ready, and no event claimed the engine started.
    reader = gate.Gate().for_opts(opts).reader
    assert not reader.check() and reader.state.get("ready") is False, reader.reason
    assert bus.events == []
