"""``python -m saltext_raft bench snapshot [--json]``: how long a big cache state holds the loop.

The replicated cache's state machine (``KVStateMachine``) is filled as a Salt master's cache of
``--minions`` minions would be (three keys each: grains-like ``data``, ``pillar``, ``mine`` of
``--sizes`` bytes), then, ``--rounds`` times:

- ``snapshot()``: encoding on the loop, as every snapshot was encoded before 2026-11-27;
- ``snapshot_later()``: the copy taken on the loop, then the encoding on a worker thread of a
  running asyncio loop, while a task on that loop sleeps 1 ms at a time and records the longest
  gap between two wake-ups (what heartbeats and elections feel); the same gap is measured with
  nothing running beside the loop, as the floor;
- the listing a rebuild of the local copy needs: through the state's read methods (what ran
  on the loop before) against ``copy_tree()`` (on the loop) + ``tree_contents()`` (on the
  writer thread);
- ``restore()`` of the snapshot all on the loop (as followers did before 2026-11-27), against
  ``restore_later()``: decoding on a worker thread (with the same loop-gap measurement), then
  the install on the loop.

Each step is timed from a full collection of the cyclic GC, so that collections due to an
earlier step's garbage do not land on it. Both encodings must give the same bytes, and the
restored state must encode to them again (checked every round). No I/O, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time

from saltext_raft.kv import KVStateMachine
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import tree_contents

#: The stall that costs a leader its leadership with the default timing (docs/architecture.md).
LEADERSHIP_STALL_MS = 250


def build_parser():
    p = argparse.ArgumentParser(prog="python -m saltext_raft bench snapshot")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--minions", type=int, default=10_000)
    p.add_argument(
        "--sizes",
        default="5000,2000,500",
        help="bytes of each minion's data, pillar and mine values (comma-separated)",
    )
    p.add_argument("--rounds", type=int, default=3)
    return p


def fill(minions: int, sizes: list[int]) -> KVStateMachine:
    kv = KVStateMachine()
    names = ("data", "pillar", "mine")
    seq = 0
    for i in range(minions):
        for name, size in zip(names, sizes, strict=True):
            seq += 1
            cmd = Command(STORE, f"minions/m{i:06d}", name, os.urandom(size), 1, "bench", seq)
            kv.apply_command(cmd)
    return kv


def walk_with_reads(kv: KVStateMachine) -> int:
    """The listing as the rebuild made it on the loop before: through the read methods."""
    stack, items = [""], 0
    while stack:
        bank = stack.pop()
        for name in kv.list(bank):
            if kv.fetch(bank, name) is not None:
                kv.updated(bank, name)
                items += 1
            sub = f"{bank}/{name}" if bank else name
            if kv.contains(sub):
                stack.append(sub)
    return items


def clean_start() -> float:
    """A full collection, then the clock: each step is timed from the same state of the cyclic
    GC, so a collection that an earlier step's garbage made due does not land on it (collections
    its own allocations trigger still count)."""
    gc.collect()
    return time.perf_counter()


async def longest_gap(work) -> tuple[float, float]:
    """Run ``work`` (a callable, or None) on a worker thread; return (its seconds, the longest
    gap between two 1 ms wake-ups of a task on this loop meanwhile, in seconds)."""
    loop = asyncio.get_running_loop()
    done = False
    gaps = [0.0]

    async def ticker():
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    clean_start()  # no collection left over from earlier steps
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)  # the ticker is running
    t0 = time.perf_counter()
    if work is None:
        await asyncio.sleep(0.2)
    else:
        await loop.run_in_executor(None, work)
    spent = time.perf_counter() - t0
    done = True
    await task
    return spent, max(gaps)


def measure(kv: KVStateMachine, rounds: int) -> dict:
    rows = []
    for _ in range(rounds):
        t0 = clean_start()
        data = kv.snapshot()
        on_loop = time.perf_counter() - t0
        t0 = clean_start()
        pack = kv.snapshot_later()
        copy = time.perf_counter() - t0
        packed = {}

        def run_pack(pack=pack, packed=packed):
            packed["data"] = pack()

        encode, gap = asyncio.run(longest_gap(run_pack))
        if packed["data"] != data:
            raise AssertionError("snapshot_later() encoded other bytes than snapshot()")
        _, floor = asyncio.run(longest_gap(None))
        t0 = clean_start()
        walk_with_reads(kv)
        walk = time.perf_counter() - t0
        t0 = clean_start()
        tree = kv.copy_tree()
        tree_copy = time.perf_counter() - t0
        t0 = clean_start()
        tree_contents(tree)
        listing = time.perf_counter() - t0
        t0 = clean_start()
        KVStateMachine().restore(data)
        restore = time.perf_counter() - t0
        target = KVStateMachine()
        decoded = {}
        decode_job = target.restore_later(data)

        def run_decode(decode_job=decode_job, decoded=decoded):
            decoded["install"] = decode_job()

        decode, decode_gap = asyncio.run(longest_gap(run_decode))
        t0 = clean_start()
        decoded["install"]()
        install = time.perf_counter() - t0
        if target.snapshot() != data:
            raise AssertionError("restore_later() installed another state than the snapshot's")
        rows.append(
            {
                "snapshot_bytes": len(data),
                "snapshot_on_loop_ms": on_loop * 1e3,
                "snapshot_later_copy_on_loop_ms": copy * 1e3,
                "snapshot_later_encode_on_thread_ms": encode * 1e3,
                "longest_loop_gap_while_encoding_ms": gap * 1e3,
                "longest_loop_gap_idle_ms": floor * 1e3,
                "rebuild_listing_by_reads_on_loop_ms": walk * 1e3,
                "rebuild_copy_tree_on_loop_ms": tree_copy * 1e3,
                "rebuild_listing_on_writer_thread_ms": listing * 1e3,
                "restore_on_loop_ms": restore * 1e3,
                "restore_later_decode_on_thread_ms": decode * 1e3,
                "longest_loop_gap_while_decoding_ms": decode_gap * 1e3,
                "restore_later_install_on_loop_ms": install * 1e3,
            }
        )
    medians = {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}
    return {"rounds": rows, "median": medians}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes: comma-separated byte counts, got {args.sizes!r}", file=sys.stderr)
        return 2
    if len(sizes) != 3 or min(sizes) < 0 or args.minions < 1 or args.rounds < 1:
        print("--sizes needs three byte counts; --minions and --rounds at least 1", file=sys.stderr)
        return 2
    kv = fill(args.minions, sizes)
    result = {
        "benchmark": "snapshot",
        "date": time.strftime("%Y-%m-%d"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "minions": args.minions,
        "keys": 3 * args.minions,
        "value_bytes": sizes,
        "leadership_stall_ms": LEADERSHIP_STALL_MS,
        **measure(kv, args.rounds),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        m = result["median"]
        print(
            f"{result['keys']} keys, {m['snapshot_bytes'] / 1e6:.1f} MB (medians of "
            f"{args.rounds} rounds)\n"
            f"  snapshot() on the loop:            {m['snapshot_on_loop_ms']:8.1f} ms\n"
            f"  snapshot_later() copy on the loop: {m['snapshot_later_copy_on_loop_ms']:8.1f} ms\n"
            f"  encoding on a thread:              "
            f"{m['snapshot_later_encode_on_thread_ms']:8.1f} ms, longest loop gap "
            f"{m['longest_loop_gap_while_encoding_ms']:.1f} ms "
            f"(idle: {m['longest_loop_gap_idle_ms']:.1f} ms)\n"
            f"  rebuild listing by reads (loop):   "
            f"{m['rebuild_listing_by_reads_on_loop_ms']:8.1f} ms\n"
            f"  copy_tree() on the loop:           {m['rebuild_copy_tree_on_loop_ms']:8.1f} ms\n"
            f"  restore() on the loop:             {m['restore_on_loop_ms']:8.1f} ms\n"
            f"  restore_later() decoding, thread:  "
            f"{m['restore_later_decode_on_thread_ms']:8.1f} ms, longest loop gap "
            f"{m['longest_loop_gap_while_decoding_ms']:.1f} ms\n"
            f"  restore_later() install, loop:     {m['restore_later_install_on_loop_ms']:8.1f} ms"
        )
    return 0
