"""The seam the request gate wraps, checked against the installed Salt (3007 and 3008).

``salt.master.MWorker._handle_payload(self, payload)`` is no public API (SALT-NOTES): the gate
relies on it being a coroutine method of ``MWorker`` itself, taking the payload, and on the
worker handing the request channel the bound method *after* the fork (so a class-level wrap
made in the master parent is what every worker serves). If a Salt release moves any of this,
these tests say so before a real master silently stops gating.
"""

from __future__ import annotations

import inspect

import pytest

from saltext_raft.master import gate

master = pytest.importorskip("salt.master")


def test_mworker_defines_handle_payload_as_a_coroutine_taking_the_payload():
    fn = master.MWorker.__dict__.get("_handle_payload")
    assert fn is not None, "MWorker no longer defines _handle_payload itself"
    assert inspect.iscoroutinefunction(fn), "MWorker._handle_payload is no longer a coroutine"
    assert list(inspect.signature(fn).parameters) == ["self", "payload"]


def test_the_worker_gives_the_request_channel_its_handle_payload_after_the_fork():
    bind = master.MWorker.__dict__.get("_MWorker__bind")
    assert bind is not None, "MWorker.__bind (where a worker starts serving) is gone"
    source = inspect.getsource(bind)
    # Looked up on the instance at bind time, in the forked worker: the class attribute then,
    # the gate's wrapper once installed in the parent.
    assert "post_fork(" in source and "self._handle_payload" in source, source


def test_the_gate_wraps_and_unwraps_the_real_method():
    class Worker(master.MWorker):  # a subclass: MWorker itself stays untouched for other tests
        pass

    original = master.MWorker._handle_payload
    assert gate.install(Worker) is True
    try:
        wrapped = Worker._handle_payload
        assert wrapped is not original and inspect.iscoroutinefunction(wrapped)
        assert wrapped.__wrapped_original__ is original
        assert gate.install(Worker) is False  # idempotent
    finally:
        assert gate.uninstall(Worker) is True
    assert Worker._handle_payload is original
