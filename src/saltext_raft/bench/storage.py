"""``python -m saltext_raft bench storage``: what durable storage costs on a real cache driver.

Measures CacheStore over ``salt.cache.Cache`` on localfs, for both log schemes side by side in
one run (``segments``: the localfs fast path; ``keys``: one fsynced cache file per record, what
every other driver gets): the latency of one ``save()`` (p50/p99 of single-entry saves and of
hard-state-only saves, the two schemes interleaved save by save so both see the same machine
load), µs per appended entry at several log lengths (median per batch, wall clock and CPU),
bytes written per entry, files on disk, the time to reopen a node, and the cost of a
1,000-entry truncation. Only figures: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState


def _entries(first: int, count: int, term: int, size: int) -> list[Entry]:
    pad = b"x" * size
    return [Entry(term, i, 0, pad) for i in range(first, first + count)]


SCHEMES = ("segments", "keys")


def _open(opts, scheme: str, node=None):
    from saltext_raft.storage import open_store  # pylint: disable=import-outside-toplevel

    store = open_store(opts, "bench", node or f"bench-{scheme}", log_format=scheme)
    state = store.load()
    return store, state


def _pcts(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1e3, 3),
        "p99_ms": round(p99 * 1e3, 3),
        "samples": len(ordered),
    }


def save_latency(opts, saves: int, entry_bytes: int) -> dict:
    """Per-save wall time of both schemes, interleaved so they share the machine's load."""
    stores = {scheme: _open(opts, scheme, f"lat-{scheme}")[0] for scheme in SCHEMES}
    one = {scheme: [] for scheme in SCHEMES}
    hs_only = {scheme: [] for scheme in SCHEMES}
    for i in range(1, saves + 1):
        for scheme, store in stores.items():
            entries = _entries(i, 1, 1, entry_bytes)
            w = time.perf_counter()
            store.save(HardState(1, "bench", i - 1), entries)  # a Ready at light load
            one[scheme].append(time.perf_counter() - w)
            w = time.perf_counter()
            store.save(HardState(1, "bench", i), [])  # the background commit-index write
            hs_only[scheme].append(time.perf_counter() - w)
    for store in stores.values():
        store.close()
    return {
        scheme: {"save_1_entry": _pcts(one[scheme]), "save_hard_state_only": _pcts(hs_only[scheme])}
        for scheme in SCHEMES
    }


