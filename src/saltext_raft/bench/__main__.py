"""``python -m saltext_raft bench <command> [options]``: run one benchmark, print its figures.

The table maps a command to the module that implements it; each module has
``main(argv) -> int``. Add a benchmark by adding a row.
"""

from __future__ import annotations

import sys

from saltext_raft.cli import dispatch

PROG = "python -m saltext_raft bench"

COMMANDS = {
    "storage": (
        "saltext_raft.bench.storage",
        "per-save latency, append/reopen/truncate cost of CacheStore, both log schemes",
    ),
    "cluster": (
        "saltext_raft.bench.cluster",
        "3 node processes: latency, throughput, failover, vs PySyncObj (and Salt 3008 core)",
    ),
    "trace": (
        "saltext_raft.bench.trace",
        "where one commit's time goes: 3 traced nodes, one proposal at a time, per segment",
    ),
    "steady": (
        "saltext_raft.bench.steady",
        "3 nodes under steady load with both CPUs busy: leader changes (target: none)",
    ),
    "plot": (
        "saltext_raft.bench.plot",
        "PNG from bench cluster JSON files (needs matplotlib: the bench extra)",
    ),
    "cache": (
        "saltext_raft.bench.saltwrites",
        "raft cache driver: 32 writers' cache.store rate/latency, cache.fetch vs localfs",
    ),
    "jobs": (
        "saltext_raft.bench.jobs",
        "raft job cache: returns/s through store_job vs local_cache on one master, lookup",
    ),
    "gate": (
        "saltext_raft.bench.gate",
        "the request gate's cost per request on a ready master (target: <= 20 µs)",
    ),
    "flood": (
        "saltext_raft.bench.flood",
        "200 forged maximum-size frames at a 3-node cluster's leader: leadership, stall, RSS",
    ),
    "transport": (
        "saltext_raft.transport.bench",
        "the transport alone: CPU per frame (seal/open), loopback messages/s",
    ),
    "snapshot": (
        "saltext_raft.bench.snapshot",
        "a big cache state: how long snapshot, rebuild listing and restore hold the loop",
    ),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
