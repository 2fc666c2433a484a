"""``bench plot`` draws a PNG from bench cluster JSON, with or without the optional sections."""

from __future__ import annotations

import json

import pytest

from saltext_raft.bench import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _section(latency_ms: float, per_second: float, failover_s: float, entries: int) -> dict:
    return {
        "latency_p50_ms": latency_ms,
        "latency_p99_ms": latency_ms * 4,
        "throughput_per_s": per_second,
        "big_log": {"log_entries": entries, "throughput_per_s": per_second * 0.8},
        "failover": {"trials": 3, "p50_s": failover_s, "p99_s": failover_s * 2},
    }


def synthetic_result(salt_core: bool = True) -> dict:
    result = {
        "date": "2026-11-26T11:01:50+00:00",
        "options": {"quick": True},
        "machine": {"cpus": 2, "python": "3.11.7", "loadavg_at_start": [1.0, 1.0, 1.0]},
        "ours": _section(3.5, 30_000, 0.45, 100_000),
        "pysyncobj": _section(100.0, 7_000, 2.5, 100_000),
        "targets": {"latency_p50_ms": {"value": 3.5, "target": 1.0, "met": False}},
    }
    if salt_core:
        core = _section(8.0, 70, 1.1, 1000)
        core["in_memory"] = _section(0.04, 1600, 0, 3000)
        core["in_memory"].pop("failover")
        result["salt_core"] = dict(core, label="one process ...")
    return result


def _write(tmp_path, name: str, result: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(result))
    return str(path)


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000  # three panels of bars, not an empty canvas


def test_plot_from_synthetic_json_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out" / "cluster.png"
    src = _write(tmp_path, "run.json", synthetic_result())
    assert plot.main([src, "-o", str(out)]) == 0
    _assert_png(out)


def test_plot_handles_missing_and_skipped_sections(tmp_path):
    pytest.importorskip("matplotlib")
    old = synthetic_result(salt_core=False)  # an older JSON: no salt_core at all
    new = synthetic_result()
    new["pysyncobj"] = {"skipped": "No module named 'pysyncobj'"}
    new["salt_core"] = {"label": "...", "skipped": "not importable"}
    out = tmp_path / "cluster.png"
    files = [_write(tmp_path, "old.json", old), _write(tmp_path, "new.json", new)]
    assert plot.main([*files, "-o", str(out)]) == 0
    _assert_png(out)


def test_missing_and_skipped_sections_are_named_in_the_footnotes():
    result = synthetic_result(salt_core=False)
    result["pysyncobj"] = {"skipped": "no pysyncobj"}
    series, notes = plot.collect([("run.json", result)])
    assert [s["system"] for s in series] == ["ours"]
    assert any("PySyncObj" in n and "skipped: no pysyncobj" in n for n in notes)
    assert any("Salt 3008 core" in n and "not in this JSON" in n for n in notes)
    assert len(notes) == 2  # the in-memory variant is not named separately


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    src = _write(tmp_path, "run.json", synthetic_result())
    assert plot.main([src, "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
