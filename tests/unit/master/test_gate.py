"""The request gate: hold, release, refuse with the right shape, fail closed, stay cheap.

No wall-clock bounds here (a loaded machine would break them): how long a request was held is
counted in the gate's polls (``POLL_INTERVAL`` sleeps each), and cheapness in ``stat()`` calls.
The cost in µs is a benchmark: ``python -m saltext_raft bench gate``.
"""

from __future__ import annotations

import asyncio
import os
import time
import types

import pytest

from saltext_raft.master import gate as gatemod
from saltext_raft.master import readiness as readinessmod
from saltext_raft.master.readiness import ReadinessReader
from saltext_raft.master.readiness import ReadinessWriter

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


@pytest.fixture
def polls(monkeypatch):
    """Counts the gate's polls while it holds a request (each one sleeps POLL_INTERVAL)."""
    count = []

    async def sleep(seconds):
        count.append(seconds)
        await asyncio.sleep(seconds)

    monkeypatch.setattr(gatemod, "asyncio", types.SimpleNamespace(sleep=sleep))
    return count


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


def test_auth_always_passes(worker_cls, opts, polls):
    w = worker_cls(opts)  # no readiness file at all
    assert run(w._handle_payload(AUTH))[0] == {"ok": True}
    assert run(w._handle_payload({"cmd": "_auth", "_start": 0}))[0] == {"ok": True}
    assert polls == []  # passed at once, never held


def test_closed_gate_refuses_aes_in_the_clear_after_the_hold(worker_cls, opts, polls):
    writer(opts).publish({"ready": False, "reason": "no leader"})
    w = worker_cls(opts)
    t0 = time.monotonic()
    ret, req_opts = run(w._handle_payload(AES))
    # Held for the whole gate_hold (0.3 s) first, polling: a lower bound, which load cannot
    # break (the hold's deadline is measured on the same clock).
    assert time.monotonic() - t0 >= 0.3
    assert polls and all(0 < p <= gatemod.POLL_INTERVAL for p in polls)
    # A plain string sent in the clear: the minion cannot decrypt it and retries. Never an
    # (encrypted) empty success, which the minion would take as delivered.
    assert req_opts == {"fun": "send_clear"}
    assert isinstance(ret, str) and "not ready" in ret and "no leader" in ret
    assert w.calls == []


def test_refusal_string_is_never_accepted_by_a_minion_channel():
    """The minion side: Salt's Crypticle refuses to load our refusal (so the channel retries)."""
    crypt = pytest.importorskip("salt.crypt")
    from saltext_raft.master.gate import aes_refusal

    exceptions = pytest.importorskip("salt.exceptions")
    message, _ = aes_refusal("no leader elected yet", 1.0)
    c = crypt.Crypticle({}, crypt.Crypticle.generate_key_string())
    nonce = "0" * 32
    # The call itself is right: a real reply of this shape loads (so a failure below is about
    # our refusal, not a wrong signature).
    assert c.loads(c.dumps({"ret": True}, nonce=nonce), nonce=nonce) == {"ret": True}
    with pytest.raises(exceptions.AuthenticationError, match="authentication failed"):
        c.loads(message.encode(), nonce=nonce)
    # As a str (what msgpack hands the minion) 3008 fails before its HMAC check, with a
    # TypeError; either way loads() raises and the channel's send() retries the request.
    with pytest.raises((TypeError, exceptions.AuthenticationError)):
        c.loads(message, nonce=nonce)


def test_hold_is_capped(worker_cls, opts):
    from saltext_raft.master.gate import settings_from_opts
    from saltext_raft.master.settings import MAX_GATE_HOLD

    opts["engines"][0]["raft"]["gate_hold"] = 60
    assert settings_from_opts(opts).hold == MAX_GATE_HOLD
    del opts["engines"][0]["raft"]["gate_hold"]
    assert settings_from_opts(opts).hold == 1.0


def test_closed_gate_refuses_clear_with_a_clearfuncs_error(worker_cls, opts):
    w = worker_cls(opts)
    ret, req_opts = run(w._handle_payload(CLEAR))
    assert req_opts == {"fun": "send_clear"}
    assert ret["error"]["name"] == "SaltRaftNotReady"
    assert "readiness file" in ret["error"]["message"]
    assert w.calls == []