def run(
    opts,
    scheme: str,
    points: list[int],
    batch: int,
    entry_bytes: int,
    probe_batches: int,
    logs_per_point: int = 3,
):
    # Each log length gets ``logs_per_point`` logs, all grown to their length first; then the
    # timed batches are interleaved across every log round by round (the first log of a round
    # rotates), so every length sees the same machine load. Timing the lengths one after the
    # other let load drift between them pass for a dependence on log length, and a single file
    # per length let that one file's fdatasync luck (its place on disk) do the same.
    points = sorted(points)
    slots = [(point, copy) for point in points for copy in range(max(1, logs_per_point))]

    def grow(slot: tuple, generation: int) -> list:
        point, copy = slot
        store, _ = _open(opts, scheme, f"bench-{scheme}-{point}-{copy}-{generation}")
        last = 0
        while last < point:  # grow the log the way a busy node does
            store.save(HardState(1, "bench", last), _entries(last + 1, batch, 1, entry_bytes))
            last += batch
        return [store, last, generation]

    grown = {slot: grow(slot, 0) for slot in slots}
    longest = {point: point for point in points}
    walls = {point: [] for point in points}
    cpus = {point: [] for point in points}
    for round_no in range(probe_batches):
        shift = round_no % len(slots)
        for slot in slots[shift:] + slots[:shift]:
            point = slot[0]
            store, last, generation = grown[slot]
            if last >= 2 * point:  # keep each length near its point: a fresh log, grown untimed
                store.close()
                grown[slot] = grow(slot, generation + 1)
                store, last, generation = grown[slot]
            w, c = time.perf_counter(), time.process_time()
            store.save(HardState(1, "bench", last), _entries(last + 1, batch, 1, entry_bytes))
            walls[point].append(time.perf_counter() - w)
            cpus[point].append(time.process_time() - c)
            grown[slot][1] = last + batch
            longest[point] = max(longest[point], last + batch)
    append = {
        str(point): {
            "us_per_entry": round(statistics.median(walls[point]) / batch * 1e6, 1),
            "cpu_us_per_entry": round(statistics.median(cpus[point]) / batch * 1e6, 1),
            "log_length_while_timed": [point, longest[point]],
            "timed_batches": len(walls[point]),
        }
        for point in points
    }
    us = [value["us_per_entry"] for value in append.values()]
    append["max_over_min"] = round(max(us) / min(us), 2)
    all_walls = [w for point in points for w in walls[point]]
    last_slot = (points[-1], 0)
    for slot in slots:
        if slot != last_slot:
            grown[slot][0].close()
    store, last, generation = grown[last_slot]
    appended = last
    node = f"bench-{scheme}-{points[-1]}-0-{generation}"
    bytes_per_entry = store.bytes_written / appended
    files = sum(1 for _ in store.cache.list(store.log_bank))
    files += sum(1 for _ in store.cache.list(store.wal_bank))
    batch_saves = _pcts(all_walls)
    store.close()

    reopen, reopen_cpu = [], []
    for _ in range(3):
        w, c = time.perf_counter(), time.process_time()
        store, state = _open(opts, scheme, node)
        reopen.append(time.perf_counter() - w)
        reopen_cpu.append(time.process_time() - c)
        store.close()
    assert len(state.entries) == last
    reopened = last

    store, _ = _open(opts, scheme, node)
    t_walls, t_cpus = [], []
    term = 1
    for term in range(2, 7):  # each save replaces the last 1,000 entries with one
        if last <= 1000:  # a short --points run: keep index 1 and up
            term -= 1
            break
        w, c = time.perf_counter(), time.process_time()
        store.save(HardState(term, "bench", 0), _entries(last - 999, 1, term, entry_bytes))
        t_walls.append(time.perf_counter() - w)
        t_cpus.append(time.process_time() - c)
        last -= 999
    store.close()
    store, state = _open(opts, scheme, node)
    store.close()
    assert state.entries[-1].index == last and state.entries[-1].term == term

    return {
        "append": append,
        f"save_{batch}_entries": batch_saves,
        "bytes_written_per_entry": round(bytes_per_entry, 1),
        "log_files_on_disk": files,
        "reopen_entries": reopened,
        "reopen_s": round(min(reopen), 3),
        "reopen_cpu_s": round(min(reopen_cpu), 3),
        "truncate_1000_entries_ms": round(statistics.median(t_walls or [0]) * 1e3, 2),
        "truncate_1000_entries_cpu_ms": round(statistics.median(t_cpus or [0]) * 1e3, 2),
    }


def measure(cachedir: str, points: list[int], args) -> dict:
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.version  # pylint: disable=import-outside-toplevel

    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts["cachedir"] = cachedir
    result = {
        "store": "CacheStore",
        "driver": opts.get("cache", "localfs"),
        "salt": salt.version.__version__,
        "batch_entries": args.batch,
        "entry_data_bytes": args.entry_bytes,
        "save_latency": save_latency(opts, args.latency_saves, args.entry_bytes),
    }
    for scheme in [s for s in args.schemes.split(",") if s]:
        result[scheme] = run(
            opts,
            scheme,
            points,
            args.batch,
            args.entry_bytes,
            args.probe_batches,
            args.logs_per_point,
        )
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m saltext_raft bench storage")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--cachedir", help="directory for the localfs cache (default: a temp dir)")
    parser.add_argument("--points", default="1000,10000,100000", help="log lengths to probe")
    parser.add_argument("--batch", type=int, default=64, help="entries per save() (default 64)")
    parser.add_argument("--entry-bytes", type=int, default=100, help="data bytes per entry")
    parser.add_argument(
        "--probe-batches", type=int, default=100, help="timed batches per point, interleaved"
    )
    parser.add_argument(
        "--logs-per-point", type=int, default=3, help="separate logs timed at each length"
    )
    parser.add_argument(
        "--latency-saves", type=int, default=300, help="single-entry saves timed per scheme"
    )
    parser.add_argument(
        "--schemes", default=",".join(SCHEMES), help="log schemes for the per-length figures"
    )
    args = parser.parse_args(argv)
    tmp = None
    cachedir = args.cachedir
    if cachedir is None:
        tmp = cachedir = tempfile.mkdtemp(prefix="saltext-raft-bench-")
    try:
        points = [int(p) for p in args.points.split(",") if p]
        result = measure(cachedir, points, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0
