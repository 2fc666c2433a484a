"""Where one commit's time goes: ``python -m saltext_raft bench trace``.

Lives here: :func:`main` (three nodes of ``bench.tracednode``, a discarded warm-up, then
``--count`` proposals one at a time in the leader's ``load`` op, and the figures as JSON) and
:func:`analyse` (per commit, matched across the processes by log index: the segments it
passed through, on the leader and on the follower whose acknowledgement committed it; medians
and tails of each, and of every ``fdatasync``/``fsync``). Must not live here: the tracing
itself (``bench.tracednode``), the runtime, transport or storage.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile


def _read(trace_dir: str) -> list[tuple[int, str, str, str, int]]:
    events = []
    for name in os.listdir(trace_dir):
        if name.endswith(".trace"):
            with open(os.path.join(trace_dir, name), encoding="ascii") as fh:
                for line in fh:
                    t, node, thread, what, index = line.split()
                    events.append((int(t), node, thread, what, int(index)))
    events.sort()
    return events


#: The segments of one commit at one outstanding proposal, in the order a commit passes them;
#: each is (name, (node role, event), (node role, event)). "leader" and "follower" is the
#: follower whose acknowledgement came first (the one that made the commit). "of which" splits
#: the segment above it: the core's ``step``, then the loop pass to the next Ready and what it
#: does (the save's hand-off to the storage thread when the save is not inline).
SEGMENTS = (
    ("leader: submit -> Ready", ("L", "submit"), ("L", "ready")),
    ("leader: Ready -> append sent", ("L", "ready"), ("L", "send_append")),
    ("hop 1: leader send -> follower receive", ("L", "send_append"), ("F", "recv_append")),
    ("follower: receive -> save starts", ("F", "recv_append"), ("F", "save_start")),
    ("follower, of which: stepping the append", ("F", "recv_append"), ("F", "stepped_append")),
    ("follower, of which: stepped -> save starts", ("F", "stepped_append"), ("F", "save_start")),
    ("follower: save (write + fdatasync)", ("F", "save_start"), ("F", "save_end")),
    ("follower: save done -> ack sent", ("F", "save_end"), ("F", "send_resp")),
    ("hop 2: follower send -> leader receive", ("F", "send_resp"), ("L", "recv_resp")),
    ("leader: ack received -> apply", ("L", "recv_resp"), ("L", "apply")),
    ("leader, of which: stepping the ack", ("L", "recv_resp"), ("L", "stepped_resp")),
    ("leader, of which: stepped -> apply", ("L", "stepped_resp"), ("L", "apply")),
    ("leader, in parallel: Ready -> own save starts", ("L", "ready"), ("L", "save_start")),
    ("leader, in parallel: own save", ("L", "save_start"), ("L", "save_end")),
    ("leader: own save done -> ack from follower", ("L", "save_end"), ("L", "recv_resp")),
    ("total: submit -> apply", ("L", "submit"), ("L", "apply")),
)


def analyse(events, leader: str) -> dict:
    """Per commit (log index) the time of each event on the leader and on the first follower
    to acknowledge it; medians, p90 and p99 of each segment in microseconds."""
    at: dict[int, dict] = collections.defaultdict(dict)
    syncs: dict[str, list[int]] = collections.defaultdict(list)
    pending_submit = None
    for t, node, _thread, what, index in events:
        if what in ("fdatasync", "fsync"):
            syncs[what].append(index)
            continue
        if node == leader:
            if what == "submit":
                pending_submit = t
                continue
            slot = at[index]
            key = ("L", what)
            if what == "ready" and pending_submit is not None:
                slot[("L", "submit")] = pending_submit
                pending_submit = None
            if what in ("recv_resp", "stepped_resp") and key in slot:
                continue  # the second follower's ack: not the one that committed
            slot.setdefault(key, t)
        else:
            slot = at[index]
            slot.setdefault(("F", what, node), t)
    durations: dict[str, list[float]] = collections.defaultdict(list)
    commits = 0
    for slot in at.values():
        if ("L", "submit") not in slot or ("L", "apply") not in slot:
            continue
        # the follower whose ack reached the leader first
        followers = {k[2] for k in slot if k[0] == "F"}
        acker = min(
            followers,
            key=lambda f: slot.get(("F", "send_resp", f), float("inf")),
            default=None,
        )
        if acker is None:
            continue
        commits += 1
        for name, a, b in SEGMENTS:
            ta = slot.get(a if a[0] == "L" else ("F", a[1], acker))
            tb = slot.get(b if b[0] == "L" else ("F", b[1], acker))
            if ta is not None and tb is not None:
                durations[name].append((tb - ta) / 1000)

    def stats(xs):
        xs = sorted(xs)
        return {
            "n": len(xs),
            "p50_us": round(statistics.median(xs), 1),
            "p90_us": round(xs[int(0.9 * (len(xs) - 1))], 1),
            "p99_us": round(xs[int(0.99 * (len(xs) - 1))], 1),
        }

    return {
        "commits": commits,
        "segments_us": {name: stats(durations[name]) for name, _, _ in SEGMENTS if durations[name]},
        "syncs_us": {k: stats([v / 1000 for v in vs]) for k, vs in syncs.items() if vs},
    }


def main(argv=None) -> int:
    """``bench trace``: three traced nodes, ``--count`` proposals one at a time in the leader
    (after a discarded warm-up), the per-segment figures as JSON."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft.bench.clusters import ours_leader
    from saltext_raft.bench.procs import NodeProc
    from saltext_raft.bench.procs import ProcCluster
    from saltext_raft.bench.tracednode import TRACE_DIR_ENV

    p = argparse.ArgumentParser(prog="python -m saltext_raft bench trace", description=__doc__)
    p.add_argument("--count", type=int, default=2000, help="proposals, one at a time")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--node-args", default="", help="extra arguments for the nodes")
    p.add_argument("--workdir", default=None)
    p.add_argument("--python", default=sys.executable)
    o = p.parse_args(argv)
    workdir = o.workdir or tempfile.mkdtemp(prefix="raft-trace-")
    trace_dir = os.path.join(workdir, "trace")
    os.makedirs(trace_dir, exist_ok=True)

    class TracedCluster(ProcCluster):
        def start(self, nid: str, timeout: float = 30.0) -> NodeProc:
            node = NodeProc(
                nid,
                self.address_of(nid),
                ["--id", nid, "--listen", self.address_of(nid), *self.args_for(nid)],
                os.path.join(self.workdir, f"{nid}.log"),
                self.python,
                command=("saltext_raft.bench.tracednode",),
            )
            self.nodes[nid] = node
            return node.start(timeout)

    os.environ[TRACE_DIR_ENV] = trace_dir
    cluster = TracedCluster(workdir, node_args=o.node_args.split(), python=o.python)
    load_avg = os.getloadavg()
    try:
        cluster.start_all()
        leader = ours_leader(cluster)
        leader.call("load", count=200, outstanding=1, size=o.size, duration=10.0)
        for name in os.listdir(trace_dir):  # the warm-up is not analysed
            os.truncate(os.path.join(trace_dir, name), 0)
        load = leader.call("load", count=o.count, outstanding=1, size=o.size, duration=60.0)
    finally:
        cluster.close()
    out = {
        "command": "python -m saltext_raft bench trace " + " ".join(argv or sys.argv[2:]),
        "loadavg_before": load_avg,
        "loadavg_after": os.getloadavg(),
        "load": {k: load[k] for k in ("committed", "per_second", "p50_ms", "p99_ms")},
        **analyse(_read(trace_dir), leader.id),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
