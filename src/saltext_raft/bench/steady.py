"""Steady run: 3 node processes under a steady write load while both CPUs are kept busy by
other processes; reports every leader change (the target is none in 10 minutes).

``python -m saltext_raft bench steady [--minutes 10] [--burners 2] [--rate 200] [--json]``

Bounded in count and time: the run stops after ``--minutes``; the burner processes stop by
themselves after the same time and are also killed by PID at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from saltext_raft.bench.procs import ProcCluster

_BURNER = "import time\nend = time.monotonic() + {secs}\nwhile time.monotonic() < end:\n    pass\n"


def run(minutes: float, burners: int, rate: float, workdir: str) -> dict:
    secs = minutes * 60
    cluster = ProcCluster(workdir)
    procs: list[subprocess.Popen] = []
    try:
        cluster.start_all()
        leader = cluster.leader(timeout=30)
        first = leader.call("status")
        start_term, start_leader = first["term"], first["id"]
        for _ in range(burners):
            code = _BURNER.format(secs=secs + 30)
            procs.append(subprocess.Popen([sys.executable, "-c", code]))
        changes = []
        samples = 0
        committed = 0
        errors = 0
        last = (start_term, start_leader)
        t0 = time.monotonic()
        next_write = t0
        while time.monotonic() - t0 < secs:
            now = time.monotonic()
            if now >= next_write:
                next_write = now + 1.0 / rate
                try:
                    res = leader.call("load", count=1, outstanding=1, duration=1.0, timeout=2.0)
                    committed += res.get("committed", 0)
                    errors += sum(res.get("errors", {}).values())
                except Exception:  # a leader change: find the new one below
                    errors += 1
            if samples == 0 or now - t0 >= samples * 0.5:  # sample the leader twice a second
                samples += 1
                for st in cluster.statuses().values():
                    if st.get("role") == "leader":
                        cur = (st["term"], st["id"])
                        if cur != last:
                            changes.append(
                                {"at_s": round(now - t0, 2), "term": cur[0], "leader": cur[1]}
                            )
                            last = cur
                            leader = cluster.nodes[cur[1]]
            time.sleep(min(0.005, max(0.0, next_write - time.monotonic())))
        final = {nid: st.get("term") for nid, st in cluster.statuses().items()}
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m saltext_raft bench steady "
            f"--minutes {minutes:g} --burners {burners} --rate {rate:g}",
            "loadavg_at_end": list(os.getloadavg()),
            "cpus": os.cpu_count(),
            "seconds": round(time.monotonic() - t0, 1),
            "start": {"term": start_term, "leader": start_leader},
            "final_terms": final,
            "leader_changes": changes,
            "writes_committed": committed,
            "write_errors": errors,
            "target": "no leader change",
            "met": not changes,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saltext_raft bench steady", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="busy-loop processes")
    p.add_argument("--rate", type=float, default=200.0, help="writes per second (one at a time)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raft-steady-") as workdir:
        result = run(args.minutes, args.burners, args.rate, workdir)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
