"""A standalone Raft node without a Salt master: ``python -m saltext_raft node``.

Lives here: argument parsing, building the store (a durable ``CacheStore`` over Salt's localfs
cache in ``--data-dir``; Salt is only used as a library for that), the node itself
(``runtime.assemble``: pyzmq transport and runtime, with the built-in KV state machine), the
local control channel and a loop-lag monitor
(``status`` reports the event loop's longest stall and the process's memory). Used by the
functional tests and the benchmarks. Prints one JSON line ``{"event": "ready", ...}`` on stdout
once it listens (with the control address), then logs to stderr.

Example::

    python -m saltext_raft node --id n1 --listen 127.0.0.1:4701 \\
        --peers n1=127.0.0.1:4701,n2=127.0.0.1:4702,n3=127.0.0.1:4703 \\
        --data-dir /tmp/n1 --secret-file /tmp/secret

``--secret-file`` is read and checked as the engine reads ``secret_file``
(``integration.secret``: owned by this user, mode 0600 or stricter, at least 32 bytes of key
material; ``python -m saltext_raft secret generate PATH`` writes one); a file that fails a
check stops the node with exit status 2 and says why.

The control channel is a unix socket, ``control.sock`` in ``--data-dir`` (mode 0600 from the
moment it exists, in a data directory made 0700): only the node's user can reach it. A
``--data-dir`` that exists must be private to the node's user (``ensure_private_dir``, the
engine's rule for its state directory): one another user made stops the node with exit status
2, as does a boot epoch file there that is no regular file of this user.
``--control host:port`` serves it on loopback TCP instead, **unauthenticated**: every local
user can then write data and change membership. Use that only on a machine without untrusted
local users (benchmarks); a non-loopback address is refused.

``--allow-fault-injection`` (test only, off by default) enables the ``partition`` control op:
``{"op": "partition", "peers": ["n2", "n3"]}`` makes this node drop every message to and from
those peers (counted as ``partitioned`` in ``status``'s transport drops); ``"peers": []``
heals. Without the flag the op is refused (``rejected``). Masters have no such op.

``--founders`` (default: every id in ``--peers``) names the founding voters. A node that is not
a founder, or is started with ``--join``, starts empty and asks a peer to add it as a learner.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import os
import signal
import sys

from saltext_raft.bench.nodeload import run_load
from saltext_raft.core.nodeid import InvalidNodeId
from saltext_raft.core.nodeid import check_node_id
from saltext_raft.master.bootepoch import EpochFileError
from saltext_raft.master.bootepoch import claim_epoch
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.master.secret import SecretError
from saltext_raft.master.secret import read_secret_file
from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import RaftRuntime
from saltext_raft.runtime import Rejected
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime.assemble import NodeSpec
from saltext_raft.runtime.assemble import assemble
from saltext_raft.runtime.control import ControlServer
from saltext_raft.runtime.looplag import LoopLagMonitor

log = logging.getLogger(__name__)


def parse_peers(text: str) -> dict[str, str]:
    peers = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        nid, sep, addr = item.partition("=")
        if not sep or not nid or not addr:
            raise argparse.ArgumentTypeError(f"peer {item!r} is not id=host:port")
        peers[node_id_arg(nid)] = addr
    return peers


def node_id_arg(text: str) -> str:
    try:
        return check_node_id(text)
    except InvalidNodeId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The control socket's name inside --data-dir.
CONTROL_SOCKET = "control.sock"


def control_address(control: str | None, data_dir: str) -> str:
    """Where the control channel listens: the unix socket in the data directory by default;
    "host:port" only on a loopback address (it is unauthenticated)."""
    if not control:
        return os.path.join(os.path.abspath(data_dir), CONTROL_SOCKET)
    if "/" in control:
        return control
    host, sep, port = control.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not sep or not port.isdigit() or not loopback:
        raise SystemExit(
            f"--control {control!r}: give a unix socket path or a loopback host:port "
            "(the TCP control channel is unauthenticated)"
        )
    return control


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saltext_raft node", description=__doc__.split("\n")[0]
    )
    p.add_argument("--id", required=True, type=node_id_arg)
    p.add_argument("--listen", required=True, help="host:port for Raft traffic")
    p.add_argument("--peers", type=parse_peers, default={}, help="id=host:port,... (known nodes)")
    p.add_argument(
        "--founders", default=None, help="comma-separated founding voter ids (default: all peers)"
    )
    p.add_argument(
        "--join", action="store_true", help="never bootstrap: ask a peer to add this node"
    )
    p.add_argument("--data-dir", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--cluster-id", default="raft")
    p.add_argument(
        "--control",
        default=None,
        help=f"unix socket path (default: {CONTROL_SOCKET} in --data-dir), or a loopback "
        "host:port: unauthenticated, any local user can use it",
    )
    p.add_argument(
        "--max-entry-bytes",
        type=int,
        default=RuntimeConfig.max_entry_bytes,
        help="largest proposal; also sets the largest frame accepted",
    )
    p.add_argument("--store", choices=("cache", "memory"), default="cache")
    p.add_argument(
        "--tick", type=float, default=RuntimeConfig.tick_seconds, help="tick length, seconds"
    )
    p.add_argument("--election-ticks", type=int, default=None)
    p.add_argument("--heartbeat-ticks", type=int, default=None)
    p.add_argument("--snapshot-interval", type=int, default=RuntimeConfig.snapshot_interval)
    p.add_argument("--snapshot-keep", type=int, default=RuntimeConfig.snapshot_keep)
    p.add_argument(
        "--max-pending",
        type=int,
        default=RuntimeConfig.max_pending_proposals,
        help="proposals waiting here beyond which a new one is refused as overloaded",
    )
    p.add_argument(
        "--follower-inline-saves",
        choices=("on", "off"),
        default="on" if RuntimeConfig.follower_inline_saves else "off",
        help="a follower saves on the event loop instead of the storage thread",
    )
    p.add_argument(
        "--allow-fault-injection",
        action="store_true",
        help="TEST ONLY: enable the 'partition' control op (drop links to chosen peers)",
    )
    p.add_argument("--log-level", default="info")
    return p


def open_node_store(args):
    if args.store == "memory":
        from saltext_raft.storage import MemoryStore  # pylint: disable=import-outside-toplevel

        return MemoryStore()
    import salt.config  # pylint: disable=import-outside-toplevel

    from saltext_raft.storage import open_store  # pylint: disable=import-outside-toplevel

    os.makedirs(args.data_dir, exist_ok=True)
    # Salt 3007's loader needs the full default opts, not just cachedir/cache.
    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts.update(cachedir=args.data_dir, cache="localfs")
    return open_store(opts, args.cluster_id, args.id)


async def _load(rt: RaftRuntime, req: dict) -> dict:
    """The benchmark load, run inside the node so that no client round trip is measured
    (``bench.nodeload``)."""
    return await run_load(rt, req)


async def _get(rt: RaftRuntime, req: dict):
    if req.get("linearizable", True):
        await rt.read(req.get("timeout"))
    value = rt.sm.get(str(req.get("key", "")).encode())
    return None if value is None else value.decode("latin-1")


def _set(rt: RaftRuntime, req: dict) -> asyncio.Future:
    """A future handler (``ControlServer``): answered from the proposal's future, without a
    task of its own; ``set`` is the write the external-client benchmarks time."""
    cmd = DictStateMachine.set_command(
        str(req["key"]).encode(), str(req.get("value", "")).encode("latin-1")
    )
    return rt.submit(cmd, req.get("timeout"))


async def _sm_stats(rt: RaftRuntime, req: dict) -> dict:
    """How many entries the state machine applied and how many keys it holds: a test that sets
    every key once finds a write applied twice as ``count > keys``."""
    return {"count": rt.sm.count, "keys": len(rt.sm.data), "applied": rt.sm.applied}


#: Why the ``partition`` op is refused on a node started without the flag.
FAULT_INJECTION_OFF = (
    "fault injection is disabled on this node: the 'partition' op is for tests only "
    "(start the node with --allow-fault-injection)"
)


def partition_op(transport):
    """The ``partition`` control op over ``transport`` (a PartitionableZmqTransport), or, with
    None (the node was started without ``--allow-fault-injection``), an op that refuses."""

    async def _partition(rt: RaftRuntime, req: dict) -> dict:
        """Test-only: cut this node's links to ``peers`` (a list of ids; empty heals)."""
        if transport is None:
            raise Rejected(FAULT_INJECTION_OFF)
        peers = req.get("peers")
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise Rejected("partition: 'peers' must be a list of node ids (empty to heal)")
        try:
            now = transport.partition(peers)
        except ValueError as exc:  # an invalid id (InvalidNodeId) or its own
            raise Rejected(f"partition: {exc}") from None
        log.warning("fault injection: links to %s cut (empty: healed)", now)
        return {"partitioned_from": now}

    return _partition


