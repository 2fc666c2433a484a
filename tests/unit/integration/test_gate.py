"""The request gate: hold, release, refuse with the right shape, fail closed, stay cheap."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from saltext_raft.integration import gate as gatemod
from saltext_raft.integration.readiness import ReadinessReader
from saltext_raft.integration.readiness import ReadinessWriter

AES = {"enc": "aes", "load": b"\x00ciphertext", "id": "minion1"}
CLEAR = {"enc": "clear", "load": {"cmd": "publish", "fun": "test.ping"}}
AUTH = {"enc": "clear", "load": {"cmd": "_auth", "id": "minion1"}}


class FakeWorker:
    """Stands in for salt.master.MWorker: only what the gate touches."""

    def __init__(self, opts):
        self.opts = opts
        self.calls = []

    async def _handle_payload(self, payload):
        self.calls.append(payload)
        return {"ok": True}, {"fun": "send"}


@pytest.fixture
def worker_cls():
    class Worker(FakeWorker):
        async def _handle_payload(self, payload):
            return await FakeWorker._handle_payload(self, payload)

    assert gatemod.install(Worker) is True
    return Worker


@pytest.fixture
def opts(tmp_path):
    return {
        "cachedir": str(tmp_path),
        "engines": [{"raft": {"gate_hold": 0.3, "readiness_interval": 0.5}}],
    }


def writer(opts):
    path = os.path.join(opts["cachedir"], "saltext_raft", "ready")
    return ReadinessWriter(path, interval=0.5)


def run(coro):
    return asyncio.run(coro)


def test_install_is_idempotent(worker_cls):
    wrapped = worker_cls._handle_payload
    assert gatemod.install(worker_cls) is False
    assert worker_cls._handle_payload is wrapped
    assert gatemod.uninstall(worker_cls) is True
    assert not getattr(worker_cls._handle_payload, "__saltext_raft_gate__", False)


def test_ready_master_calls_through(worker_cls, opts):
    writer(opts).publish({"ready": True})
    w = worker_cls(opts)
    assert run(w._handle_payload(AES)) == ({"ok": True}, {"fun": "send"})
    assert w.calls == [AES]


def test_auth_always_passes(worker_cls, opts):
    w = worker_cls(opts)  # no readiness file at all
    t0 = time.monotonic()
    assert run(w._handle_payload(AUTH))[0] == {"ok": True}
    assert run(w._handle_payload({"cmd": "_auth", "_start": 0}))[0] == {"ok": True}
    assert time.monotonic() - t0 < 0.2


def test_closed_gate_refuses_aes_in_the_clear_after_the_hold(worker_cls, opts):
    writer(opts).publish({"ready": False, "reason": "no leader"})
    w = worker_cls(opts)
    t0 = time.monotonic()
    ret, req_opts = run(w._handle_payload(AES))
    assert 0.3 <= time.monotonic() - t0 < 1.5
    # A plain string sent in the clear: the minion cannot decrypt it and retries. Never an
    # (encrypted) empty success, which the minion would take as delivered.
    assert req_opts == {"fun": "send_clear"}
    assert isinstance(ret, str) and "not ready" in ret and "no leader" in ret
    assert w.calls == []


def test_refusal_string_is_never_accepted_by_a_minion_channel():
    """The minion side: Salt's Crypticle refuses to load our refusal (so the channel retries)."""
    crypt = pytest.importorskip("salt.crypt")
    from saltext_raft.integration.gate import aes_refusal

    message, _ = aes_refusal("no leader elected yet", 1.0)
    c = crypt.Crypticle({}, crypt.Crypticle.generate_key_string())
    with pytest.raises(Exception):  # noqa: B017 - TypeError or AuthenticationError by version
        c.loads(message, nonce="0" * 32)
    with pytest.raises(Exception):  # noqa: B017
        c.loads(message.encode(), nonce="0" * 32)


def test_hold_is_capped(worker_cls, opts):
    from saltext_raft.integration.gate import MAX_HOLD
    from saltext_raft.integration.gate import settings_from_opts

    opts["engines"][0]["raft"]["gate_hold"] = 60
    assert settings_from_opts(opts).hold == MAX_HOLD
    del opts["engines"][0]["raft"]["gate_hold"]
    assert settings_from_opts(opts).hold == 1.0


