"""Cluster benchmark: ``python -m saltext_raft bench cluster [--quick] [--json]``.

Three node processes on loopback with durable storage (``python -m saltext_raft node``: zmq
transport with encryption, CacheStore over Salt's localfs cache with fsync), 100-byte payloads:

(a) commit latency p50/p99 with one proposal outstanding;
(b) throughput with many proposals outstanding (``--outstanding``, default 1000), and the
    outcome of every such proposal by kind (``outcomes``: committed, overloaded = refused at
    once by backpressure, timeout, other);
(c) throughput once the log holds ``--log-entries`` (default 100k) entries, against (b);
(d) failover: SIGKILL the leader, time until a new leader has committed an entry of its term
    (polled every 10 ms on the survivors' control channels), ``--trials`` times, p50/p99;
(e) the same against PySyncObj (3 processes, its defaults: in-memory log, no fsync), with our
    figure divided by theirs; and, where Salt 3008 is installed, its core Raft driven in one
    process (section ``salt_core``: one process, in-memory transport, for reference only — not
    a like-for-like comparison; see bench/saltcore.py).

The peer matrix (``--peer-matrix`` runs only it):

(f) ``sweep``: throughput at 1, 100, 1,000 and 20,000 outstanding (``--sweep-levels``), ours
    against PySyncObj at its best settings per level, alternating, our figure over theirs per
    level (bench/sweep.py);
(g) ``etcd``: three etcd members (Debian's ``etcd-server``; skipped with one line without
    ``etcd``) and three of our nodes, both driven by one external client: sequential put
    latency to the leader and failover to the next acknowledged write (bench/extclient.py).

Load runs inside the leader process (the node's control op ``load``), for both systems, so no
client round trip is measured. Every loop is bounded in count and in time. Targets are reported,
never asserted. Figures and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from saltext_raft.bench import extclient
from saltext_raft.bench import saltcore
from saltext_raft.bench import sweep
from saltext_raft.bench.clusters import SyncObjCluster
from saltext_raft.bench.clusters import log_size
from saltext_raft.bench.clusters import ours_leader
from saltext_raft.bench.figures import OUTCOMES
from saltext_raft.bench.figures import outcomes
from saltext_raft.bench.procs import NodeProc
from saltext_raft.bench.procs import ProcCluster

TARGETS = {
    "latency_p50_ms": 1.0,
    "latency_p99_ms": 5.0,
    "throughput_ratio_vs_pysyncobj": 2.0,
    "big_log_throughput_ratio": 0.9,
    "failover_p50_s": 0.5,
    "failover_p99_s": 1.0,
}


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def failover(cluster, find_leader, trials: int, budget: float) -> dict:
    times = []
    start = time.monotonic()
    for _ in range(trials):
        if time.monotonic() - start > budget:
            break
        old = find_leader(cluster, 30.0)
        st = old.call("status")
        old_term, old_commit = st["term"], st["commit_index"]
        # Kill only once every node has committed the leader's entries: all connected and
        # caught up. Killing a leader 0.4 s after start, before its peers' connections to each
        # other were up, timed zmq's reconnect backoff, not an election.
        cluster.wait(
            "every node to have caught up with the leader before the kill",
            lambda c=old_commit: (
                len(sts := cluster.statuses()) == len(cluster.nodes)
                and all(s["commit_index"] >= c for s in sts.values())
            ),
            30.0,
        )
        old.kill()
        t0 = time.monotonic()
        find_leader(cluster, 30.0, exclude_term=old_term, min_commit=old_commit)
        times.append(time.monotonic() - t0)
        old.start()
        # let the restarted node rejoin as a follower before the next kill
        cluster.wait(
            f"{old.id} to follow a leader again",
            lambda o=old: (o.try_status() or {}).get("leader") not in (None, "", "None"),
            30.0,
        )
    return {
        "trials": len(times),
        "p50_s": pct(times, 0.5),
        "p99_s": pct(times, 0.99),
        "max_s": max(times) if times else None,
        "all_s": [round(t, 4) for t in times],
    }


def one_run(leader: NodeProc, o, status_of) -> dict:
    """(a), (b) and (c) on one fresh cluster: latency and throughput on an (almost) empty log,
    then fill the log to --log-entries and measure throughput again."""
    lat = leader.call("load", count=o.latency_count, outstanding=1, size=o.size, duration=o.seconds)
    thr = leader.call(
        "load", count=o.throughput_count, outstanding=o.outstanding, size=o.size, duration=o.seconds
    )
    loads = [thr]
    t0 = time.monotonic()
    while status_of(leader) < o.log_entries and time.monotonic() - t0 < o.fill_seconds:
        need = o.log_entries - status_of(leader)
        r = leader.call(
            "load",
            count=min(need, 50_000),
            outstanding=o.outstanding,
            size=o.size,
            duration=o.seconds,
        )
        loads.append(r)
        if not r["committed"]:
            break
    big_entries = status_of(leader)
    big = leader.call(
        "load", count=o.throughput_count, outstanding=o.outstanding, size=o.size, duration=o.seconds
    )
    loads.append(big)
    return {
        "latency": lat,
        "throughput": thr,
        "big_log": dict(big, log_entries_before=big_entries),
        # the loads with --outstanding in flight: throughput, every fill, big log
        "outcomes": outcomes(*loads),
    }


def summarize(runs: list[dict]) -> dict:
    med = statistics.median
    return {
        # every load with many outstanding (throughput, fill, big log) of every run
        "outcomes": {k: sum(r["outcomes"][k] for r in runs) for k in OUTCOMES},
        "latency_p50_ms": med(r["latency"]["p50_ms"] for r in runs),
        "latency_p99_ms": med(r["latency"]["p99_ms"] for r in runs),
        "throughput_per_s": med(r["throughput"]["per_second"] for r in runs),
        "big_log": {
            "log_entries": med(r["big_log"]["log_entries_before"] for r in runs),
            "throughput_per_s": med(r["big_log"]["per_second"] for r in runs),
            # each run's (c)/(b) taken on one cluster minutes apart, then the median: less
            # sensitive to one slow run than the ratio of the two medians
            "over_empty_per_run_median": med(
                r["big_log"]["per_second"] / r["throughput"]["per_second"]
                for r in runs
                if r["throughput"]["per_second"]
            )
            if any(r["throughput"]["per_second"] for r in runs)
            else None,
        },
        "runs": runs,
    }


def bench_ours(o, workdir: str) -> dict:
    out = {}
    extra = o.node_args.split()
    # Failover with default snapshotting (restarts stay quick); the workloads never compact,
    # so that the log really holds --log-entries.
    c = ProcCluster(os.path.join(workdir, "fail"), node_args=extra, python=o.python)
    try:
        c.start_all()
        ours_leader(c)
        out["failover"] = failover(c, ours_leader, o.trials, o.failover_seconds)
    finally:
        c.close()
    runs = []
    for k in range(o.runs):
        c = ProcCluster(
            os.path.join(workdir, f"load{k}"),
            node_args=["--snapshot-interval", "0", *extra],
            python=o.python,
        )
        try:
            c.start_all()
            leader = ours_leader(c)
            runs.append(one_run(leader, o, log_size))
            runs[-1]["leader_runtime"] = leader.call("status")["runtime"]
        finally:
            c.close()
    out.update(summarize(runs))
    return out


def bench_pysyncobj(o, workdir: str) -> dict:
    out = {}
    c = SyncObjCluster(os.path.join(workdir, "pso-fail"), o.python)
    os.makedirs(c.workdir, exist_ok=True)
    try:
        c.start_all()
        c.leader()
        out["failover"] = failover(
            c, lambda cl, t, **kw: cl.leader(t, **kw), o.trials, o.failover_seconds
        )
    finally:
        c.close()
    runs = []
    for k in range(o.runs):
        c = SyncObjCluster(os.path.join(workdir, f"pso-load{k}"), o.python)
        os.makedirs(c.workdir, exist_ok=True)
        try:
            c.start_all()
            leader = c.leader()
            runs.append(one_run(leader, o, lambda n: n.call("status")["commit_index"]))
        finally:
            c.close()
    out.update(summarize(runs))
    return out


def ratios(ours: dict, theirs: dict) -> dict:
    def div(a, b):
        return round(a / b, 3) if a and b else None

    return {
        "throughput_ours_over_theirs": div(ours["throughput_per_s"], theirs["throughput_per_s"]),
        "big_log_throughput_ours_over_theirs": div(
            ours["big_log"]["throughput_per_s"], theirs["big_log"]["throughput_per_s"]
        ),
        "latency_p50_ours_over_theirs": div(ours["latency_p50_ms"], theirs["latency_p50_ms"]),
        "latency_p99_ours_over_theirs": div(ours["latency_p99_ms"], theirs["latency_p99_ms"]),
        "failover_p50_ours_over_theirs": div(
            ours["failover"]["p50_s"], theirs["failover"]["p50_s"]
        ),
        "failover_p99_ours_over_theirs": div(
            ours["failover"]["p99_s"], theirs["failover"]["p99_s"]
        ),
    }


def salt_core_section(o, ours: dict, workdir: str) -> dict:
    """Salt 3008's core Raft in one process, for reference (skipped with a reason without it)."""
    core = saltcore.section(o, os.path.join(workdir, "salt-core"))
    if "skipped" not in core and core.get("throughput_per_s"):
        core["ratios_ours_over_salt_core"] = ratios(ours, core)
    return core


