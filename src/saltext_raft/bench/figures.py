"""The figures of one load run, as both benchmark nodes report them.

Lives here: :func:`load_figures`, shared by our node's ``load`` control op
(``saltext_raft.standalone``) and the PySyncObj comparison node (``bench.pysyncobj_node``), so
``bench cluster`` reads the same fields computed the same way from both. Must not live here:
running the load (each node does that its own way), any Raft or Salt import.
"""

from __future__ import annotations


def load_figures(latencies: list[float], errors: dict[str, int], elapsed: float) -> dict:
    """Throughput and commit latency (ms) of the proposals that succeeded, plus the errors by
    kind. ``latencies`` in seconds, in any order."""
    lat = sorted(latencies)

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None

    return {
        "committed": len(lat),
        "errors": errors,
        "seconds": elapsed,
        "per_second": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "mean_ms": sum(lat) / len(lat) * 1000 if lat else None,
    }
