"""The request gate fails closed when it cannot be installed (issue 18, L8): through Salt's
real engine loader, as the master parent loads its engines before it creates its request
server."""

from __future__ import annotations

import pytest
import salt.config
import salt.loader

from saltext_raft.master import gate as gatemod


def master_opts(tmp_path, raft_options: dict) -> dict:
    opts = salt.config.DEFAULT_MASTER_OPTS.copy()
    opts.update(
        {
            "__role": "master",
            "cachedir": str(tmp_path / "cache"),
            "engines": [{"raft": raft_options}],
        }
    )
    return opts


def broken_install(worker_cls=None):
    raise AttributeError("type object 'MWorker' has no attribute '_handle_payload'")


def test_a_gate_that_cannot_be_installed_stops_the_master_before_it_serves(tmp_path, monkeypatch):
    """Regression (L8): the error was only logged, and the master went on to start its request
    server without the gate. Salt's loader swallows an ``Exception`` from ``__virtual__``; the
    refusal must get through it and out of ``start_engines`` (the request server is created
    after it)."""
    monkeypatch.setattr(gatemod, "install", broken_install)
    engines = salt.loader.engines(master_opts(tmp_path, {}), {}, {}, {})
    with pytest.raises(gatemod.GateNotInstalled) as info:
        _ = "raft.start" in engines  # the loader runs the module's __virtual__ here
    assert "could not install the request gate" in str(info.value)
    assert "gate: false" in str(info.value)


def test_with_the_gate_switched_off_a_failed_install_does_not_matter(tmp_path, monkeypatch):
    monkeypatch.setattr(gatemod, "install", broken_install)
    engines = salt.loader.engines(master_opts(tmp_path, {"gate": False}), {}, {}, {})
    assert "raft.start" in engines


def test_the_engine_loader_installs_the_gate(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gatemod, "install", lambda worker_cls=None: calls.append(1) or True)
    engines = salt.loader.engines(master_opts(tmp_path, {}), {}, {}, {})
    assert "raft.start" in engines
    assert calls == [1]
