"""Flood a 3-node cluster's leader with forged maximum-size frames; report what it cost.

Lives here: :func:`flood` (start three ``python -m saltext_raft node`` processes on loopback,
send ``count`` frames of the largest size the leader accepts, in turn over ``connections``
connections, with a plausible header — right cluster id, a known peer as sender, the leader
as receiver, a fresh epoch — but sealed under a wrong secret; watch the leader meanwhile) and
``main`` for ``python -m saltext_raft bench flood``. The functional test
tests/functional/cluster/test_flood.py runs the same function.
Must not live here: the defences (``transport``), the size rule (``runtime.limits``).

Figures: whether the leader kept its leadership (same node, same term, every poll), the
event loop's longest stall during the flood (the node's loop-lag monitor) and in a window of
the same length without it (the machine's own load), the longest time one wake-up of the
transport spent reading frames (the work the flood put on the loop at once), the leader's
resident memory before and at its peak, how long the leader took to refuse every frame, and
its drop counters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from saltext_raft.bench.procs import ProcCluster
from saltext_raft.core import Config
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime.limits import max_frame_bytes
from saltext_raft.transport.crypto import MAX_HEADER_BYTES
from saltext_raft.transport.crypto import TAG_BYTES
from saltext_raft.transport.crypto import FrameCrypto

CLUSTER_ID = "flood"


def forged_frame(leader: str, sender: str, size: int) -> bytes:
    """A frame of exactly ``size`` bytes from ``sender`` to ``leader`` that fails only the AEAD
    check: the attacker does not hold the secret."""
    crypto = FrameCrypto(os.urandom(32), CLUSTER_ID, sender)
    header = 20 + 3 + len(CLUSTER_ID) + len(sender) + len(leader)
    assert header <= MAX_HEADER_BYTES
    frame = crypto.seal(leader, b"\0" * (size - header - TAG_BYTES))
    assert len(frame) == size, (len(frame), size)
    return frame


def flood(
    workdir: str,
    count: int = 200,
    poll: float = 0.05,
    timeout: float = 120.0,
    baseline: float = 3.0,
    settle: float = 5.0,
    connections: int = 1,
) -> dict:
    import zmq  # pylint: disable=import-outside-toplevel

    size = max_frame_bytes(Config("n1"), RuntimeConfig())  # what the nodes (defaults) accept
    cluster = ProcCluster(workdir, node_args=["--cluster-id", CLUSTER_ID])
    try:
        cluster.start_all()
        leader = cluster.leader(timeout=30)
        # the same window without a flood: what this machine's load alone costs the loop
        leader.call("status", reset_loop_lag=True)
        quiet_until = time.monotonic() + baseline
        while time.monotonic() < quiet_until:
            leader.call("status")
            time.sleep(poll)
        before = leader.call("status", reset_loop_lag=True)
        term = before["term"]
        sender = next(n for n in cluster.nodes if n != leader.id)
        frame = forged_frame(leader.id, sender, size)
        dropped_before = sum(before["transport"]["dropped"].values())
        ctx = zmq.Context()
        socks = []
        for _ in range(connections):
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, count + 1)
            sock.connect(f"tcp://{leader.listen}")
            socks.append(sock)
        lost = []  # polls that saw another leader, another term, or no answer
        polls = 0
        refused = 0
        try:
            start = changed = time.monotonic()
            for i in range(count):  # one buffer, sent count times, over the connections in turn
                socks[i % connections].send(frame, copy=False)
            while refused < count:
                st = leader.try_status()
                polls += 1
                now = time.monotonic()
                if st is None or st["role"] != "leader" or st["term"] != term:
                    lost.append(None if st is None else {"role": st["role"], "term": st["term"]})
                if st is not None:
                    seen = sum(st["transport"]["dropped"].values()) - dropped_before
                    if seen != refused:
                        refused, changed = seen, now
                # zmq may cut the connection while the leader's queue for it is full (its
                # heartbeat answers wait behind the frames): frames in flight are then lost
                if refused and now - changed > settle:
                    break
                if now - start > timeout:
                    raise TimeoutError(
                        f"the leader refused {refused} of {count} frames in {timeout}s"
                    )
                time.sleep(poll)
            refused_in = changed - start
        finally:
            for sock in socks:
                sock.close(linger=0)
            ctx.term()
        after = leader.call("status")
        statuses = cluster.statuses()
        return {
            "frames": count,
            "connections": connections,
            "frames_refused": refused,
            "frame_bytes": size,
            "leader": leader.id,
            "leader_kept": not lost
            and all(s["leader"] == leader.id and s["term"] == term for s in statuses.values()),
            "polls": polls,
            "polls_lost": lost,
            "seconds_to_last_refusal": round(refused_in, 3),
            "loop_stall_max_ms": after["loop_lag"]["max_ms"],
            "loop_stall_max_ms_without_flood": before["loop_lag"]["max_ms"],
            "drain_longest_ms": after["transport"]["drain_longest_ms"],
            "loop_stalls_over_50ms": after["loop_lag"]["over_50ms"],
            "rss_before_mb": round(before["process"]["rss_bytes"] / 2**20, 1),
            "rss_peak_mb": round(after["process"]["rss_peak_bytes"] / 2**20, 1),
            "rss_after_mb": round(after["process"]["rss_bytes"] / 2**20, 1),
            "dropped": {
                k: v - before["transport"]["dropped"].get(k, 0)
                for k, v in after["transport"]["dropped"].items()
                if v != before["transport"]["dropped"].get(k, 0)
            },
            "drains_cut": after["transport"]["drains_cut"] - before["transport"]["drains_cut"],
        }
    finally:
        cluster.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m saltext_raft bench flood", description=__doc__)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--connections",
        type=int,
        default=1,
        help="send the frames over this many connections in turn (zmq queues up to recv_hwm "
        "frames per connection)",
    )
    p.add_argument(
        "--baseline", type=float, default=3.0, help="seconds of loop-lag without the flood first"
    )
    args = p.parse_args(argv)
    out = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="flood-") as workdir:
            result = flood(
                workdir, args.frames, baseline=args.baseline, connections=args.connections
            )
        result["load_average"] = os.getloadavg()
        print(json.dumps(result), flush=True)
        out.append(result)
    return 0 if all(r["leader_kept"] for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