def verdict(ours: dict, rat: dict | None) -> dict:
    big = (
        ours["big_log"]["throughput_per_s"] / ours["throughput_per_s"]
        if ours["throughput_per_s"]
        else None
    )
    got = {
        "latency_p50_ms": ours["latency_p50_ms"],
        "latency_p99_ms": ours["latency_p99_ms"],
        "throughput_ratio_vs_pysyncobj": rat["throughput_ours_over_theirs"] if rat else None,
        "big_log_throughput_ratio": round(big, 3) if big else None,
        "failover_p50_s": ours["failover"]["p50_s"],
        "failover_p99_s": ours["failover"]["p99_s"],
    }
    out = {}
    for name, target in TARGETS.items():
        value = got[name]
        higher_better = name.endswith("ratio") or "ratio_vs" in name
        met = None if value is None else (value >= target if higher_better else value <= target)
        out[name] = {"value": value, "target": target, "met": met}
    return out


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m saltext_raft bench cluster", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (default: a short table and the JSON)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a short form for CI (small counts, 5 failover trials)"
    )
    p.add_argument("--no-pysyncobj", action="store_true")
    p.add_argument(
        "--peer-matrix",
        action="store_true",
        help="run only the peer matrix: the concurrency sweep and the etcd section",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep")
    p.add_argument(
        "--sweep-levels",
        type=_levels,
        default=sweep.LEVELS,
        help="outstanding proposals per sweep level, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--sweep-count",
        type=int,
        default=100_000,
        help=f"sweep: most proposals per load ({sweep.PER_SLOT} per outstanding slot)",
    )
    p.add_argument("--sweep-min-count", type=int, default=500, help="sweep: fewest per load")
    p.add_argument(
        "--big-log",
        type=_non_negative,
        default=100_000,
        metavar="ENTRIES",
        help="sweep: also load, per level, a cluster of ours whose log holds this many entries "
        "(0: leave it out; default %(default)s)",
    )
    p.add_argument("--no-etcd", action="store_true", help="skip the etcd section")
    p.add_argument("--etcd-puts", type=int, default=2000, help="etcd section: puts per run")
    p.add_argument(
        "--etcd-seconds", type=float, default=30.0, help="etcd section: time bound of one run"
    )
    p.add_argument("--etcd-trials", type=int, default=5, help="etcd section: failovers each")
    p.add_argument(
        "--etcd-failover-seconds",
        type=float,
        default=180.0,
        help="etcd section: time bound of all failover trials",
    )
    p.add_argument(
        "--no-salt-core", action="store_true", help="skip the Salt 3008 core Raft reference"
    )
    p.add_argument(
        "--salt-core-log-entries",
        type=int,
        default=10_000,
        help="Salt core: log length for (c) with its storage (3x that without storage)",
    )
    p.add_argument(
        "--salt-core-seconds",
        type=float,
        default=420.0,
        help="Salt core: time bound of the whole section",
    )
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--workdir", default=None)
    p.add_argument(
        "--node-args",
        default="",
        help="extra arguments for our nodes, e.g. '--store memory' (diagnosis)",
    )
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--outstanding", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--latency-count", type=int, default=2000)
    p.add_argument("--throughput-count", type=int, default=50_000)
    p.add_argument("--log-entries", type=int, default=100_000)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15.0, help="time bound of one load run")
    p.add_argument("--fill-seconds", type=float, default=120.0)
    p.add_argument(
        "--failover-seconds", type=float, default=240.0, help="time bound of all failover trials"
    )
    return p


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of entries, 0 or more")
    return value


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,100,1000")
    return levels