def process_memory() -> dict:
    """This process's resident memory now and at its peak (Linux /proc; {} elsewhere)."""
    out = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    name = "rss_bytes" if key == "VmRSS" else "rss_peak_bytes"
                    out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


async def serve(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
    )
    transport_class = None  # assemble's default: ZmqTransport
    if args.allow_fault_injection:
        from saltext_raft.transport.faults import PartitionableZmqTransport  # pylint: disable=import-outside-toplevel

        transport_class = PartitionableZmqTransport
    try:
        secret = read_secret_file(args.secret_file)
    except SecretError as exc:
        log.error("--secret-file: %s", exc)
        return 2
    peers = dict(args.peers)
    peers.setdefault(args.id, args.listen)
    founders_ids = args.founders.split(",") if args.founders else list(peers)
    founders = {node_id_arg(n): peers.get(n, "") for n in founders_ids if n}
    try:
        # The node's Raft storage, boot epoch and control socket live there: a directory
        # another local user made (in /tmp, say) would let them plant or replace any of it.
        ensure_private_dir(args.data_dir, "--data-dir")
        epoch = claim_epoch(args.data_dir)
    except (UnsafeDirectory, EpochFileError) as exc:
        log.error("--data-dir: %s", exc)
        return 2
    control_at = control_address(args.control, args.data_dir)
    if "/" in control_at and os.path.dirname(control_at) == os.path.abspath(args.data_dir):
        os.chmod(args.data_dir, 0o700)  # the socket's directory: nobody else may even look
    spec = NodeSpec(
        node_id=args.id,
        cluster_id=args.cluster_id,
        listen=args.listen,
        advertise=args.listen,
        secret=secret,
        peers=peers,
        founders=founders,
        join=args.join,
        election_ticks=args.election_ticks or None,  # 0: the default, as before
        heartbeat_ticks=args.heartbeat_ticks or None,
    )
    config = RuntimeConfig(
        tick_seconds=args.tick,
        snapshot_interval=args.snapshot_interval,
        snapshot_keep=args.snapshot_keep,
        max_pending_proposals=args.max_pending,
        follower_inline_saves=args.follower_inline_saves == "on",
        max_entry_bytes=args.max_entry_bytes,
    )
    rt = assemble(
        spec,
        open_node_store(args),
        DictStateMachine(),
        config,
        transport_class=transport_class,
        epoch=epoch,
    )
    await rt.start()
    lag = LoopLagMonitor()
    lag.start()

    async def _status(rt_, req):
        st = rt_.status()
        st["loop_lag"] = lag.stats(reset=bool(req.get("reset_loop_lag")))
        st["process"] = process_memory()
        return st

    control = ControlServer(
        rt,
        control_at,
        handlers={
            "load": _load,
            "get": _get,
            "sm_stats": _sm_stats,
            "status": _status,
            "partition": partition_op(rt.transport if args.allow_fault_injection else None),
        },
        future_handlers={"set": _set},
    )
    bound = await control.start()
    # Everything loaded so far (Salt, the loaders, the restored state) lives as long as the
    # process: keep it out of the cyclic GC's full collections, which otherwise walk those
    # ~50k objects every few hundred ms under load (20-50 ms event-loop pauses each).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        json.dumps(
            {
                "event": "ready",
                "id": args.id,
                "listen": args.listen,
                "control": bound,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    while not stop.is_set() and rt.running:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    lag.stop()
    await control.close()
    await rt.stop()
    return 0 if rt.status()["runtime"]["failure"] is None else 1


def main(argv=None) -> int:
    return asyncio.run(serve(argv))


if __name__ == "__main__":
    sys.exit(main())
