"""The readiness file fails closed: only a live engine's fresh heartbeat of this boot opens the
gate, whatever the wall clock or the file's mtime say (issue 18, L8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from saltext_raft.master import readiness
from saltext_raft.master.readiness import ReadinessReader
from saltext_raft.master.readiness import ReadinessWriter

WRITE_AS_A_CHILD = (
    "import sys\n"
    "from saltext_raft.master.readiness import ReadinessWriter\n"
    "ReadinessWriter(sys.argv[1]).publish({'ready': True, 'reason': 'ready'})\n"
)


def test_a_dead_engine_with_the_wall_clock_stepped_back_leaves_the_gate_closed(tmp_path):
    """Regression (L8): the reader judged freshness by ``time.time() - mtime``; with the engine
    dead and the wall clock stepped back one hour, the last "ready" looked fresh for an hour."""
    path = str(tmp_path / "ready")
    # The engine: a process that publishes "ready" and dies.
    subprocess.run(
        [sys.executable, "-c", WRITE_AS_A_CHILD, path],
        check=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    with open(path, encoding="utf-8") as fh:
        assert json.load(fh)["ready"] is True
    # The wall clock steps back an hour: every file written "now" carries an mtime an hour
    # ahead of the new wall clock. Same effect for the reader: put the mtime an hour ahead.
    future = time.time() + 3600
    os.utime(path, (future, future))
    reader = ReadinessReader(path, stale_after=4.0, cache_for=0.0)
    assert reader.is_open() is False
    assert "is gone" in reader.reason


def test_a_live_engine_whose_heartbeat_stopped_closes_the_gate_whatever_the_mtime(tmp_path):
    path = str(tmp_path / "ready")
    clock = [100.0]
    ReadinessWriter(path, clock=lambda: clock[0]).publish({"ready": True})
    future = time.time() + 3600
    os.utime(path, (future, future))
    reader = ReadinessReader(path, stale_after=4.0, cache_for=0.0, clock=lambda: clock[0])
    assert reader.is_open()
    clock[0] += 5
    assert not reader.is_open()
    assert "no heartbeat for 5s" in reader.reason


def test_a_file_without_heartbeat_or_from_another_boot_is_not_believed(tmp_path, monkeypatch):
    path = str(tmp_path / "ready")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"ready": True, "pid": os.getpid()}, fh)  # the old format: mtime only
    reader = ReadinessReader(path, cache_for=0.0)
    assert not reader.is_open()
    assert "no heartbeat" in reader.reason
    ReadinessWriter(path).publish({"ready": True})
    assert reader.is_open()
    monkeypatch.setattr(readiness, "BOOT_ID", "another-boot")
    assert not reader.is_open()
    assert "before the last reboot" in reader.reason


def test_a_readiness_file_of_another_user_is_ignored(tmp_path):
    path = str(tmp_path / "ready")
    ReadinessWriter(path).publish({"ready": True})
    reader = ReadinessReader(path, cache_for=0.0)
    assert reader.is_open()
    os.chown(path, 65534, 65534)
    assert not reader.is_open()
    assert "owned by uid 65534" in reader.reason


def test_heartbeat_rewrites_the_stamp_every_half_interval(tmp_path):
    path = str(tmp_path / "ready")
    clock = [0.0]
    wr = ReadinessWriter(path, interval=1.0, clock=lambda: clock[0])
    wr.publish({"ready": True})
    clock[0] = 0.4
    wr.heartbeat()
    with open(path, encoding="utf-8") as fh:
        assert json.load(fh)["heartbeat"] == 0.0  # not due yet
    clock[0] = 0.6
    wr.heartbeat()
    with open(path, encoding="utf-8") as fh:
        body = json.load(fh)
    assert body["heartbeat"] == 0.6 and body["ready"] is True and body["pid"] == os.getpid()
