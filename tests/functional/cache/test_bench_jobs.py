"""``bench jobs`` end to end on a tiny load: it runs, both job caches report coherent figures,
the third node looks up the whole job, and no node process is left behind. (The figures
themselves are for docs/benchmarks.md.)"""

from __future__ import annotations

import json

from tests.childpython import run_python
from tests.functional.cache.test_bench_cache import RUN_ID
from tests.functional.cache.test_bench_cache import RUN_MARK
from tests.functional.cache.test_bench_cache import node_pids

SMALL = ["--jobs", "2", "--minions", "30", "--writers", "4", "--procs", "2", "--lookups", "2"]


def test_bench_jobs_small_run_reports_both_job_caches_and_cleans_up():
    proc = run_python(
        ["-m", "saltext_raft.bench", "jobs", "--json", *SMALL], timeout=180, **{RUN_MARK: RUN_ID}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for name in ("raft", "local_cache"):
        phase = result[name]
        assert phase["errors"] == 0 and phase["returns"] == 2 * 30, phase
        lat = phase["latency_ms"]
        assert lat["p50"] <= lat["p99"] <= lat["max"], phase
        assert phase["lookup"]["returns_in_job"] == 30 and phase["lookup"]["lookups"] == 2
    assert result["ratio"] > 0 and result["met"] == (result["ratio"] >= result["target_ratio"])
    writes = sum(n["batching"]["writes"] for n in result["nodes"].values())
    assert writes >= 2 * 30  # at least one replicated write per return went through the nodes
    assert not node_pids()
