"""The figures of one load run, as both benchmark nodes report them.

Lives here: :func:`load_figures`, shared by our node's ``load`` control op
(``saltext_raft.standalone``) and the PySyncObj comparison node (``bench.pysyncobj_node``), so
``bench cluster`` reads the same fields computed the same way from both; and :func:`outcomes`,
the proposals of several loads by kind of outcome. Must not live here:
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


#: The kinds of outcome a load reports (``outcomes``): a proposal committed, refused at once
#: because too many were waiting, timed out (outcome unknown), or failed otherwise.
OUTCOMES = ("committed", "overloaded", "timeout", "other")


def outcomes(*loads: dict) -> dict:
    """Proposals of ``loads`` (results of the ``load`` op) by kind of outcome."""
    out = dict.fromkeys(OUTCOMES, 0)
    for load in loads:
        out["committed"] += load.get("committed", 0)
        for code, n in (load.get("errors") or {}).items():
            out[code if code in ("overloaded", "timeout") else "other"] += n
    return out