def test_closed_gate_refuses_clear_with_a_clearfuncs_error(worker_cls, opts):
    w = worker_cls(opts)
    ret, req_opts = run(w._handle_payload(CLEAR))
    assert req_opts == {"fun": "send_clear"}
    assert ret["error"]["name"] == "SaltRaftNotReady"
    assert "readiness file" in ret["error"]["message"]
    assert w.calls == []


def test_held_request_is_released_when_the_gate_opens(tmp_path, worker_cls, opts, caplog):
    gatemod._GATE._held_log = 0.0  # the once-a-minute log may have fired in another test
    opts["engines"][0]["raft"]["gate_hold"] = 3.0
    wr = writer(opts)
    wr.publish({"ready": False, "reason": "electing"})
    w = worker_cls(opts)

    async def scenario():
        task = asyncio.ensure_future(w._handle_payload(AES))
        await asyncio.sleep(0.2)
        assert not task.done()  # held
        wr.publish({"ready": True})
        t_open = time.monotonic()
        ret = await asyncio.wait_for(task, 2)
        return ret, time.monotonic() - t_open

    with caplog.at_level("INFO", logger=gatemod.__name__):
        ret, latency = run(scenario())
    assert ret == ({"ok": True}, {"fun": "send"})
    assert latency < 0.5  # released within a poll interval or two, not at the end of the hold
    # An operator sees that the gate acted even when nothing was refused.
    assert "held a request (enc=aes, cmd=None)" in caplog.text


def test_gate_switched_off_or_engine_not_configured(worker_cls, tmp_path):
    for opts in (
        {"cachedir": str(tmp_path), "engines": [{"raft": {"gate": False}}]},
        {"cachedir": str(tmp_path), "engines": []},
    ):
        w = worker_cls(opts)
        assert run(w._handle_payload(AES))[0] == {"ok": True}


def test_stale_readiness_file_fails_closed(tmp_path):
    path = str(tmp_path / "ready")
    clock = [1000.0]
    wr = ReadinessWriter(path, interval=1.0, clock=lambda: clock[0])
    wr.publish({"ready": True})
    reader = ReadinessReader(path, stale_after=4.0, cache_for=0.0, clock=lambda: clock[0])
    assert reader.is_open()
    clock[0] += 10  # the engine hangs: nobody refreshes the heartbeat
    assert not reader.is_open()
    assert "not running (no heartbeat for 10s)" in reader.reason
    wr.heartbeat()  # it comes back
    assert reader.is_open()


def test_reader_caches_its_stat(tmp_path):
    path = str(tmp_path / "ready")
    clock = [0.0]
    wr = ReadinessWriter(path, clock=lambda: clock[0])
    wr.publish({"ready": True})
    reader = ReadinessReader(path, cache_for=0.25, clock=lambda: clock[0])
    assert reader.is_open()
    wr.publish({"ready": False, "reason": "removed"})
    assert reader.is_open()  # cached
    clock[0] += 0.3
    assert not reader.is_open()
    assert reader.reason == "removed"


def test_writer_close_marks_not_ready(tmp_path):
    path = str(tmp_path / "ready")
    wr = ReadinessWriter(path)
    wr.publish({"ready": True})
    wr.close()
    reader = ReadinessReader(path, cache_for=0)
    assert not reader.is_open()
    assert reader.reason == "engine stopped"


def test_ready_path_cost_microbenchmark(worker_cls, opts, capsys):
    """The gate's cost per request on a ready master (target: <= 20 µs; typically ~1 µs)."""
    writer(opts).publish({"ready": True})
    gated = worker_cls(opts)

    class Plain(FakeWorker):
        pass

    plain = Plain(opts)
    n = 20000

    async def loop(w):
        payload = AES
        t0 = time.perf_counter()
        for _ in range(n):
            await w._handle_payload(payload)
        return (time.perf_counter() - t0) / n

    async def bench():
        await loop(gated)
        best_gated = min([await loop(gated) for _ in range(3)])
        best_plain = min([await loop(plain) for _ in range(3)])
        return best_gated, best_plain

    g, p = asyncio.run(bench())
    cost_us = (g - p) * 1e6
    with capsys.disabled():
        print(
            f"\ngate cost per request on a ready master: {cost_us:.2f} µs "
            f"(gated {g * 1e6:.2f} µs, plain {p * 1e6:.2f} µs)"
        )
    assert cost_us <= 20
