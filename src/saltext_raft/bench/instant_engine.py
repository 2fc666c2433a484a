"""``python -m saltext_raft.bench.instant_engine``: an engine that answers every write at once.

For the cache benchmark's ceiling (section ``store_instant_engine``): the same writer processes,
through the same Salt loader, ``raft`` driver and engine socket protocol, against engines that do
no work at all for a write (no Raft, no log, no local copy). Whatever rate and CPU per store the
writers reach against it bound what any engine can reach on the machine: a real engine has to fit
its replication, storage and apply into the CPU the writers leave over.

It serves the socket with the engine's own :class:`~saltext_raft.runtime.control.ControlServer`
and answers ``cache.store``, ``cache.add`` and ``cache.flush`` from an already-resolved future,
the fast path the real :class:`~saltext_raft.replicated.service.CacheService` uses, so the
per-request parse and answer cost is the engine's. Prints one JSON line ``{"event": "ready"}``
once it listens; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from saltext_raft.runtime.control import ControlServer


def _done(_runtime, _request) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(True)
    return fut


async def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m saltext_raft.bench.instant_engine")
    p.add_argument("--socket", required=True, help="the unix socket to serve (raft_cache_socket)")
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(args.socket) or ".", exist_ok=True)
    server = ControlServer(
        None,
        args.socket,
        future_handlers=dict.fromkeys(("cache.store", "cache.add", "cache.flush"), _done),
    )
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
