"""Attacks on the control server (``runtime/control.py``), which serves the engine's cache
socket: a client that sends and never reads, or keeps requests unanswered, must cost the
engine bounded memory and no other client its answers."""

from __future__ import annotations

import asyncio
import socket

from saltext_raft.runtime import control
from saltext_raft.runtime.control import ControlServer

#: Bytes of answers the server may hold for one connection that does not read (the transport's
#: high-water mark is 64 KiB; one parse step may add a few answers past it).
HELD_ANSWERS_LIMIT = 1 << 20


def _buffered(server: ControlServer) -> int:
    """Unsent answer bytes the server holds, over all its connections (test-only peek)."""
    conns = server._conns  # pylint: disable=protected-access
    return sum(
        c._transport.get_write_buffer_size()  # pylint: disable=protected-access
        for c in conns
        if c._transport is not None  # pylint: disable=protected-access
    )


async def _ping(path: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(b'{"id": 7, "op": "ping"}\n')
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


def test_a_client_that_sends_and_never_reads_is_held_to_a_bounded_buffer(tmp_path):
    """Regression: every request line was parsed and answered as it arrived, whatever the
    client read. 4 MiB of empty lines from a client that never reads made the engine hold
    480 MB of error answers (and spend 1.6 s in one turn of its loop). Now the server stops
    reading that client while its answers wait; it still answers every line once the client
    reads, and other clients meanwhile."""
    lines = 300_000  # empty lines: each one an error answer of about 110 bytes

    async def pong(rt, req):
        return "pong"

    async def main():
        loop = asyncio.get_running_loop()
        server = ControlServer(None, str(tmp_path / "ctl.sock"), handlers={"ping": pong})
        path = await server.start()
        flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        flood.setblocking(False)
        flood.connect(path)
        sending = loop.create_task(loop.sock_sendall(flood, b"\n" * lines))
        most = 0
        try:
            # The client does not read: watch what the server holds for it, for a bounded
            # window (or until the server took every line, which it may not).
            for _ in range(100):
                most = max(most, _buffered(server))
                if sending.done() or most > HELD_ANSWERS_LIMIT:
                    break
                await asyncio.sleep(0.01)
            assert most <= HELD_ANSWERS_LIMIT, f"{most} bytes of answers held for one client"
            assert await _ping(path) == b'{"id": 7, "ok": true, "result": "pong"}\n'
            # Now the client reads: every line gets its answer, none lost.
            got = 0
            deadline = loop.time() + 60
            while got < lines and loop.time() < deadline:
                chunk = await asyncio.wait_for(loop.sock_recv(flood, 1 << 16), 10)
                assert chunk, "the server closed the connection"
                got += chunk.count(b"\n")
                most = max(most, _buffered(server))
            assert got == lines
            assert most <= HELD_ANSWERS_LIMIT, f"{most} bytes of answers held for one client"
            await asyncio.wait_for(sending, 5)
        finally:
            sending.cancel()
            flood.close()
            await server.close()

    asyncio.run(main())


def test_a_client_that_keeps_requests_unanswered_is_not_read_past_the_limit(tmp_path, monkeypatch):
    """Regression: nothing bounded how many requests one connection had unanswered (a
    ``cache.read`` waits up to its timeout without quorum): each one a task held by the
    engine. Past ``MAX_IN_FLIGHT`` the connection is not read; once answers go out the held
    requests are served, in order, and none is lost."""
    monkeypatch.setattr(control, "MAX_IN_FLIGHT", 8, raising=False)  # raising: absent before
    started: list[int] = []

    async def main():
        gate = asyncio.Event()

        async def slow(rt, req):
            started.append(req["id"])
            await gate.wait()
            return req["id"]

        server = ControlServer(None, str(tmp_path / "ctl.sock"), handlers={"slow": slow})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(b"".join(b'{"id": %d, "op": "slow"}\n' % i for i in range(50)))
            await writer.drain()
            for _ in range(200):  # bounded: until the server started what it will start
                if len(started) >= 8:
                    break
                await asyncio.sleep(0.01)
            for _ in range(5):  # let any further parse step run: it must not start more
                await asyncio.sleep(0.01)
            assert started == list(range(8)), started
            gate.set()
            answers = [await asyncio.wait_for(reader.readline(), 5) for _ in range(50)]
            ids = sorted(int(a.split(b'"result": ')[1].rstrip(b"}\n")) for a in answers)
            assert ids == list(range(50))
            assert started == list(range(50))
        finally:
            writer.close()
            await server.close()

    asyncio.run(main())


def test_connections_past_the_limit_are_refused_with_an_answer_and_a_log_line(
    tmp_path, monkeypatch, caplog
):
    """Red team 2026-12-07: nothing bounded how many connections the server held, each with up
    to ``MAX_LINE`` (16 MiB) of an unfinished line: a process that may open the socket (the
    cache socket is 0600, the master's user; the standalone node's ``--control host:port`` is
    any local user) made the engine hold N x 16 MiB. Past ``MAX_CONNECTIONS`` a new connection
    gets an ``overloaded`` answer and is closed, with a log line; the connections held go on
    being served, and once one closes a new one is taken again."""
    monkeypatch.setattr(control, "MAX_CONNECTIONS", 8, raising=False)  # raising: absent before
    partial = b'{"id": 1, "op": "ping", "pad": "' + b"x" * 65536  # an unfinished line

    async def pong(rt, req):
        return "pong"

    async def main():
        server = ControlServer(None, str(tmp_path / "ctl.sock"), handlers={"ping": pong})
        path = await server.start()
        held = []
        try:
            for _ in range(8):
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(partial)
                await writer.drain()
                held.append((reader, writer))
            for _ in range(200):  # bounded: until the server has taken all eight
                if len(server._conns) == 8:  # pylint: disable=protected-access
                    break
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                # the refusal comes unasked (a client that wrote first may see a reset)
                answer = await asyncio.wait_for(reader.readline(), 5)
                assert b'"code": "overloaded"' in answer and b'"id": null' in answer, answer
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
            finally:
                writer.close()
            assert len(server._conns) == 8  # pylint: disable=protected-access
            # a connection held is still served: its line ends, its answer comes
            reader, writer = held[0]
            writer.write(b'"}\n')
            assert b'"result": "pong"' in await asyncio.wait_for(reader.readline(), 5)
            # one goes away: a new connection is taken again
            held.pop()[1].close()
            for _ in range(200):
                if len(server._conns) < 8:  # pylint: disable=protected-access
                    break
                await asyncio.sleep(0.01)
            assert await _ping(path) == b'{"id": 7, "ok": true, "result": "pong"}\n'
        finally:
            for _, writer in held:
                writer.close()
            await server.close()

    with caplog.at_level("WARNING", logger=control.__name__):
        asyncio.run(main())
    assert any("connections open" in r.getMessage() for r in caplog.records), caplog.text