def main(argv=None) -> int:
    o = build_parser().parse_args(argv)
    if o.quick:
        o.sweep_count, o.sweep_min_count = 4000, 200
        o.big_log = min(o.big_log, 20_000)
        o.etcd_puts, o.etcd_trials, o.etcd_seconds = 200, 1, 15.0
        o.runs, o.latency_count, o.throughput_count = 1, 300, 10_000
        o.log_entries, o.trials, o.seconds, o.fill_seconds, o.failover_seconds = (
            20_000,
            5,
            10.0,
            30.0,
            60.0,
        )
        o.salt_core_log_entries, o.salt_core_seconds = 1000, 45.0
    workdir = o.workdir or tempfile.mkdtemp(prefix="raft-bench-")
    started = time.time()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m saltext_raft bench cluster "
        + " ".join(argv if argv is not None else sys.argv[2:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "options": {k: v for k, v in vars(o).items() if k not in ("json",)},
    }
    if not o.no_sweep:
        result["sweep"] = sweep.section(o, workdir)
    if not o.no_etcd:
        result["etcd"] = extclient.section(o, workdir)
    if o.peer_matrix:
        return _finish(o, result, started)
    ours = bench_ours(o, workdir)
    result["ours"] = ours
    rat = None
    if not o.no_pysyncobj:
        try:
            theirs = bench_pysyncobj(o, workdir)
        except ImportError as exc:
            result["pysyncobj"] = {"skipped": str(exc)}
        else:
            result["pysyncobj"] = theirs
            rat = result["ratios"] = ratios(ours, theirs)
    if o.no_salt_core:
        result["salt_core"] = {"label": saltcore.LABEL, "skipped": "--no-salt-core"}
    else:
        result["salt_core"] = salt_core_section(o, ours, workdir)
    result["targets"] = verdict(ours, rat)
    return _finish(o, result, started)


def _peer_matrix_lines(result: dict) -> list[str]:
    lines = []
    sw = result.get("sweep") or {}
    for lv in sw.get("levels", []):
        theirs = (lv.get("pysyncobj") or {}).get("per_second")
        lines.append(
            f"sweep {lv['outstanding']:>6} outstanding: ours {lv['ours']['per_second']:>9.0f}/s"
            + (f"  pysyncobj {theirs:>9.0f}/s  ratio {lv['throughput_ours_over_pysyncobj']}"
               if theirs is not None else "")
            + (f"  big-log {lv['big_log']['per_second']:>9.0f}/s  over empty "
               f"{lv['big_log_over_empty']}" if "big_log" in lv else "")
        )  # fmt: skip
    et = result.get("etcd") or {}
    if "skipped" in et:
        lines.append(f"etcd section skipped: {et['skipped']}")
    elif et:
        for side in ("ours", "etcd"):
            lat, fo = et[side]["latency"], et[side]["failover"]
            lines.append(
                f"{side:5} put p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms  "
                f"failover p50 {fo['p50_s']} s"
            )
        lines.append(f"ours/etcd {et['ratios_ours_over_etcd']}")
    return lines


def _finish(o, result: dict, started: float) -> int:
    result["seconds"] = round(time.time() - started, 1)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    if not o.json:
        for line in _peer_matrix_lines(result):
            print(line, file=sys.stderr)
        for name in ("ours", "pysyncobj"):
            section = result.get(name) or {}
            if "outcomes" in section:
                kinds = "  ".join(f"{k}={v}" for k, v in section["outcomes"].items())
                print(f"{name + ' proposals':32} {kinds}", file=sys.stderr)
        for name, v in (result.get("targets") or {}).items():
            print(
                f"{name:32} {v['value']!s:>12}  target {v['target']:<6} met={v['met']}",
                file=sys.stderr,
            )
    print(json.dumps(result, default=str, indent=None if o.json else 1))
    return 0
