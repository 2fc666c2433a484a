"""The runtime's JSON-lines control server: framing, answer order, errors, closing."""

import asyncio
import json
import logging

from saltext_raft.runtime import control
from saltext_raft.runtime.control import ControlServer


def test_close_with_a_client_connected_logs_no_cancelled_error(tmp_path, caplog):
    async def main():
        server = ControlServer(runtime=None, address=str(tmp_path / "ctl.sock"))
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"id": 1, "op": "nope"}\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert b"unknown op" in answer  # the connection task is up and waiting for a line
        await server.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        writer.close()
        for _ in range(3):  # let done-callbacks of the cancelled connection task run
            await asyncio.sleep(0)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        asyncio.run(main())
    noise = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not noise, [r.getMessage() for r in noise]


def _server(tmp_path, handlers):
    return ControlServer(runtime=None, address=str(tmp_path / "ctl.sock"), handlers=handlers)


async def _answers(reader, n):
    out = []
    for _ in range(n):
        out.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
    return out


def test_requests_split_and_joined_across_writes_are_all_answered(tmp_path):
    async def echo(rt, req):
        return req["x"]

    async def main():
        server = _server(tmp_path, {"echo": echo})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        # two requests in one write, then one split over three writes
        writer.write(b'{"id": 1, "op": "echo", "x": "a"}\n{"id": 2, "op": "echo", "x": "b"}\n')
        for part in (b'{"id": 3, "op"', b': "echo", "x"', b': "c"}\n'):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate reads on the server side, not a wait for state
        got = await _answers(reader, 3)
        assert sorted((a["id"], a["result"]) for a in got) == [(1, "a"), (2, "b"), (3, "c")]
        writer.close()
        await server.close()

    asyncio.run(main())


def test_answers_come_in_completion_order_and_bad_lines_get_an_error(tmp_path):
    async def main():
        release = asyncio.Event()

        async def slow(rt, req):
            await release.wait()
            return "slow"

        async def fast(rt, req):
            return "fast"

        server = _server(tmp_path, {"slow": slow, "fast": fast})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"id": 1, "op": "slow"}\n{"id": 2, "op": "fast"}\nnot json\n[1]\n\xff\n')
        first = await _answers(reader, 4)  # the slow one is still running
        assert {"id": 2, "ok": True, "result": "fast"} in first
        assert [a["error"]["code"] for a in first if not a["ok"]] == ["bad_request"] * 3
        release.set()
        assert await _answers(reader, 1) == [{"id": 1, "ok": True, "result": "slow"}]
        writer.close()
        await server.close()

    asyncio.run(main())


def test_end_of_input_cancels_the_connections_requests(tmp_path):
    async def main():
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def hang(rt, req):
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        server = _server(tmp_path, {"hang": hang})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"id": 1, "op": "hang"}\n')
        await asyncio.wait_for(started.wait(), 5)
        writer.write_eof()
        await asyncio.wait_for(cancelled.wait(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await server.close()

    asyncio.run(main())


def test_a_line_over_the_limit_closes_the_connection(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "MAX_LINE", 1000)

    async def main():
        server = _server(tmp_path, {})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"x" * 5000)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await server.close()

    asyncio.run(main())


def test_tcp_address_binds_a_free_loopback_port():
    async def echo(rt, req):
        return req["x"]

    async def main():
        server = ControlServer(runtime=None, address="127.0.0.1:0", handlers={"echo": echo})
        bound = await server.start()
        host, _, port = bound.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b'{"id": "t", "op": "echo", "x": 5}\n')
        assert await _answers(reader, 1) == [{"id": "t", "ok": True, "result": 5}]
        writer.close()
        await server.close()

    asyncio.run(main())


def test_a_long_request_arriving_in_many_chunks_is_answered(tmp_path):
    async def size(rt, req):
        return len(req["blob"])

    async def main():
        server = _server(tmp_path, {"size": size})
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        blob = "y" * (3 << 20)  # far more than one socket read
        writer.write(json.dumps({"id": 1, "op": "size", "blob": blob}).encode() + b"\n")
        writer.write(b'{"id": 2, "op": "size", "blob": "z"}\n')
        await writer.drain()
        got = await _answers(reader, 2)
        assert sorted((a["id"], a["result"]) for a in got) == [(1, 3 << 20), (2, 1)]
        writer.close()
        await server.close()

    asyncio.run(main())


