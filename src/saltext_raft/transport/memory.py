"""An in-memory transport for tests: same interface as the pyzmq one, no sockets.

Lives here: :class:`MemoryNetwork` (a hub that routes by node id, with switches to cut links
or drop everything) and :class:`MemoryTransport`. By default every message goes through the
codec round trip (and optionally through frame sealing), so a test with the memory transport
still catches a message the real transport could not carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from saltext_raft.core.types import Message
from saltext_raft.transport import codec
from saltext_raft.transport.base import Transport

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """Routes messages between :class:`MemoryTransport` objects registered under their ids.

    ``cut(a, b)`` drops messages from a to b (one direction); ``heal()`` restores all links.
    ``filter`` (msg -> bool) drops messages for which it returns False.
    """

    def __init__(self, *, serialize: bool = True, max_queue: int = 10_000):
        self.serialize = serialize
        self.max_queue = max_queue
        self.nodes: dict[str, MemoryTransport] = {}
        self.cut_links: set[tuple[str, str]] = set()
        self.filter: Callable[[Message], bool] | None = None

    def cut(self, frm: str, to: str, both: bool = True) -> None:
        self.cut_links.add((frm, to))
        if both:
            self.cut_links.add((to, frm))

    def heal(self) -> None:
        self.cut_links.clear()

    def transport(self, node_id: str, **kwargs) -> MemoryTransport:
        return MemoryTransport(self, node_id, **kwargs)


class MemoryTransport(Transport):
    """Delivery is asynchronous (scheduled with ``call_soon``) like a real network."""

    def __init__(self, network: MemoryNetwork, node_id: str, **kwargs):
        super().__init__(node_id, **kwargs)
        self.network = network
        self._peers: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, int] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.network.nodes[self.node_id] = self

    def set_peers(self, addresses: dict[str, str]) -> None:
        self._peers = {nid: addr for nid, addr in addresses.items() if nid != self.node_id}

    def send(self, msg: Message) -> bool:
        if self._closed or self._loop is None:
            return False
        to = msg.to
        if to not in self._peers:
            self._drop("unknown_peer", to, "no address for this peer")
            return False
        if self.network.serialize:
            try:
                data = codec.encode_message(msg)
            except codec.CodecError as exc:
                self._drop("unencodable", to, exc.detail)
                return False
        else:
            data = msg
        if self._pending.get(to, 0) >= self.network.max_queue:
            self._drop("queue_full", to, "peer queue full")
            return False
        self._sent += 1
        if (self.node_id, to) in self.network.cut_links:
            return True  # lost in the network, as far as the sender can tell
        if self.network.filter is not None and not self.network.filter(msg):
            return True
        self._pending[to] = self._pending.get(to, 0) + 1
        self._loop.call_soon(self._arrive, to, data)
        return True

    def _arrive(self, to: str, data) -> None:
        self._pending[to] -= 1
        peer = self.network.nodes.get(to)
        if peer is None or peer._closed:
            return
        peer._receive(self.node_id, data)

    def _receive(self, frm: str, data) -> None:
        if frm not in self._peers:
            self._drop("unknown_sender", frm, "sender is not a peer")
            return
        if isinstance(data, bytes):
            try:
                msg = codec.decode_message(data)
            except codec.CodecError as exc:
                self._drop(exc.reason, frm, exc.detail)
                return
        else:
            msg = data
        self._deliver(msg)

    async def close(self) -> None:
        if self.network.nodes.get(self.node_id) is self:
            del self.network.nodes[self.node_id]
        self._mark_closed()
