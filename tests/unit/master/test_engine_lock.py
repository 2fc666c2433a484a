"""One engine per Raft storage: the engine holds a lock on its state directory, and a second
engine (or the offline recovery while the engine runs) is refused with the holder's pid."""

from __future__ import annotations

import logging
import os

import pytest

from saltext_raft.engines import raft as raft_engine
from saltext_raft.master.bootepoch import EPOCH_FILENAME
from saltext_raft.master.config import from_opts
from saltext_raft.master.fileutil import LockHeld
from saltext_raft.master.fileutil import ProcessLock
from saltext_raft.master.service import RaftService
from saltext_raft.transport.crypto import MAX_EPOCH

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


def test_an_epoch_file_at_the_last_epoch_stops_the_engine_with_the_reason(tmp_path, caplog):
    """The next boot after the last epoch (2**63 - 1) has none left: the engine exits 2 with a
    line that names the file and the way out, like every other refusal at start (it used to die
    with a traceback ending in a bare ValueError)."""
    opts = {"cachedir": str(tmp_path), "id": "m1", "cache": "localfs"}
    cfg = from_opts(opts, OPTIONS, load_secret=False)
    os.makedirs(cfg.state_dir, mode=0o700)
    epoch_file = os.path.join(cfg.state_dir, EPOCH_FILENAME)
    with open(epoch_file, "w", encoding="ascii") as fh:
        fh.write(f"{MAX_EPOCH}\n")
    raft_engine.__opts__ = opts
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
            raft_engine.start(**OPTIONS, secret_file=_secret(tmp_path))
    finally:
        del raft_engine.__opts__
    assert info.value.code == 2
    assert "not starting" in caplog.text and epoch_file in caplog.text
    assert "Remove the file" in caplog.text
