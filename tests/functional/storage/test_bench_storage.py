"""``bench storage`` end to end on a tiny log: it runs, and its figures are coherent."""

import json

import pytest

pytest.importorskip("salt.cache")

from saltext_raft.bench import storage


def test_bench_storage_small_run_reports_every_length(tmp_path, capsys):
    argv = [
        "--json",
        "--cachedir",
        str(tmp_path),
        "--points",
        "128,512",
        "--batch",
        "64",
        "--probe-batches",
        "6",
        "--latency-saves",
        "3",
        "--schemes",
        "segments",
    ]
    assert storage.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    append = result["segments"]["append"]
    assert set(append) == {"128", "512", "max_over_min"}
    for point in (128, 512):
        low, high = append[str(point)]["log_length_while_timed"]
        # each log is timed near its length: regrown once it doubles
        assert low == point and point < high <= 2 * point + 64
        assert append[str(point)]["us_per_entry"] > 0
    assert append["max_over_min"] >= 1.0
    # the last log (512 grown + 6 timed batches) is what is reopened and truncated
    assert result["segments"]["reopen_entries"] == 512 + 6 * 64
    assert result["segments"]["bytes_written_per_entry"] > 100
