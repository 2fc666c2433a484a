"""One engine per Raft storage: the engine holds a lock on its state directory, and a second
engine (or the offline recovery while the engine runs) is refused with the holder's pid."""

from __future__ import annotations

import logging
import os

import pytest

from saltext_raft.engines import raft as raft_engine
from saltext_raft.integration.config import from_opts
from saltext_raft.integration.fileutil import LockHeld
from saltext_raft.integration.fileutil import ProcessLock
from saltext_raft.integration.service import RaftService

OPTIONS = {"peers": {"m1": "127.0.0.1:47101", "m2": "127.0.0.1:47102"}}


def test_a_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = str(tmp_path / "state" / "engine.lock")
    with ProcessLock(path):
        with pytest.raises(LockHeld) as err:
            ProcessLock(path).acquire()
        assert err.value.pid == os.getpid() and err.value.path == path
    with ProcessLock(path):  # released on exit: it can be taken again
        pass


def test_the_engine_does_not_start_on_storage_another_process_owns(tmp_path):
    opts = {"cachedir": str(tmp_path), "id": "m1"}
    cfg = from_opts(opts, OPTIONS, load_secret=False)
    service = RaftService(opts, cfg)
    with ProcessLock(cfg.lock_path):
        with pytest.raises(LockHeld):
            service.run()
    assert service.runtime is None  # refused before any storage or socket was opened


def test_the_engine_logs_why_it_did_not_start(tmp_path, caplog):
    opts = {"cachedir": str(tmp_path), "id": "m1"}
    cfg = from_opts(opts, OPTIONS, load_secret=False)
    raft_engine.__opts__ = opts
    try:
        with ProcessLock(cfg.lock_path), caplog.at_level(logging.ERROR):
            with pytest.raises(SystemExit):
                raft_engine.start(**OPTIONS, secret_file=_secret(tmp_path))
    finally:
        del raft_engine.__opts__
    assert f"process {os.getpid()} holds {cfg.lock_path}" in caplog.text
    assert "a raft engine is already running on this master's Raft storage" in caplog.text


def _secret(tmp_path) -> str:
    path = tmp_path / "raft.secret"
    path.write_text("ab" * 32)
    os.chmod(path, 0o600)
    return str(path)
