"""``python -m saltext_raft bench gate [--calls N] [--rounds R] [--json]``: the request gate's
cost per request on a ready master.

Lives here: the measurement (the gate's wrapper around a stand-in for
``salt.master.MWorker._handle_payload`` against the same method unwrapped, on an open gate, best
of ``--rounds`` rounds of ``--calls`` calls each) and its report against the target (<= 20 µs
per request). Must not live here: the gate itself (``master/gate.py``) or any pass/fail
test: the unit tests check the gate's cheapness by counting ``stat()`` calls, not by timing.
Needs no Salt daemon: the worker is a stand-in with the same method.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

from saltext_raft.master import gate
from saltext_raft.master.readiness import ReadinessWriter
from saltext_raft.master.settings import readiness_path

TARGET_US = 20.0
PAYLOAD = {"enc": "aes", "load": b"\x00ciphertext", "id": "minion1"}


class _Worker:
    """Stands in for ``salt.master.MWorker``: only what the gate touches."""

    def __init__(self, opts: dict):
        self.opts = opts

    async def _handle_payload(self, payload):
        return {"ok": True}, {"fun": "send"}


class _GatedWorker(_Worker):
    async def _handle_payload(self, payload):
        return await _Worker._handle_payload(self, payload)


async def _per_call(worker, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        await worker._handle_payload(PAYLOAD)
    return (time.perf_counter() - t0) / calls


def measure(calls: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as cachedir:
        opts = {"cachedir": cachedir, "engines": [{"raft": {"readiness_interval": 1.0}}]}
        ReadinessWriter(readiness_path(cachedir)).publish({"ready": True})
        gate.install(_GatedWorker)
        try:
            gated, plain = _GatedWorker(opts), _Worker(opts)

            async def run():
                await _per_call(gated, calls)  # warm up: the first call reads the file
                best_gated = min([await _per_call(gated, calls) for _ in range(rounds)])
                best_plain = min([await _per_call(plain, calls) for _ in range(rounds)])
                return best_gated, best_plain

            best_gated, best_plain = asyncio.run(run())
        finally:
            gate.uninstall(_GatedWorker)
    cost = (best_gated - best_plain) * 1e6
    return {
        "benchmark": "gate",
        "date": time.strftime("%Y-%m-%d"),
        "python": sys.version.split()[0],
        "load_average": os.getloadavg()[0],
        "calls": calls,
        "rounds": rounds,
        "gated_us": round(best_gated * 1e6, 3),
        "plain_us": round(best_plain * 1e6, 3),
        "cost_us": round(cost, 3),
        "target_us": TARGET_US,
        "target_met": cost <= TARGET_US,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m saltext_raft bench gate", description=__doc__)
    p.add_argument("--calls", type=int, default=20000, help="calls per round (default 20000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best counts (default 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        print("--calls and --rounds must be at least 1", file=sys.stderr)
        return 2
    result = measure(args.calls, args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"gate cost per request on a ready master: {result['cost_us']:.2f} µs "
            f"(gated {result['gated_us']:.2f} µs, plain {result['plain_us']:.2f} µs; best of "
            f"{args.rounds} x {args.calls}; target <= {TARGET_US:g} µs: "
            f"{'met' if result['target_met'] else 'NOT met'}; load average "
            f"{result['load_average']:.1f})"
        )
    return 0
