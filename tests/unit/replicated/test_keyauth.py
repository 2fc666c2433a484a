"""Salt 3007's ``_auth`` wrapped (``keys: replicate``): a minion whose key this master does not
have is confirmed with the cluster first; without an answer nothing is written."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from saltext_raft.replicated import keyauth


class Channel:
    """Stands for Salt's ReqServerChannel: its _auth writes a pending key for a new minion."""

    def __init__(self, opts):
        self.opts = opts
        self.calls = []

    def _auth(self, load, sign_messages=False, version=0):
        self.calls.append(load["id"])
        path = os.path.join(self.opts["pki_dir"], "minions_pre", load["id"])
        if not os.path.exists(os.path.join(self.opts["pki_dir"], "minions", load["id"])):
            with open(path, "w") as fh:
                fh.write(load["pub"])
        return {"enc": "clear", "load": {"ret": True}}


@pytest.fixture
def wrapped():
    class Wrapped(Channel):
        pass

    assert keyauth.install(Wrapped) is True
    assert keyauth.install(Wrapped) is False  # idempotent
    return Wrapped


def opts_for(tmp_path, keys="replicate"):
    pki = tmp_path / "pki"
    for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        (pki / sub).mkdir(parents=True, exist_ok=True)
    return {
        "pki_dir": str(pki),
        "cachedir": str(tmp_path / "cache"),
        "sock_dir": str(tmp_path),
        "engines": [{"raft": {"keys": keys}}],
        "open_mode": False,
        "id": "m2",
    }


class FakeEngine:
    """Answers ``keys.sync`` on the cache socket; ``accept`` writes the key file first, as
    the engine does when the log has the minion as accepted."""

    def __init__(self, path, pki, accept=True):
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.pki = pki
        self.accept = accept
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as rfile:
            for line in rfile:
                req = json.loads(line)
                self.requests.append(req)
                if self.accept:
                    with open(os.path.join(self.pki, "minions", req["minion"]), "w") as fh:
                        fh.write("PEM")
                answer = {"id": req["id"], "ok": True, "result": {"keys": "accepted"}}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self):
        for client in keyauth._clients.values():  # the worker's connection: ends serve()
            client.close()
        keyauth._clients.clear()
        self.sock.close()
        self.thread.join(5)


def test_a_missing_key_is_confirmed_by_the_engine_before_auth_runs(tmp_path, wrapped):
    opts = opts_for(tmp_path)
    engine = FakeEngine(str(tmp_path / "raft_cache.sock"), opts["pki_dir"])
    try:
        ch = wrapped(opts)
        assert ch._auth({"id": "web1", "pub": "PEM"}) == {"enc": "clear", "load": {"ret": True}}
    finally:
        engine.close()
    assert [r["op"] for r in engine.requests] == ["keys.sync"]
    assert engine.requests[0]["minion"] == "web1"
    assert not os.path.exists(os.path.join(opts["pki_dir"], "minions_pre", "web1"))


def test_without_an_answer_the_minion_is_refused_and_nothing_is_written(
    tmp_path, wrapped, monkeypatch
):
    monkeypatch.setattr(keyauth, "SYNC_TIMEOUT", 0.3)
    opts = opts_for(tmp_path)  # no engine listening on the socket
    ch = wrapped(opts)
    ret = ch._auth({"id": "web1", "pub": "PEM"})
    assert isinstance(ret, str) and "cannot confirm" in ret
    assert ch.calls == []
    assert os.listdir(os.path.join(opts["pki_dir"], "minions_pre")) == []


def test_a_key_known_here_needs_no_engine(tmp_path, wrapped, monkeypatch):
    monkeypatch.setattr(keyauth, "SYNC_TIMEOUT", 0.3)
    opts = opts_for(tmp_path)
    with open(os.path.join(opts["pki_dir"], "minions_rejected", "web1"), "w") as fh:
        fh.write("PEM")
    ch = wrapped(opts)
    ch._auth({"id": "web1", "pub": "PEM"})
    assert ch.calls == ["web1"]


def test_without_the_option_auth_is_salts(tmp_path, wrapped):
    opts = opts_for(tmp_path, keys=None)
    ch = wrapped(opts)
    ch._auth({"id": "web1", "pub": "PEM"})
    assert ch.calls == ["web1"]


def test_uninstall_restores_salts_auth(wrapped):
    assert keyauth.uninstall(wrapped) is True
    assert wrapped.__dict__["_auth"] is Channel._auth


def test_salts_request_channel_is_wrapped_on_salt_3007_only(tmp_path):
    import salt.channel.server  # pylint: disable=import-outside-toplevel

    cls = salt.channel.server.ReqServerChannel
    opts = opts_for(tmp_path)
    try:
        installed = keyauth.install_for_master(opts)
        assert installed is (not keyauth.salt_has_key_cache())
        assert getattr(cls._auth, "__saltext_raft_keyauth__", False) is installed
        assert keyauth.install_for_master(dict(opts, engines=[{"raft": {}}])) is False
    finally:
        keyauth.uninstall(cls)
    assert not getattr(cls._auth, "__saltext_raft_keyauth__", False)
