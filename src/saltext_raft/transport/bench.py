"""Microbenchmark of the transport: ``python -m saltext_raft bench transport [--quick]``.

Prints one JSON object:

* ``frame_us``: CPU microseconds per frame for encode+seal and for open+decode of an APPEND
  carrying 0, 1 and 64 entries of 100 bytes, and of a HEARTBEAT;
* ``loopback``: messages/s received by one ZmqTransport on 127.0.0.1 when a second transport
  in another process sends small APPEND_RESP messages as fast as it can
  (``receiver_msgs_per_s``); the receiver's CPU µs per message (``receiver_cpu_us_per_msg``,
  independent of other load on the host); and the rate with both transports in one process
  and one event loop (``same_loop_msgs_per_s``, which also pays for the sending side).

Not used by the tests; figures are quoted in docs/transport.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import time

from saltext_raft.core.types import Entry
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.transport.codec import decode_message
from saltext_raft.transport.codec import encode_message
from saltext_raft.transport.config import TransportConfig
from saltext_raft.transport.crypto import FrameCrypto

SECRET = b"bench-secret-bench-secret-012345"
CLUSTER = "bench"


def _append(n_entries: int) -> Message:
    entries = tuple(Entry(7, 1000 + i, 0, os.urandom(100)) for i in range(n_entries))
    return Message(MsgType.APPEND, "b", "a", 7, log_term=7, index=999, entries=entries, commit=990)


def frame_costs(rounds: int) -> dict:
    out = {}
    cases = {
        "heartbeat": Message(MsgType.HEARTBEAT, "b", "a", 7, commit=990),
        "append_0": _append(0),
        "append_1": _append(1),
        "append_64": _append(64),
    }
    for aead in ("chacha20poly1305", "aesgcm"):
        for name, msg in cases.items():
            n = max(200, rounds // (1 + len(msg.entries) // 4))
            sender = FrameCrypto(SECRET, CLUSTER, "a", aead=aead)
            receiver = FrameCrypto(SECRET, CLUSTER, "b", aead=aead)
            t0 = time.process_time()
            frames = [sender.seal("b", encode_message(msg)) for _ in range(n)]
            t1 = time.process_time()
            for frame in frames:
                _, plaintext = receiver.open(frame)
                decoded = decode_message(plaintext)
            t2 = time.process_time()
            assert decoded == msg
            out[f"{aead}/{name}"] = {
                "bytes": len(frames[0]),
                "encode_seal_us": round((t1 - t0) / n * 1e6, 2),
                "open_decode_us": round((t2 - t1) / n * 1e6, 2),
            }
    return out


def _config(node: str, listen: str = "127.0.0.1:0") -> TransportConfig:
    return TransportConfig(CLUSTER, node, SECRET, listen=listen, send_hwm=100_000, recv_hwm=100_000)


async def _sender_main(endpoint: str, seconds: float) -> None:
    from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

    tx = ZmqTransport(_config("a"))
    await tx.start()
    tx.set_peers({"b": endpoint})
    msg = Message(MsgType.APPEND_RESP, "b", "a", 7, index=12345)
    deadline = time.monotonic() + seconds
    send = tx.send
    while time.monotonic() < deadline:
        for _ in range(1000):
            send(msg)
        await asyncio.sleep(0)
    await tx.close()


def _sender_process(endpoint: str, seconds: float) -> None:
    asyncio.run(_sender_main(endpoint, seconds))


async def _receive_rate(seconds: float) -> dict:
    from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

    rx = ZmqTransport(_config("b"))
    await rx.start()
    rx.set_peers({"a": "127.0.0.1:1"})  # address unused: b only receives
    count = 0

    def handler(_msg):
        nonlocal count
        count += 1

    rx.set_handler(handler)
    proc = multiprocessing.get_context("spawn").Process(
        target=_sender_process, args=(rx.bound_endpoint, seconds + 1.5)
    )
    proc.start()
    try:
        # let the sender start up and reach full speed, then measure a window
        while count == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        c0, t0, cpu0 = count, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        c1, t1, cpu1 = count, time.perf_counter(), time.process_time()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 30)
        await rx.close()
    return {
        "receiver_msgs_per_s": round((c1 - c0) / (t1 - t0)),
        # CPU time of the receiving process per message: independent of other load on the host
        "receiver_cpu_us_per_msg": round((cpu1 - cpu0) / max(1, c1 - c0) * 1e6, 2),
    }


async def _same_loop_rate(n: int) -> dict:
    from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

    a = ZmqTransport(_config("a"))
    b = ZmqTransport(_config("b"))
    await a.start()
    await b.start()
    a.set_peers({"b": b.bound_endpoint})
    b.set_peers({"a": a.bound_endpoint})
    got = 0
    done = asyncio.get_running_loop().create_future()

    def handler(_msg):
        nonlocal got
        got += 1
        if got >= n and not done.done():
            done.set_result(None)

    b.set_handler(handler)
    msg = Message(MsgType.APPEND_RESP, "b", "a", 7, index=12345)
    while got == 0:  # wait for the connection
        a.send(msg)
        await asyncio.sleep(0.01)
    got = 0
    sent = 0
    t0 = time.perf_counter()
    while sent < n:
        for _ in range(200):
            sent += a.send(msg)
        await asyncio.sleep(0)
    try:
        await asyncio.wait_for(done, 30)
    except asyncio.TimeoutError:
        pass
    dt = time.perf_counter() - t0
    dropped = a.stats()["dropped"]["queue_full"]
    await a.close()
    await b.close()
    return {"same_loop_msgs_per_s": round(got / dt), "same_loop_sender_drops": dropped}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saltext_raft bench transport", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args(argv)
    rounds = 2000 if args.quick else 20000
    result = {
        "python": platform.python_version(),
        "frame_us": frame_costs(rounds),
        "loopback": {},
    }
    import zmq  # pylint: disable=import-outside-toplevel

    result["pyzmq"] = zmq.__version__
    result["libzmq"] = zmq.zmq_version()
    result["loopback"].update(asyncio.run(_receive_rate(0.5 if args.quick else 3.0)))
    result["loopback"].update(asyncio.run(_same_loop_rate(20_000 if args.quick else 200_000)))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
