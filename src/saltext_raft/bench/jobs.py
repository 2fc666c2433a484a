"""``python -m saltext_raft.bench jobs [--json]``: the ``raft`` job cache under a burst of
returns, against Salt's ``local_cache`` on one master in the same run.

Setup: the three cache nodes of ``bench cache`` (``bench.master_node``: runtime + durable log +
zmq + the engine's cache service, i.e. the engine's cache code without the rest of a master),
and writer processes that play Salt's request workers receiving returns: each thread calls
Salt's own ``salt.utils.job.store_job`` (the master's sequence for one return: ``prep_jid``,
``save_load``, ``returner``) with the job cache loaded by Salt's returner loader. The writers
are spread over the three nodes, as minions are over the masters of a cluster. The baseline is
the same writers with ``master_job_cache: local_cache`` in one cachedir: one master, nothing
replicated.

Measures returns per second and per-return latency for ``--jobs`` jobs of ``--minions``
returns each (every writer thread returns for its share of every job's minions), and the
latency of what ``salt-run jobs.lookup_jid`` reads (``get_load`` + ``get_jid``) of one whole
job on the third node, which received none of that job's returns itself, against the same
reads from ``local_cache``. Everything is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import types

from saltext_raft.bench.saltwrites import Nodes
from saltext_raft.bench.saltwrites import pct
from saltext_raft.bench.saltwrites import start_writers
from saltext_raft.bench.saltwrites import wait_writable
from saltext_raft.replicated.config import BACKENDS
from saltext_raft.replicated.config import DEFAULT_BACKEND

#: issue 20: replicated returns/s at least this fraction of one master's ``local_cache``.
TARGET_RATIO = 0.5


def build_parser():
    p = argparse.ArgumentParser(prog="python -m saltext_raft.bench jobs")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--writers", type=int, default=32, help="concurrent writer threads in total")
    p.add_argument("--procs", type=int, default=4, help="writer processes (threads split evenly)")
    p.add_argument("--jobs", type=int, default=5, help="jobs published")
    p.add_argument("--minions", type=int, default=2000, help="returns per job")
    p.add_argument("--return-size", type=int, default=200, help="bytes of each return")
    p.add_argument("--lookups", type=int, default=20, help="lookups of a whole job timed")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help=f"local copy layout (raft_cache_backend; default: {DEFAULT_BACKEND}, as shipped)",
    )
    p.add_argument("--writer", help=argparse.SUPPRESS)  # internal: run one writer process
    return p


def job_opts(dir_: str, backend: str, job_cache: str) -> dict:
    from saltext_raft.bench.master_node import node_opts  # pylint: disable=import-outside-toplevel

    opts = node_opts(dir_, None, backend)
    opts.update(master_job_cache=job_cache, cache="localfs")
    return opts


def _returners(opts: dict):
    import salt.loader  # pylint: disable=import-outside-toplevel

    return types.SimpleNamespace(returners=salt.loader.returners(opts, {}))


def publish(opts: dict, jobs: int, minions: int) -> list[str]:
    """What the master does for each publish (a job id, the load with its minions)."""
    mm = _returners(opts)
    cache = opts["master_job_cache"]
    jids = []
    for j in range(jobs):
        jid = mm.returners[f"{cache}.prep_jid"](nocache=False, passed_jid=None)
        load = {"jid": jid, "fun": "test.echo", "arg": ["x"], "tgt": "*", "tgt_type": "glob",
                "user": "root"}  # fmt: skip
        mm.returners[f"{cache}.save_load"](jid, load, [f"m{j}-{i}" for i in range(minions)])
        jids.append(jid)
    return jids


# --- one writer process -------------------------------------------------------------------------
def writer_main(spec: dict) -> int:
    import salt.utils.job  # pylint: disable=import-outside-toplevel

    opts = job_opts(spec["dir"], spec["backend"], spec["job_cache"])
    mm = _returners(opts)
    value = "x" * spec["return_size"]
    results = {}
    go = threading.Event()

    def run(t):
        lat, errors = [], 0
        go.wait()
        deadline = time.monotonic() + spec["timeout"]
        first = time.time()
        for j, jid in enumerate(spec["jids"]):
            for i in spec["minions"][t]:
                if time.monotonic() >= deadline:
                    break
                load = {"jid": jid, "id": f"m{j}-{i}", "fun": "test.echo", "return": value,
                        "retcode": 0, "success": True}  # fmt: skip
                t0 = time.perf_counter()
                try:
                    if salt.utils.job.store_job(opts, load, mminion=mm) is False:
                        errors += 1
                except Exception:  # pylint: disable=broad-except
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t0)
        results[t] = {"lat": lat, "errors": errors, "first": first, "last": time.time()}

    threads = [threading.Thread(target=run, args=(t,)) for t in range(len(spec["minions"]))]
    for th in threads:
        th.start()
    print(json.dumps({"event": "ready"}), flush=True)
    sys.stdin.readline()
    go.set()
    for th in threads:
        th.join()
    print(json.dumps({"threads": list(results.values())}), flush=True)
    return 0


def returns_phase(dirs: list[str], args, job_cache: str, jids: list[str]) -> dict:
    """Every job's returns, by ``args.writers`` threads in ``args.procs`` processes; process
    ``i`` writes through ``dirs[i % len(dirs)]``'s master."""
    per_proc = [
        args.writers // args.procs + (i < args.writers % args.procs) for i in range(args.procs)
    ]
    shares, k = [], 0
    for threads in per_proc:  # minion indexes of each thread, every thread its own
        shares.append([list(range(k + t, args.minions, args.writers)) for t in range(threads)])
        k += threads
    specs = [
        {"dir": dirs[i % len(dirs)], "backend": args.backend, "job_cache": job_cache,
         "jids": jids, "minions": share, "return_size": args.return_size,
         "timeout": args.timeout}
        for i, share in enumerate(shares)
    ]  # fmt: skip
    procs = start_writers("jobs", specs)
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.timeout + 120)
        results.extend(json.loads(out.strip().splitlines()[-1])["threads"])
    lat = [x for r in results for x in r["lat"]]
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    return {
        "job_cache": job_cache,
        "returns": len(lat),
        "errors": sum(r["errors"] for r in results),
        "seconds": round(span, 3),
        "returns_per_s": round(len(lat) / span, 1) if span > 0 else 0.0,
        "latency_ms": {
            "p50": round(pct(lat, 0.5) * 1000, 3) if lat else None,
            "p99": round(pct(lat, 0.99) * 1000, 3) if lat else None,
            "max": round(max(lat) * 1000, 3) if lat else None,
        },
    }


