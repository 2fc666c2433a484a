"""``python -m saltext_raft bench cache [--json]``: the ``raft`` Salt cache driver under load.

Setup: three cache nodes in separate processes (``bench.master_node``: runtime + durable
CacheStore + zmq transport + the engine's CacheService, i.e. the engine's cache code without
the rest of a Salt master), and writer processes that play Salt's request workers: each runs
threads calling ``salt.cache.Cache(opts).store`` through the real Salt loader and ``raft``
driver against one of the nodes (writers are spread over the three nodes, so two thirds of the
writes are forwarded by a follower to the leader).

Measures (a) ``cache.store`` throughput and latency with ``--writers`` concurrent writers of
``--value-size``-byte values for ``--duration`` seconds (or ``--count`` stores per writer);
(b) ``cache.fetch`` latency through the ``raft`` driver (which reads the local mirror) vs a
plain ``localfs`` cache holding the same data. Two ceilings run alongside (a): the same writers
through Salt's plain ``localfs`` driver (one master, nothing replicated), and, before the nodes
start, the same writers against engines that answer every write at once (``--no-instant``
skips it). Everything is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from saltext_raft.bench.procs import free_port
from saltext_raft.master.secret import generate
from saltext_raft.replicated import config as cacheconfig

TARGET_STORES_PER_S = 5000
TARGET_P99_MS = 20.0
#: Issue 21: a fetch through the driver costs no more than one through plain ``localfs``.
TARGET_FETCH_RATIO = 1.0


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m saltext_raft bench cache")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--writers", type=int, default=32, help="concurrent writer threads in total")
    p.add_argument("--procs", type=int, default=4, help="writer processes (threads split evenly)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of writing (bound)")
    p.add_argument("--count", type=int, default=5000, help="stores per writer (bound)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--fetches", type=int, default=2000)
    p.add_argument(
        "--mirror-dir",
        help="put each node's local copy (raft_cache_dir) under this directory, e.g. /dev/shm "
        "(default: under the node's cachedir, as shipped)",
    )
    p.add_argument(
        "--backend",
        choices=cacheconfig.BACKENDS,
        default=cacheconfig.DEFAULT_BACKEND,
        help="layout of each node's local copy "
        f"(raft_cache_backend; default: {cacheconfig.DEFAULT_BACKEND}, as shipped)",
    )
    p.add_argument(
        "--no-relay",
        action="store_true",
        help="raft_cache_relay false on each node: followers propose their own batches "
        "(default: relayed to the leader, as shipped)",
    )
    p.add_argument(
        "--batch-wait",
        type=float,
        help="raft_cache_batch_wait of each node, in seconds (default: the shipped default)",
    )
    p.add_argument(
        "--import-minions",
        type=int,
        default=0,
        help="also time raft.import_cache of this many minions' grains, pillar and mine from "
        "a localfs cache (default 0: skip)",
    )
    p.add_argument(
        "--import-workers", type=int, default=8, help="writes in flight during the import"
    )
    p.add_argument(
        "--no-instant",
        action="store_true",
        help="skip the writers' ceiling: the same writers against engines that answer at once",
    )
    p.add_argument("--writer", help=argparse.SUPPRESS)  # internal: run one writer process
    return p


# --- one writer process -------------------------------------------------------------------------
def writer_main(spec: dict) -> int:
    import salt.cache  # pylint: disable=import-outside-toplevel

    from saltext_raft.bench.master_node import node_opts  # pylint: disable=import-outside-toplevel

    opts = node_opts(
        spec["dir"], spec.get("mirror_dir"), spec.get("backend", cacheconfig.DEFAULT_BACKEND)
    )
    if spec.get("plain_localfs"):  # the ceiling: Salt's own localfs, one master, no replication
        opts["cache"] = "localfs"
    cache = salt.cache.Cache(opts)
    value = "x" * spec["value_size"]
    cache.store("bench/warmup", f"w{os.getpid()}", value)  # connect + load the driver first
    results = {}
    go = threading.Event()

    def run(t):
        lat, errors = [], 0
        go.wait()
        deadline = time.monotonic() + spec["duration"]
        first = time.time()
        for i in range(spec["count"]):
            if time.monotonic() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                cache.store(f"bench/p{os.getpid()}/t{t}", f"k{i % 100}", value)
            except Exception:  # pylint: disable=broad-except
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)
        results[t] = {"lat": lat, "errors": errors, "first": first, "last": time.time()}

    threads = [threading.Thread(target=run, args=(t,)) for t in range(spec["threads"])]
    for th in threads:
        th.start()
    # Every writer process has loaded Salt and connected before any of them starts: the
    # parent says "go" to all at once, so a slow start does not stretch the measured span.
    print(json.dumps({"event": "ready"}), flush=True)
    sys.stdin.readline()
    cpu0 = _cpu_seconds()
    go.set()
    for th in threads:
        th.join()
    cpu = _cpu_seconds() - cpu0
    print(json.dumps({"threads": list(results.values()), "cpu_s": cpu}), flush=True)
    return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine spent busy so far (Linux /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, fh.readline().split()[1:9]
            )
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


# --- the benchmark ------------------------------------------------------------------------------
class Nodes:
    def __init__(
        self,
        base: str,
        n: int = 3,
        mirror_base: str | None = None,
        backend: str = cacheconfig.DEFAULT_BACKEND,
        batch_wait: float | None = None,
        relay: bool = True,
    ):
        self.base = base
        self.relay = relay
        self.mirror_base = mirror_base
        self.backend = backend
        self.batch_wait = batch_wait
        self.ids = [f"c{i + 1}" for i in range(n)]
        self.ports = {nid: free_port() for nid in self.ids}
        self.secret = os.path.join(base, "secret")
        generate(self.secret, overwrite=True)  # as an operator would: 0600, 32 bytes
        self.procs: dict[str, subprocess.Popen] = {}
        self.final: dict[str, dict] = {}

    def dir(self, nid: str) -> str:
        return os.path.join(self.base, nid)

    def mirror_dir(self, nid: str) -> str | None:
        return os.path.join(self.mirror_base, nid) if self.mirror_base else None

    def opts(self, nid: str) -> dict:
        from saltext_raft.bench.master_node import node_opts  # pylint: disable=import-outside-toplevel

        return node_opts(self.dir(nid), self.mirror_dir(nid), self.backend, relay=self.relay)

    def start(self, timeout: float = 60.0) -> None:
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in self.ports.items())
        for nid in self.ids:
            extra = ["--backend", self.backend]
            if self.batch_wait is not None:
                extra += ["--batch-wait", repr(self.batch_wait)]
            if not self.relay:
                extra.append("--no-relay")
            if self.mirror_base:
                extra += ["--mirror-dir", self.mirror_dir(nid)]
            if os.environ.get("SRT_CACHE_BENCH_PROFILE"):  # a directory: cProfile per node
                prof = os.path.join(os.environ["SRT_CACHE_BENCH_PROFILE"], f"{nid}.prof")
                extra += ["--profile", prof]
            self.procs[nid] = subprocess.Popen(
                [sys.executable, "-m", "saltext_raft.bench.master_node", "--id", nid,
                 "--listen", f"127.0.0.1:{self.ports[nid]}", "--peers", peers,
                 "--dir", self.dir(nid), "--secret-file", self.secret, *extra],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        self._await_ready("cache node", time.monotonic() + timeout)

    def _await_ready(self, what: str, deadline: float) -> None:
        """Each process started prints one ``ready`` line first."""
        for nid, proc in self.procs.items():
            line = proc.stdout.readline()
            if '"ready"' not in line or time.monotonic() > deadline:
                raise RuntimeError(f"{what} {nid} did not start: {line!r}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for nid, proc in self.procs.items():
            try:
                out, _ = proc.communicate(timeout=15)
                for line in out.splitlines():
                    if '"stopped"' in line:
                        self.final[nid] = json.loads(line)["status"]
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class InstantEngines(Nodes):
    """Three engines that answer every write at once (``bench.instant_engine``), in place of
    the cache nodes: the writers' own ceiling on this machine (see that module)."""

    def start(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for nid in self.ids:
            sock = cacheconfig.from_opts(self.opts(nid)).socket
            self.procs[nid] = subprocess.Popen(
                [sys.executable, "-m", "saltext_raft.bench.instant_engine", "--socket", sock],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        self._await_ready("instant engine", deadline)


def instant_phase(base: str, args) -> dict:
    """The store phase against :class:`InstantEngines` (nothing of Raft running)."""
    os.makedirs(base, exist_ok=True)
    engines = InstantEngines(base, backend=args.backend)
    try:
        engines.start()
        out = store_phase(engines, args)
    finally:
        engines.stop()
    out["note"] = (
        "the same writers, Salt loader, raft driver and engine socket protocol against three "
        "engines that answer every write at once (no Raft, no log, no local copy): what is "
        "left of the machine for a real cluster's work"
    )
    return out


def wait_writable(opts, timeout=60.0):
    import salt.cache  # pylint: disable=import-outside-toplevel

    cache = salt.cache.Cache(opts)
    deadline = time.monotonic() + timeout
    while True:
        try:
            cache.store("bench", "ready", 1)
            return
        except Exception as exc:  # pylint: disable=broad-except
            if time.monotonic() > deadline:
                raise RuntimeError(f"no committed write within {timeout}s: {exc}") from None
            time.sleep(0.2)


def start_writers(command: str, specs: list[dict], timeout: float = 120.0) -> list:
    """One ``bench <command> --writer <spec>`` process per spec, each started and ``ready``
    within ``timeout`` seconds (all killed by PID if any is not); they wait for ``go`` on stdin."""
    procs = []
    try:
        for spec in specs:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "saltext_raft.bench",
                        command,
                        "--writer",
                        json.dumps(spec),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        _wait_ready(procs, timeout=timeout)
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return procs


def _wait_ready(procs, timeout: float) -> None:
    """Read each writer's ``ready`` line, within ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    waiting = {proc.stdout: proc for proc in procs}
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{len(waiting)} writer process(es) not ready within {timeout}s")
        readable, _, _ = select.select(list(waiting), [], [], remaining)
        for stream in readable:
            line = stream.readline()
            if '"ready"' not in line:
                raise RuntimeError(f"writer process failed to start: {line!r}")
            del waiting[stream]


def store_phase(nodes: Nodes, args, plain_dir: str | None = None) -> dict:
    """``cache.store`` by ``args.writers`` writers through the raft driver; with ``plain_dir``,
    the same writers through Salt's plain ``localfs`` driver into one cachedir there instead
    (one master, nothing replicated): the ceiling a master's disk sets on this machine."""
    per_proc = [
        args.writers // args.procs + (i < args.writers % args.procs) for i in range(args.procs)
    ]
    specs = []
    for i, threads in enumerate(per_proc):
        nid = nodes.ids[i % len(nodes.ids)]
        specs.append(
            {
                "dir": plain_dir or nodes.dir(nid),
                "mirror_dir": None if plain_dir else nodes.mirror_dir(nid),
                "backend": nodes.backend,
                "plain_localfs": plain_dir is not None,
                "threads": threads,
                "duration": args.duration,
                "count": args.count,
                "value_size": args.value_size,
            }
        )
    procs = start_writers("cache", specs)
    # CPU over the store phase (from just before the writers start until they all exit):
    # seconds of CPU per store, by role, are far less sensitive to other load than the rate.
    node_cpu0 = {nid: _proc_cpu_seconds(p.pid) for nid, p in nodes.procs.items()}
    busy0, wall0 = _machine_busy_seconds(), time.monotonic()
    load0 = os.getloadavg()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results, writer_cpu = [], 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=args.duration + 120)
        doc = json.loads(out.strip().splitlines()[-1])
        results.extend(doc["threads"])
        writer_cpu += doc["cpu_s"]
    node_cpu = {}
    for nid, p in nodes.procs.items():
        after = _proc_cpu_seconds(p.pid)
        node_cpu[nid] = None if after is None or node_cpu0[nid] is None else after - node_cpu0[nid]
    busy1, wall1 = _machine_busy_seconds(), time.monotonic()
    lat = [x for r in results for x in r["lat"]]
    errors = sum(r["errors"] for r in results)
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    rate = len(lat) / span if span > 0 else 0.0
    p99 = pct(lat, 0.99) * 1000 if lat else None
    return {
        "writers": args.writers,
        "writer_processes": args.procs,
        "value_bytes": args.value_size,
        "stores": len(lat),
        "errors": errors,
        "seconds": round(span, 3),
        "stores_per_s": round(rate, 1),
        "latency_ms": {
            "p50": round(pct(lat, 0.5) * 1000, 3) if lat else None,
            "p90": round(pct(lat, 0.9) * 1000, 3) if lat else None,
            "p99": round(p99, 3) if p99 is not None else None,
            "max": round(max(lat) * 1000, 3) if lat else None,
        },
        "target": {"stores_per_s": TARGET_STORES_PER_S, "p99_ms": TARGET_P99_MS},
        "met": rate >= TARGET_STORES_PER_S and p99 is not None and p99 <= TARGET_P99_MS,
        "cpu": _cpu_summary(node_cpu, writer_cpu, len(lat), busy0, busy1, wall1 - wall0),
        "loadavg_1m": {"start": round(load0[0], 2), "end": round(os.getloadavg()[0], 2)},
    }


def _cpu_summary(node_cpu, writer_cpu, stores, busy0, busy1, wall) -> dict:
    def per_store_ms(seconds):
        return round(seconds * 1000 / stores, 3) if stores and seconds is not None else None

    out = {
        "node_ms_per_store": {nid: per_store_ms(c) for nid, c in node_cpu.items()},
        "writers_ms_per_store": per_store_ms(writer_cpu),
        "phase_seconds": round(wall, 3),
        "cpus": os.cpu_count(),
    }
    if None not in node_cpu.values():
        out["all_nodes_ms_per_store"] = per_store_ms(sum(node_cpu.values()))
    if busy0 is not None and busy1 is not None and wall > 0:
        # Busy CPUs on the whole machine during the phase (this benchmark and everything else).
        out["machine_busy_cpus"] = round((busy1 - busy0) / wall, 2)
    return out


def fetch_phase(nodes: Nodes, args) -> dict:
    import salt.cache  # pylint: disable=import-outside-toplevel
    import salt.config  # pylint: disable=import-outside-toplevel

    value = "x" * args.value_size
    keys = [f"k{i}" for i in range(100)]
    raft_opts = nodes.opts(nodes.ids[0])
    local_opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    local_opts.update(cachedir=os.path.join(nodes.base, "plain-localfs"), cache="localfs")
    out = {}
    # One loader at a time (Salt's loader shares an extension module's __opts__ across loaders).
    for name, opts in (("localfs", local_opts), ("raft", raft_opts)):
        cache = salt.cache.Cache(opts)
        for k in keys:
            cache.store("bench/fetch", k, value)
        for k in keys[:10]:
            cache.fetch("bench/fetch", k)  # warm-up
        lat = []
        for i in range(args.fetches):
            t0 = time.perf_counter()
            got = cache.fetch("bench/fetch", keys[i % len(keys)])
            lat.append(time.perf_counter() - t0)
            assert got == value
        out[name] = {
            "p50_us": round(statistics.median(lat) * 1e6, 1),
            "p99_us": round(pct(lat, 0.99) * 1e6, 1),
            "mean_us": round(statistics.fmean(lat) * 1e6, 1),
        }
    ratio = out["raft"]["p50_us"] / out["localfs"]["p50_us"]
    out.update(
        fetches=args.fetches,
        ratio_p50=round(ratio, 2),
        target_ratio=TARGET_FETCH_RATIO,
        met=ratio <= TARGET_FETCH_RATIO,
    )
    return out


#: Bytes of one minion's grains, pillar and mine values in the import phase (a small minion).
IMPORT_VALUE_BYTES = {"grains": 2000, "pillar": 1000, "mine": 200}


def import_phase(nodes: Nodes, minions: int, workers: int) -> dict:
    """Time :func:`saltext_raft.replicated.importer.import_cache` of ``minions`` minions' data
    kept by Salt's localfs in the first node's cachedir (what a master had before the switch to
    ``cache: raft``)."""
    import salt.cache  # pylint: disable=import-outside-toplevel

    from saltext_raft.replicated import importer as cacheimport  # pylint: disable=import-outside-toplevel

    opts = nodes.opts(nodes.ids[0])
    old = salt.cache.Cache(dict(opts, cache="localfs"))
    for i in range(minions):
        for bank, size in IMPORT_VALUE_BYTES.items():
            old.store(bank, f"minion{i}", {"blob": "x" * size})
    t0 = time.perf_counter()
    report = cacheimport.import_cache(opts, workers=workers)
    seconds = time.perf_counter() - t0
    return {
        "minions": minions,
        "workers": workers,
        "value_bytes": IMPORT_VALUE_BYTES,
        "imported": report["imported"],
        "seconds": round(seconds, 2),
        "keys_per_s": round(report["imported"] / seconds, 1),
        "note": "raft.import_cache through the raft driver of the first node",
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.writer:
        return writer_main(json.loads(args.writer))
    base = tempfile.mkdtemp(prefix="srt-cbench-", dir="/tmp")
    mirror_base = None
    if args.mirror_dir:
        mirror_base = tempfile.mkdtemp(prefix="srt-cbench-mirror-", dir=args.mirror_dir)
    nodes = Nodes(
        base,
        mirror_base=mirror_base,
        backend=args.backend,
        batch_wait=args.batch_wait,
        relay=not args.no_relay,
    )
    result = {
        "benchmark": "cache",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "setup": "3 cache node processes (runtime + CacheStore(localfs, fsync) + zmq + "
        "CacheService), writer processes using salt.cache.Cache with the raft driver; local "
        f"copies in the {args.backend} layout",
        "mirror_dir": args.mirror_dir or "cachedir (default)",
        "backend": args.backend,
        "batch_wait_s": (
            args.batch_wait if args.batch_wait is not None else cacheconfig.DEFAULT_BATCH_WAIT
        ),
        "relay": not args.no_relay,
    }
    try:
        import salt.version  # pylint: disable=import-outside-toplevel

        result["salt"] = salt.version.__version__
        if not args.no_instant:
            result["store_instant_engine"] = instant_phase(os.path.join(base, "instant"), args)
        nodes.start()
        wait_writable(nodes.opts(nodes.ids[0]))
        result["store"] = store_phase(nodes, args)
        plain = os.path.join(args.mirror_dir and mirror_base or base, "plain-store")
        result["store_plain_localfs"] = store_phase(nodes, args, plain_dir=plain)
        result["store_plain_localfs"]["note"] = (
            "the same writers through Salt's plain localfs driver, one cachedir (one master, "
            "no replication), on the same filesystem as the raft copies: the ceiling"
        )
        for ceiling in ("plain_localfs", "instant_engine"):
            if f"store_{ceiling}" in result:
                result[f"store_over_{ceiling}"] = round(
                    result["store"]["stores_per_s"]
                    / max(result[f"store_{ceiling}"]["stores_per_s"], 1e-9),
                    3,
                )
        result["fetch"] = fetch_phase(nodes, args)
        if args.import_minions > 0:
            result["import"] = import_phase(nodes, args.import_minions, args.import_workers)
    finally:
        nodes.stop()
        result["nodes"] = {
            nid: {
                "leader": st.get("leader"),
                "proposal_batches": st["runtime"].get("proposal_batches"),
                "proposals": st["runtime"].get("proposals"),
                "saves": st["runtime"].get("saves"),
                "mirror": st["cache"]["mirror_counters"],
                "batching": st["cache"].get("batching"),
                # everything the node counted, for per-store figures (messages, saves, ...)
                "runtime_counters": st["runtime"],
                "transport": st.get("transport"),
            }
            for nid, st in nodes.final.items()
        }
        shutil.rmtree(base, ignore_errors=True)
        if mirror_base:
            shutil.rmtree(mirror_base, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s, f, c = result["store"], result["fetch"], result["store_plain_localfs"]
        s_ok, f_ok = ("met" if x["met"] else "MISSED" for x in (s, f))
        print(
            f"store: {s['stores_per_s']}/s, p50 {s['latency_ms']['p50']} ms, "
            f"p99 {s['latency_ms']['p99']} ms, errors {s['errors']} (targets "
            f"{TARGET_STORES_PER_S}/s, p99 <= {TARGET_P99_MS} ms: {s_ok}); CPU per store: "
            f"nodes {s['cpu'].get('all_nodes_ms_per_store')} ms, writers "
            f"{s['cpu']['writers_ms_per_store']} ms"
        )
        print(
            f"store, plain localfs (one master, no replication): {c['stores_per_s']}/s, "
            f"p99 {c['latency_ms']['p99']} ms; raft/plain = {result['store_over_plain_localfs']}"
        )
        if "store_instant_engine" in result:
            e = result["store_instant_engine"]
            print(
                f"store, engines answering at once (no Raft): {e['stores_per_s']}/s, "
                f"p99 {e['latency_ms']['p99']} ms, writers' CPU per store "
                f"{e['cpu']['writers_ms_per_store']} ms; raft/instant = "
                f"{result['store_over_instant_engine']}"
            )
        print(
            f"fetch: raft p50 {f['raft']['p50_us']} us vs localfs {f['localfs']['p50_us']} us "
            f"(x{f['ratio_p50']}, target <= {TARGET_FETCH_RATIO}: {f_ok})"
        )
        if "import" in result:
            i = result["import"]
            print(
                f"import: {i['imported']} keys of {i['minions']} minions in {i['seconds']} s "
                f"({i['keys_per_s']} keys/s, {i['workers']} workers)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
