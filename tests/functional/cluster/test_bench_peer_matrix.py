"""``bench cluster --peer-matrix`` end to end in its quickest form: the concurrency sweep (ours
and PySyncObj at every level) and the etcd section (three etcd members and three of our nodes,
one external client). Structure and committed writes only, never timings.

Neither PySyncObj (the bench extra) nor etcd (Debian's etcd-server) is installed by the tests
extra, and CI installs neither: without them these tests skip, saying so, in CI as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("zmq")

from saltext_raft.bench import cluster
from saltext_raft.bench import etcd
from saltext_raft.bench import extclient
from saltext_raft.bench import sweep


def _run(capsys, *args) -> dict:
    assert cluster.main(["--peer-matrix", "--quick", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _processes_under(path: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``path``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if path.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_sweep_runs_both_systems_and_the_big_log_at_every_level(tmp_path, capsys):
    if sweep.pysyncobj_missing(sys.executable):
        pytest.skip("pysyncobj is not installed (the bench extra); CI does not install it")
    result = _run(capsys, "--no-etcd", "--workdir", str(tmp_path))
    assert "etcd" not in result and "ours" not in result  # only the sweep ran
    levels = result["sweep"]["levels"]
    big = result["sweep"]["big_log_entries"]
    assert big == 20_000  # --quick's size of the big log
    assert [lv["outstanding"] for lv in levels] == list(sweep.LEVELS)
    for lv in levels:
        assert lv["pysyncobj"]["conf"] == list(sweep.pysyncobj_best(lv["outstanding"]))
        # the big-log cluster really held the big log while it was loaded
        assert lv["big_log"]["log_entries"]["before_loads"] >= big, lv["big_log"]
        assert lv["big_log"]["log_entries"]["after_loads"] >= big, lv["big_log"]
        assert lv["big_log_over_empty"] == round(
            lv["big_log"]["per_second"] / lv["ours"]["per_second"], 3
        )
        for side in ("ours", "pysyncobj", "big_log"):
            runs = lv[side]["runs"]
            assert len(runs) == 1
            assert all(r["committed"] > 0 for r in runs), (side, lv["outstanding"], runs)
            assert lv[side]["outcomes"]["committed"] == sum(r["committed"] for r in runs)
        ratio = lv["ours"]["per_second"] / lv["pysyncobj"]["per_second"]
        assert lv["throughput_ours_over_pysyncobj"] == round(ratio, 3)
    target = result["sweep"]["target"]
    assert target["value"] == min(lv["throughput_ours_over_pysyncobj"] for lv in levels)
    big_target = result["sweep"]["big_log_target"]
    assert big_target["value"] == min(lv["big_log_over_empty"] for lv in levels)
    for lv in levels:  # 3 of ours, 3 of PySyncObj, 3 big-log per level, all stopped by PID
        assert len(lv["pids"]) == 9
        for pid in lv["pids"]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    assert _processes_under(str(tmp_path)) == []


def test_etcd_section_drives_both_clusters_and_stops_every_process(tmp_path, capsys):
    if etcd.etcd_binary() is None:
        pytest.skip(etcd.MISSING + "; CI does not install it, so this skips there too")
    result = _run(capsys, "--no-sweep", "--workdir", str(tmp_path))
    section = result["etcd"]
    assert section["timing"] == {"heartbeat_ms": 50, "election_ms": 300}
    for side in ("ours", "etcd"):
        lat, fo = section[side]["latency"], section[side]["failover"]
        (run,) = lat["runs"]
        assert run["committed"] > 0 and run["last_key_read_back"] is True, (side, run)
        assert lat["committed"] == run["committed"]
        assert fo["trials"] == 1 and fo["acknowledged"] == 1, (side, fo)
        (trial,) = fo["all"]
        # a survivor, not the killed leader, acknowledged the write after the kill
        assert trial["acked_by"] not in (None, trial["killed"]), trial
        with pytest.raises(ProcessLookupError):
            os.kill(trial["pid"], 0)
    assert set(section["ratios_ours_over_etcd"]) == {"latency_p50", "latency_p99", "failover_p50"}
    assert section["ratios_ours_over_etcd"]["latency_p50"] == round(
        section["ours"]["latency"]["p50_ms"] / section["etcd"]["latency"]["p50_ms"], 3
    )
    assert _processes_under(str(tmp_path)) == []


def test_etcd_section_says_in_one_line_why_it_is_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(etcd, "etcd_binary", lambda name="etcd": None)
    o = cluster.build_parser().parse_args(["--quick"])
    out = extclient.section(o, str(tmp_path))
    assert out == {"skipped": etcd.MISSING}
    assert "\n" not in out["skipped"] and "etcd-server" in out["skipped"]
    assert os.listdir(tmp_path) == []  # nothing was started


def test_a_bad_sweep_level_is_refused_with_a_clear_error(capsys):
    for bad in ("0", "1,x", ""):
        with pytest.raises(SystemExit):
            cluster.build_parser().parse_args(["--sweep-levels", bad])
        assert "positive integers" in capsys.readouterr().err


def test_a_bad_big_log_size_is_refused_with_a_clear_error(capsys):
    for bad in ("-1", "many"):
        with pytest.raises(SystemExit):
            cluster.build_parser().parse_args(["--big-log", bad])
        assert "0 or more" in capsys.readouterr().err
    assert cluster.build_parser().parse_args(["--big-log", "0"]).big_log == 0


def test_pysyncobj_node_refuses_an_unknown_setting():
    if sweep.pysyncobj_missing(sys.executable):
        pytest.skip("pysyncobj is not installed (the bench extra); CI does not install it")
    done = subprocess.run(
        [sys.executable, "-m", "saltext_raft.bench.pysyncobj_node", "--self", "127.0.0.1:1",
         "--partners", "", "--conf", "noSuchSetting=1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "noSuchSetting=1" in done.stderr
