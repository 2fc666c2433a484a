"""A PySyncObj node for side-by-side comparison: ``python -m saltext_raft.bench.pysyncobj_node``.

PySyncObj (in-memory log, no journal, no fsync) with its defaults (election timeout 0.4-1.4 s)
or the ``SyncObjConf`` settings given as ``--conf name=value`` (repeatable; see
``bench.sweep.pysyncobj_best`` for the ones ``bench cluster``'s sweep uses), and a replicated
counter, plus the same JSON-lines control ops the saltext-raft node offers to
the benchmark: ``status`` and ``load`` (run inside the node, so no client round trip is
measured). Prints ``{"event": "ready", "control": "host:port"}`` when listening.
"""

from __future__ import annotations

import argparse
import json
import os
import socketserver
import sys
import threading
import time

from pysyncobj import SyncObj
from pysyncobj import SyncObjConf
from pysyncobj import replicated

from saltext_raft.bench.figures import load_figures


class Counter(SyncObj):
    def __init__(self, me, partners, conf=None):
        super().__init__(me, partners, conf)
        self.count = 0

    @replicated
    def incr(self, payload):
        self.count += 1
        return self.count


def load(obj: Counter, req: dict) -> dict:
    count = int(req.get("count", 1000))
    size = int(req.get("size", 100))
    outstanding = max(1, int(req.get("outstanding", 1)))
    duration = float(req.get("duration", 10.0))
    timeout = float(req.get("timeout", 5.0))
    payload = os.urandom(size // 2).hex()[:size].ljust(size, "x")
    lat: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    slots = threading.Semaphore(outstanding)
    start = time.perf_counter()
    stop_at = start + duration
    issued = 0
    if outstanding == 1:
        while issued < count and time.perf_counter() < stop_at:
            issued += 1
            t0 = time.perf_counter()
            try:
                obj.incr(payload, sync=True, timeout=timeout)
                lat.append(time.perf_counter() - t0)
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    else:

        def done(t0):
            def cb(res, err):
                with lock:
                    if err == 0:  # FAIL_REASON.SUCCESS
                        lat.append(time.perf_counter() - t0)
                    else:
                        errors[str(err)] = errors.get(str(err), 0) + 1
                slots.release()

            return cb

        while issued < count and time.perf_counter() < stop_at:
            if not slots.acquire(timeout=max(0.0, stop_at - time.perf_counter())):
                break
            issued += 1
            obj.incr(payload, callback=done(time.perf_counter()))
        for _ in range(outstanding):  # wait for the tail (bounded)
            slots.acquire(timeout=max(0.01, stop_at + timeout - time.perf_counter()))
    elapsed = time.perf_counter() - start
    with lock:
        return load_figures(list(lat), dict(errors), elapsed)


def status(obj: Counter) -> dict:
    st = obj.getStatus()
    return {
        "role": {0: "follower", 1: "candidate", 2: "leader"}.get(st["state"], str(st["state"])),
        "leader": str(st["leader"]) if st["leader"] else "",
        "term": st["raft_term"],
        "commit_index": st["commit_idx"],
        "applied_index": st["last_applied"],
        "has_quorum": st["has_quorum"],
        "count": obj.count,
    }


def conf_setting(text: str) -> tuple[str, object]:
    """``name=value`` for one ``SyncObjConf`` setting; the value as a bool, int or float (in
    that order of trying) or else the string. An unknown name is refused."""
    name, sep, raw = text.partition("=")
    if not sep or not hasattr(SyncObjConf(), name):
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value of a SyncObjConf setting")
    if raw in ("true", "false"):
        return name, raw == "true"
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--self", required=True)
    p.add_argument("--partners", required=True)
    p.add_argument("--control", default="127.0.0.1:0")
    p.add_argument(
        "--conf",
        type=conf_setting,
        action="append",
        default=[],
        help="a SyncObjConf setting, name=value (repeatable; default: PySyncObj's defaults)",
    )
    args = p.parse_args(argv)
    conf = SyncObjConf(**dict(args.conf)) if args.conf else None
    obj = Counter(args.self, [x for x in args.partners.split(",") if x], conf)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                req = json.loads(line)
                try:
                    if req.get("op") == "status":
                        result = status(obj)
                    elif req.get("op") == "load":
                        result = load(obj, req)
                    else:
                        raise ValueError(f"unknown op {req.get('op')!r}")
                    out = {"id": req.get("id"), "ok": True, "result": result}
                except Exception as exc:
                    out = {
                        "id": req.get("id"),
                        "ok": False,
                        "error": {"code": "error", "message": str(exc)},
                    }
                self.wfile.write(json.dumps(out, default=str).encode() + b"\n")
                self.wfile.flush()

    host, _, port = args.control.rpartition(":")
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer((host, int(port)), Handler)
    h, pt = server.server_address[:2]
    print(json.dumps({"event": "ready", "control": f"{h}:{pt}", "pid": os.getpid()}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
