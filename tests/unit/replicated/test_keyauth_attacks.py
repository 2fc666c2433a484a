"""Attacks on Salt 3007's ``_auth`` wrapper (``keys: replicate``): unauthenticated minions
naming new ids while this master cannot confirm key states with the cluster."""

from __future__ import annotations

import os

import pytest

from saltext_raft.replicated import keyauth
from saltext_raft.replicated.driver import EngineClient
from tests.unit.replicated.test_keyauth import Channel
from tests.unit.replicated.test_keyauth import opts_for


@pytest.fixture
def channel_cls():
    class Wrapped(Channel):
        pass

    keyauth.install(Wrapped)
    yield Wrapped
    keyauth.uninstall(Wrapped)


@pytest.fixture
def engine_calls(monkeypatch):
    """``keys.sync`` as the engine answers it; each call recorded. ``answer(request)`` returns
    the answer or raises (a socket timeout stands for a sync that took the whole wait)."""
    calls = []

    def call(self, request, timeout):
        calls.append(request["minion"])
        return engine_calls.answer(request)

    def engine_calls():
        return calls

    engine_calls.answer = lambda request: (_ for _ in ()).throw(TimeoutError("timed out"))
    monkeypatch.setattr(EngineClient, "call", call)
    monkeypatch.setattr(keyauth, "_clients", {})
    monkeypatch.setattr(keyauth, "_held_until", [0.0])
    monkeypatch.setattr(keyauth, "HOLD_OFF", 60.0)  # the flood below fits in it on any machine
    return engine_calls


def test_a_flood_of_new_ids_without_quorum_holds_one_worker_wait_not_one_per_id(
    tmp_path,
    channel_cls,  # pylint: disable=redefined-outer-name
    engine_calls,  # pylint: disable=redefined-outer-name
):
    """Without quorum each ``keys.sync`` takes its whole wait (3 s) in a request worker; a
    minion naming new ids would keep every worker waiting. After one unconfirmed sync the
    other new ids are refused at once for a short while, nothing written."""
    opts = opts_for(tmp_path)
    ch = channel_cls(opts)
    answers = [ch._auth({"id": f"flood{i}", "pub": "PEM"}) for i in range(20)]
    assert all(isinstance(a, str) and "cannot confirm" in a for a in answers)
    assert engine_calls() == ["flood0"]
    assert ch.calls == []
    assert os.listdir(os.path.join(opts["pki_dir"], "minions_pre")) == []


def test_an_id_the_engine_rejects_does_not_hold_off_other_minions(
    tmp_path,
    channel_cls,  # pylint: disable=redefined-outer-name
    engine_calls,  # pylint: disable=redefined-outer-name
):
    """A minion whose id the engine refuses (``rejected``) must not make this master refuse
    every new minion for a while."""

    def answer(request):
        if request["minion"] == "bad":
            return {"ok": False, "error": {"code": "rejected", "message": "not a valid id"}}
        return {"ok": True, "result": {"keys": None, "denied_keys": None}}

    engine_calls.answer = answer
    opts = opts_for(tmp_path)
    ch = channel_cls(opts)
    assert isinstance(ch._auth({"id": "bad", "pub": "PEM"}), str)
    assert ch._auth({"id": "web1", "pub": "PEM"}) == {"enc": "clear", "load": {"ret": True}}
    assert engine_calls() == ["bad", "web1"]
