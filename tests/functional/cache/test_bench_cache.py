"""``bench cache`` end to end on a tiny load: it runs, every phase reports coherent figures,
and it leaves no node process behind. (The figures themselves are for docs/benchmarks.md.)"""

from __future__ import annotations

import json
import os
import uuid

from tests.childpython import run_python

#: Set in the environment of the benches this module runs, and so inherited by every process
#: they start: tells ours apart from those of anyone else running the bench on this host.
RUN_MARK = "SRT_BENCH_TEST_RUN"
RUN_ID = uuid.uuid4().hex

SMALL = [
    "--duration", "0.3", "--count", "40", "--writers", "4", "--procs", "2",
    "--fetches", "20", "--backend", "sqlite", "--import-minions", "5",
]  # fmt: skip


def run_bench(*args):
    return run_python(
        ["-m", "saltext_raft", "bench", "cache", *args], timeout=180, **{RUN_MARK: RUN_ID}
    )


def node_pids() -> set[int]:
    """Running ``bench.master_node`` and ``bench.instant_engine`` processes that this module's
    benches started (Linux /proc; those of other runs on the host do not carry our mark)."""
    mark = f"{RUN_MARK}={RUN_ID}".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read()
                if b"saltext_raft.bench.master_node" not in cmdline and (
                    b"saltext_raft.bench.instant_engine" not in cmdline
                ):
                    continue
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if mark in fh.read().split(b"\0"):
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


def test_bench_cache_small_run_reports_every_phase_and_cleans_up():
    proc = run_bench("--json", *SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    store = result["store"]
    assert store["errors"] == 0 and 0 < store["stores"] <= 4 * 40
    assert store["latency_ms"]["p50"] <= store["latency_ms"]["p99"] <= store["latency_ms"]["max"]
    assert result["store_plain_localfs"]["stores"] > 0
    instant = result["store_instant_engine"]
    assert instant["errors"] == 0 and 0 < instant["stores"] <= 4 * 40
    assert set(instant["cpu"]["node_ms_per_store"]) == set(result["nodes"])
    assert result["store_over_instant_engine"] > 0
    assert result["fetch"]["raft"]["p50_us"] > 0 and result["fetch"]["fetches"] == 20
    assert result["import"]["imported"] == 5 * 3  # grains, pillar and mine of each minion
    leaders = {n["leader"] for n in result["nodes"].values()}
    assert len(leaders) == 1 and leaders <= set(result["nodes"]), result["nodes"]
    assert not node_pids()  # every node process it started has exited


def test_bench_cache_text_output_names_the_targets():
    proc = run_bench(*SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "store: " in out and "targets 5000/s" in out
    assert "fetch: raft p50" in out and "import: 15 keys of 5 minions" in out
    assert "engines answering at once (no Raft)" in out


def test_bench_cache_no_instant_skips_the_writers_ceiling():
    proc = run_bench("--json", "--no-instant", *SMALL[:-2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert "store_instant_engine" not in result and "store_over_instant_engine" not in result
    assert result["store"]["stores"] > 0
