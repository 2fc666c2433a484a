"""Salt 3008's core request gate, opened once ours opens (``master/coregate.py``).

The real-master check is ``tests/scenarios/test_nothing_shared.py::
test_a_job_published_after_the_full_restart_is_answered`` on 3008.4, which failed on every run
before the engine opened Salt's gate. These check the rule fast: once, only when ours is open,
never with ``core_gate: false`` or ``gate: false``, and across a fork as between the master's
engine process and its request workers.
"""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest
import salt.master

from saltext_raft.master import coregate
from saltext_raft.master import service as service_mod
from saltext_raft.master.coregate import CoreGate
from tests.unit.master.services import ServiceCluster

IDS = ("m1", "m2", "m3")


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, opts):
        self.calls.append(opts)


def test_it_opens_a_closed_gate_once_and_marks_salt_ready_once():
    event = multiprocessing.Event()
    marks = Recorder()
    gate = CoreGate({"id": "m1"}, "m1", find_event=lambda: event, mark_ready=marks)
    assert gate.outcome == ""
    assert gate.on_ready() == "opened"
    assert event.is_set() and len(marks.calls) == 1
    event.clear()  # whatever Salt does later, we act once
    assert gate.on_ready() == "opened"
    assert not event.is_set() and len(marks.calls) == 1


def test_an_open_gate_is_left_alone_and_an_absent_one_is_reported():
    event = multiprocessing.Event()
    event.set()
    marks = Recorder()
    assert CoreGate({}, "m1", find_event=lambda: event, mark_ready=marks).on_ready() == (
        "already open"
    )
    assert not marks.calls
    assert CoreGate({}, "m1", find_event=lambda: None, mark_ready=marks).on_ready() == "absent"
    assert not marks.calls


def test_a_sentinel_that_cannot_be_written_does_not_undo_the_opening(caplog):
    event = multiprocessing.Event()

    def refuse(opts):
        raise PermissionError("read-only cachedir")

    gate = CoreGate({}, "m1", find_event=lambda: event, mark_ready=refuse)
    assert gate.on_ready() == "opened" and event.is_set()
    assert "cannot write Salt's readiness sentinel" in caplog.text


def _open_in_child(event) -> None:
    CoreGate({}, "child", find_event=lambda: event, mark_ready=lambda opts: None).on_ready()


def test_the_engine_process_opens_the_event_the_workers_inherited():
    # As on a master: the event is made in the parent, then the engine process is forked.
    ctx = multiprocessing.get_context("fork")
    event = ctx.Event()
    child = ctx.Process(target=_open_in_child, args=(event,))
    child.start()
    try:
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
    assert event.wait(5), "the parent (a request worker's view) does not see the event set"


# --- wired into the engine service -------------------------------------------------------------
@pytest.fixture
def salt_core_gate(monkeypatch):
    """Salt 3008's gate as ``Master.populate_secrets`` makes it, and core consensus 'running'."""
    event = multiprocessing.Event()
    monkeypatch.setitem(salt.master.SMaster.secrets, "cluster_ready", {"event": event})
    monkeypatch.setattr(service_mod, "core_consensus_active", lambda opts: True)
    # Salt's sentinel writer (salt.cluster exists on 3008 only): not this test's subject.
    monkeypatch.setattr(coregate, "_mark_salt_ready", lambda opts: None)
    return event


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_the_service_opens_salts_gate_only_after_its_own_opens(tmp_path, salt_core_gate):
    seen_before_open = []

    async def main():
        async with ServiceCluster(tmp_path) as sc:
            # Every readiness evaluation made before any of ours opened (the three services
            # share one event here) saw Salt's gate still closed.
            for nid in IDS:
                svc = sc.services[nid]
                original = svc.update_readiness

                def watched(original=original):
                    if not any(s.ready for s in sc.services.values()):
                        seen_before_open.append(salt_core_gate.is_set())
                    original()

                svc.update_readiness = watched
            await sc.until("every gate open", lambda: all(sc.gate_open(n) for n in IDS))
            await sc.until("Salt's core gate open", salt_core_gate.is_set)
            outcomes = sorted(sc.services[n].status()["engine"]["salt_core_gate"] for n in IDS)
            # One process holds all three services here, so one opened it and the others
            # found it open; on masters each engine has its own master's event.
            assert outcomes.count("opened") == 1, outcomes
            assert set(outcomes) <= {"opened", "already open"}, outcomes

    run(main())
    assert seen_before_open and True not in seen_before_open


@pytest.mark.parametrize("options", [{"core_gate": False}, {"gate": False}])
def test_core_gate_false_or_our_gate_off_leaves_salts_gate_alone(tmp_path, salt_core_gate, options):
    async def main():
        async with ServiceCluster(tmp_path, **options) as sc:
            await sc.until("every service ready", lambda: all(sc.services[n].ready for n in IDS))
            for nid in IDS:
                assert sc.services[nid].status()["engine"]["salt_core_gate"] is None

    run(main())
    assert not salt_core_gate.is_set()