def lookup_phase(opts: dict, jid: str, args) -> dict:
    """``get_load`` + ``get_jid`` of a whole job, as ``jobs.lookup_jid`` reads it."""
    mm = _returners(opts)
    cache = opts["master_job_cache"]
    lat, n = [], 0
    for _ in range(args.lookups):
        t0 = time.perf_counter()
        mm.returners[f"{cache}.get_load"](jid)
        n = len(mm.returners[f"{cache}.get_jid"](jid))
        lat.append(time.perf_counter() - t0)
    return {"returns_in_job": n, "lookups": len(lat),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2)}  # fmt: skip


def _wait_complete(opts: dict, jid: str, want: int, timeout: float) -> None:
    mm = _returners(opts)
    deadline = time.monotonic() + timeout
    while len(mm.returners["raft.get_jid"](jid)) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {jid} not complete on the third node within {timeout}s")
        time.sleep(0.1)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.writer:
        return writer_main(json.loads(args.writer))
    base = tempfile.mkdtemp(prefix="srt-jbench-", dir="/tmp")
    nodes = Nodes(base, backend=args.backend)
    result = {
        "benchmark": "jobs",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "setup": "3 cache node processes; writer processes calling salt.utils.job.store_job "
        f"with the job cache from Salt's returner loader; local copies in the {args.backend} "
        "layout; baseline: master_job_cache local_cache in one cachedir",
        "jobs": args.jobs,
        "minions_per_job": args.minions,
        "return_bytes": args.return_size,
        "target_ratio": TARGET_RATIO,
    }
    try:
        import salt.version  # pylint: disable=import-outside-toplevel

        result["salt"] = salt.version.__version__
        plain = os.path.join(base, "plain")
        os.makedirs(plain)
        local = job_opts(plain, args.backend, "local_cache")
        jids = publish(local, args.jobs, args.minions)
        result["local_cache"] = returns_phase([plain], args, "local_cache", jids)
        result["local_cache"]["lookup"] = lookup_phase(local, jids[-1], args)

        nodes.start()
        wait_writable(nodes.opts(nodes.ids[0]))
        first, third = (job_opts(nodes.dir(n), args.backend, "raft") for n in nodes.ids[::2])
        jids = publish(first, args.jobs, args.minions)
        dirs = [nodes.dir(n) for n in nodes.ids[:2]]  # the third node receives no return
        result["raft"] = returns_phase(dirs, args, "raft", jids)
        _wait_complete(third, jids[-1], result["raft"]["returns"] // args.jobs, args.timeout)
        result["raft"]["lookup"] = lookup_phase(third, jids[-1], args)
        result["ratio"] = round(
            result["raft"]["returns_per_s"] / max(result["local_cache"]["returns_per_s"], 1e-9), 3
        )
        result["met"] = result["ratio"] >= TARGET_RATIO
    finally:
        nodes.stop()
        result["nodes"] = {
            nid: {"leader": st.get("leader"), "batching": st["cache"].get("batching")}
            for nid, st in nodes.final.items()
        }
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        r, c = result["raft"], result["local_cache"]
        print(
            f"returns: raft {r['returns_per_s']}/s (p99 {r['latency_ms']['p99']} ms, errors "
            f"{r['errors']}) vs local_cache {c['returns_per_s']}/s (p99 "
            f"{c['latency_ms']['p99']} ms): x{result['ratio']} (target >= {TARGET_RATIO}: "
            f"{'met' if result['met'] else 'MISSED'})"
        )
        print(
            f"lookup of a job of {r['lookup']['returns_in_job']} returns: raft (third node) "
            f"p50 {r['lookup']['p50_ms']} ms vs local_cache p50 {c['lookup']['p50_ms']} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