def test_future_handlers_are_answered_from_their_futures(tmp_path):
    from saltext_raft.runtime.errors import CommitTimeout  # pylint: disable=import-outside-toplevel

    async def main():
        loop = asyncio.get_running_loop()
        futures = {}

        def later(rt, req):
            futures[req["id"]] = fut = loop.create_future()
            return fut

        def refuse(rt, req):
            raise ValueError("bad request body")

        server = ControlServer(
            runtime=None,
            address=str(tmp_path / "ctl.sock"),
            future_handlers={"later": later, "refuse": refuse},
        )
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(
            b'{"id": 1, "op": "later"}\n{"id": 2, "op": "later"}\n{"id": 3, "op": "later"}\n'
            b'{"id": 4, "op": "refuse"}\n'
        )
        refused = await _answers(reader, 1)  # answered at once: no future to wait for
        futures[2].set_exception(CommitTimeout("not committed within 1s"))
        futures[3].cancel()
        futures[1].set_result({"applied": True})
        got = await _answers(reader, 3)
        writer.close()
        await server.close()
        return refused + got

    answers = {a["id"]: a for a in asyncio.run(main())}
    assert answers[4]["error"]["code"] == "error" and "bad request body" in str(answers[4])
    assert answers[2]["error"] == {
        "code": "timeout",
        "message": "not committed within 1s",
        "definite": False,
    }
    assert answers[3]["error"]["code"] == "stopped"
    assert answers[1] == {"id": 1, "ok": True, "result": {"applied": True}}


def test_the_unix_socket_is_never_reachable_with_a_wider_mode_even_under_umask_000(
    tmp_path, monkeypatch
):
    """L2 of issue 18: the socket was bound and listening (0777 under umask 000), then chmod'ed
    0600. A client can connect from the moment the socket listens, so the mode of the path at
    every ``listen()`` must already be 0600; a watcher thread also lstat()s the path as fast
    as it can while servers start, and may only ever see 0600."""
    import os  # pylint: disable=import-outside-toplevel
    import socket  # pylint: disable=import-outside-toplevel
    import stat  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel

    path = str(tmp_path / "ctl.sock")
    at_listen: list[int | None] = []
    real_listen = socket.socket.listen

    def listen(self, *args):
        if self.family == socket.AF_UNIX:
            try:
                at_listen.append(stat.S_IMODE(os.lstat(path).st_mode))
            except FileNotFoundError:
                at_listen.append(None)  # not at the path yet: nobody can connect to it there
        return real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "listen", listen)
    seen: set[int] = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen.add(stat.S_IMODE(os.lstat(path).st_mode))
            except FileNotFoundError:
                pass

    async def main():
        for _ in range(30):
            server = ControlServer(runtime=None, address=path)
            await server.start()
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
            await server.close()
            os.unlink(path)

    old_umask = os.umask(0)
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the watcher run between any two bytecodes of start()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
        watcher.join(10)
        sys.setswitchinterval(old_switch)
        os.umask(old_umask)
    assert len(at_listen) >= 30 and set(at_listen) <= {0o600, None}, at_listen
    assert seen <= {0o600}, sorted(oct(m) for m in seen)
    assert sorted(os.listdir(tmp_path)) == []  # no private directory left behind


def test_binding_over_a_stale_socket_replaces_it(tmp_path):
    async def main():
        path = str(tmp_path / "ctl.sock")
        first = ControlServer(runtime=None, address=path)
        await first.start()
        await first.close()  # leaves the socket file, as a crashed engine would
        second = _server(tmp_path, {"ping": _pong})
        await second.start()
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"id": 1, "op": "ping"}\n')
        await writer.drain()
        assert (await _answers(reader, 1))[0]["result"] == "pong"
        writer.close()
        await second.close()

    asyncio.run(main())


async def _pong(rt, req):
    return "pong"


def test_bool_results_are_answered_byte_for_byte_as_the_encoder_writes_them(tmp_path):
    """Writes' answers (an integer id, a bool result) skip the JSON encoder; the lines must be
    the ones it writes, for any id, and other ids and results still go through it."""

    async def main():
        loop = asyncio.get_running_loop()

        def answer(rt, req):
            fut = loop.create_future()
            fut.set_result(req["result"])
            return fut

        server = ControlServer(
            runtime=None, address=str(tmp_path / "ctl.sock"), future_handlers={"w": answer}
        )
        path = await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        requests = [(0, True), (7, False), (-3, True), (10**12, False), ("s", True), (True, 1)]
        for rid, result in requests:
            writer.write(json.dumps({"id": rid, "op": "w", "result": result}).encode() + b"\n")
        lines = [await asyncio.wait_for(reader.readline(), 5) for _ in requests]
        writer.close()
        await server.close()
        return requests, lines

    requests, lines = asyncio.run(main())
    expected = [
        (control._ENCODE({"id": rid, "ok": True, "result": result}) + "\n").encode()  # pylint: disable=protected-access
        for rid, result in requests
    ]
    assert sorted(lines) == sorted(expected)
