"""The runtime's JSON-lines control server: closing it with clients still connected."""

import asyncio
import logging

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
