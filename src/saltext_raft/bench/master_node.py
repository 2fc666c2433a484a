"""One cache "master" for the cache benchmark: ``python -m saltext_raft.bench.master_node``.

What the ``raft`` engine runs for the cache, without the rest of a Salt master: a RaftRuntime
built as the engine builds it (``runtime.assemble``) with the durable CacheStore (localfs,
fsync) and the zmq transport, and the engine's
:class:`~saltext_raft.replicated.service.CacheService` (state machine wrapper, mirror
writer thread, unix socket). Salt's request workers are played by the benchmark's writer
processes, which use the real ``raft`` driver through ``salt.cache.Cache``. Prints one JSON
line ``{"event": "ready", ...}`` once its socket listens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys

from saltext_raft.replicated.config import BACKENDS
from saltext_raft.replicated.config import DEFAULT_BACKEND


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m saltext_raft.bench.master_node")
    p.add_argument("--id", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--peers", required=True, help="id=host:port,...")
    p.add_argument("--dir", required=True, help="cachedir and sock_dir live here")
    p.add_argument("--secret-file", required=True)
    p.add_argument("--mirror-dir", help="raft_cache_dir (default: under the node's cachedir)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help=f"raft_cache_backend (default: {DEFAULT_BACKEND}, as shipped)",
    )
    p.add_argument("--batch-wait", type=float, help="raft_cache_batch_wait (default: shipped)")
    p.add_argument(
        "--no-relay", action="store_true", help="raft_cache_relay: false (followers propose)"
    )
    p.add_argument("--log-level", default="warning")
    p.add_argument("--profile", help="write cProfile stats of the event loop thread here")
    return p.parse_args(argv)


def node_opts(
    base: str,
    mirror_dir: str | None = None,
    backend: str = DEFAULT_BACKEND,
    batch_wait: float | None = None,
    relay: bool = True,
) -> dict:
    """The Salt opts of one benchmark master (shared by the node and its writers).
    ``mirror_dir``: the local copy's directory (``raft_cache_dir``), e.g. on tmpfs;
    ``backend``: its layout (``raft_cache_backend``); ``batch_wait``:
    ``raft_cache_batch_wait`` (None: the shipped default); ``relay``: ``raft_cache_relay``."""
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts.update(
        cachedir=os.path.join(base, "cache"),
        sock_dir=os.path.join(base, "sock"),
        cache="raft",
        raft_cache_timeout=10.0,
        raft_cache_backend=backend,
        __role="master",
    )
    if mirror_dir:
        opts["raft_cache_dir"] = mirror_dir
    if batch_wait is not None:
        opts["raft_cache_batch_wait"] = batch_wait
    if not relay:
        opts["raft_cache_relay"] = False
    return opts


async def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr)
    from saltext_raft.master.secret import read_secret_file  # pylint: disable=import-outside-toplevel
    from saltext_raft.replicated.config import from_opts  # pylint: disable=import-outside-toplevel
    from saltext_raft.replicated.config import storage_opts  # pylint: disable=import-outside-toplevel
    from saltext_raft.replicated.service import CacheService  # pylint: disable=import-outside-toplevel
    from saltext_raft.runtime.assemble import NodeSpec  # pylint: disable=import-outside-toplevel
    from saltext_raft.runtime.assemble import assemble  # pylint: disable=import-outside-toplevel
    from saltext_raft.storage import open_store  # pylint: disable=import-outside-toplevel

    opts = node_opts(args.dir, args.mirror_dir, args.backend, args.batch_wait, not args.no_relay)
    for key in ("cachedir", "sock_dir"):
        os.makedirs(opts[key], exist_ok=True)
    peers = dict(p.split("=", 1) for p in args.peers.split(","))
    service = CacheService(from_opts(opts))
    spec = NodeSpec(
        node_id=args.id,
        cluster_id="bench",
        listen=args.listen,
        advertise=args.listen,
        secret=read_secret_file(args.secret_file),  # the engine's checks: owner, mode, strength
        peers=peers,
        founders=peers,
    )
    rt = assemble(spec, open_store(storage_opts(opts), "bench", args.id), service.state_machine)
    loop = asyncio.get_running_loop()
    service.start_writer(loop)
    await rt.start()
    await service.start(rt)
    # As the engine does once started (master/service.py): what is loaded by now lives as
    # long as the process, so keep it out of the cyclic GC's full collections.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "id": args.id, "pid": os.getpid()}), flush=True)
    while not stop.is_set() and rt.running:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    full = rt.status()
    status = {"leader": rt.view().leader, "runtime": full["runtime"]}
    status["transport"] = full["transport"]
    status["cache"] = await service._status(rt, {})  # pylint: disable=protected-access
    print(json.dumps({"event": "stopped", "id": args.id, "status": status}), flush=True)
    await service.stop()
    await rt.stop()
    return 0


def run(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if not args.profile:
        return asyncio.run(main(argv))
    import cProfile  # pylint: disable=import-outside-toplevel

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, main(argv))
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(run())
