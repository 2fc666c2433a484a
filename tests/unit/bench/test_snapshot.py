"""``bench snapshot`` on a tiny state: it runs, checks its encodings and restores, and reports."""

from __future__ import annotations

import json

import pytest

from saltext_raft.bench import snapshot


def test_a_small_run_reports_every_figure(capsys):
    argv = ["--json", "--minions", "40", "--sizes", "300,100,10", "--rounds", "2"]
    assert snapshot.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["keys"] == 120 and len(result["rounds"]) == 2
    median = result["median"]
    assert median["snapshot_bytes"] > 40 * 410
    for name, value in median.items():
        assert value >= 0, name
    # the gap is measured between 1 ms sleeps, so it is at least a millisecond
    assert median["longest_loop_gap_idle_ms"] >= 1.0


def test_the_encodings_are_compared(monkeypatch):
    real = snapshot.KVStateMachine.snapshot

    def off_by_one(self):
        return real(self) + b"\x00"

    monkeypatch.setattr(snapshot.KVStateMachine, "snapshot", off_by_one)
    with pytest.raises(AssertionError, match="other bytes"):
        snapshot.main(["--minions", "5", "--rounds", "1"])


def test_the_restored_state_is_compared(monkeypatch):
    def installs_nothing(self, data):
        return lambda: lambda: None

    monkeypatch.setattr(snapshot.KVStateMachine, "restore_later", installs_nothing)
    with pytest.raises(AssertionError, match="another state"):
        snapshot.main(["--minions", "5", "--rounds", "1"])


@pytest.mark.parametrize("argv", [["--sizes", "1,2"], ["--sizes", "a,b,c"], ["--minions", "0"]])
def test_bad_arguments_are_refused_with_a_message(argv, capsys):
    assert snapshot.main(argv) == 2
    assert "--" in capsys.readouterr().err