def test_held_request_is_released_when_the_gate_opens(tmp_path, worker_cls, opts, caplog, polls):
    gatemod._GATE._held_log = 0.0  # the once-a-minute log may have fired in another test
    opts["engines"][0]["raft"]["gate_hold"] = 3.0
    wr = writer(opts)
    wr.publish({"ready": False, "reason": "electing"})
    w = worker_cls(opts)

    async def scenario():
        task = asyncio.ensure_future(w._handle_payload(AES))
        for _ in range(1000):  # bounded: until the gate has polled twice
            if len(polls) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(polls) >= 2 and not task.done()  # held
        wr.publish({"ready": True})
        before = len(polls)
        ret = await asyncio.wait_for(task, 30)
        return ret, len(polls) - before

    with caplog.at_level("INFO", logger=gatemod.__name__):
        ret, polls_after_open = run(scenario())
    assert ret == ({"ok": True}, {"fun": "send"})
    # Released at the next poll (the one under way when the file changed, and at most one
    # more), not at the end of the hold (3 s / POLL_INTERVAL = 60 polls).
    assert polls_after_open <= 2, polls_after_open
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


def test_an_open_gate_costs_one_stat_per_cache_period_not_one_per_request(opts, monkeypatch):
    """The hot path on a ready master is a clock read and a compare: the readiness file is
    looked at once per ``cache_for`` (here the clock never moves: once for every request)."""
    beat = time.monotonic()
    ReadinessWriter(writer(opts).path, interval=0.5, clock=lambda: beat).publish({"ready": True})
    g = gatemod.Gate().for_opts(opts)
    path = g.settings.readiness_path
    # the clock stands still at the engine's last heartbeat: fresh, and the cache never expires
    g.reader = ReadinessReader(path, g.settings.stale_after, clock=lambda: beat)
    stats = []
    real_stat = os.stat

    def counting_stat(p, *args, **kwargs):
        if p == path:
            stats.append(p)
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(readinessmod.os, "stat", counting_stat)
    worker = FakeWorker(opts)

    async def requests(n):
        for _ in range(n):
            await gatemod.gated_call(FakeWorker._handle_payload, worker, AES, g)

    run(requests(1000))
    assert len(worker.calls) == 1000
    assert len(stats) == 1


class Worker3007(FakeWorker):
    """Salt 3007.16's ``MWorker._handle_payload``: dispatches on ``enc`` alone; a top-level
    ``cmd`` plays no part (master.py ~1258). Its channel intercepts clear ``_auth`` loads
    before they get here and passes every other decrypted payload on whole, extra keys and
    all (channel/server.py ~230, ~275)."""

    async def _handle_payload(self, payload):
        if payload["enc"] == "clear":
            self.calls.append(("clear", payload["load"]))
        else:
            self.calls.append(("aes", payload["load"]))
        return {"ok": True}, {"fun": "send"}


def test_a_minion_payload_claiming_a_top_level_auth_cmd_does_not_pass_a_closed_gate(opts, polls):
    """Regression (red team 2026-12-07): ``is_auth`` took any payload with a top-level
    ``"cmd": "_auth"`` for Salt 3008's after-``_auth`` stats call. The outer envelope of a
    minion's request is plain msgpack the minion writes, so a minion added that key to an AES
    request and a closed gate (a removed master, one without quorum) served it on 3007."""

    class Worker(Worker3007):
        pass

    assert gatemod.install(Worker) is True
    writer(opts).publish({"ready": False, "reason": "this master was removed"})
    w = Worker(opts)
    forged = {"enc": "aes", "load": {"cmd": "_return", "id": "minion1"}, "cmd": "_auth"}
    ret, req_opts = run(w._handle_payload(forged))
    assert w.calls == []  # never reached Salt's handler
    assert req_opts == {"fun": "send_clear"} and "this master was removed" in ret
    assert polls  # held like any other request first
    forged_clear = {"enc": "clear", "load": {"cmd": "publish"}, "cmd": "_auth"}
    ret, _ = run(w._handle_payload(forged_clear))
    assert w.calls == [] and "this master was removed" in ret["error"]["message"]
    # Salt 3008's own stats call after an _auth (no enc, no load: nothing to serve) and a
    # real clear _auth still pass at once.
    polls.clear()
    run(w._handle_payload(AUTH))
    assert w.calls == [("clear", AUTH["load"])] and polls == []
