"""What others can subscribe to or wait for: observer events and "something changed".

Lives here: :class:`Events` — the observer callbacks (role/leader/term changes, membership
changes, the catch-up barrier), the role event after a Ready that changed role or term, and
waiting until a Ready changed role, term or applied state (``wait_changed``, ``wait_for``).
Must not live here: what happens on a change (the Salt side's observers), the Ready loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from saltext_raft.core import Ready
from saltext_raft.runtime.host import Host

log = logging.getLogger(__name__)


class Events:
    """Observers and change waiters of one node."""

    def __init__(self, host: Host):
        self._host = host
        self._observers: list[Callable[[dict], None]] = []
        self._changed: asyncio.Future | None = None
        self._term = 0

    def started(self) -> None:
        self._term = self._host.node.term

    def add_observer(self, callback: Callable[[dict], None]) -> None:
        self._observers.append(callback)

    def emit(self, event: dict) -> None:
        for cb in self._observers:
            try:
                cb(event)
            except Exception:
                log.exception(
                    "raft %s: observer failed on %s", self._host.node_id, event.get("event")
                )

    def advanced(self, rd: Ready) -> None:
        """After a Ready: the role event if role or term changed; wake the change waiters if
        role, term or the applied state changed."""
        node = self._host.node
        changed = rd.soft_state is not None or node.term != self._term or rd.committed_entries
        if rd.soft_state is not None or node.term != self._term:
            self._term = node.term
            self.emit(
                {"event": "role", "role": node.role.value, "leader": node.leader, "term": node.term}
            )
            log.info(
                "raft %s: %s in term %d, leader %s",
                self._host.node_id,
                node.role.value,
                node.term,
                node.leader or "unknown",
            )
        if changed and self._changed is not None:
            fut, self._changed = self._changed, None
            if not fut.done():
                fut.set_result(None)

    def stopped(self) -> None:
        """The node stopped: every wait in :meth:`wait_changed`, now and later, returns."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def wait_changed(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until a Ready changed role, term or applied state."""
        if self._changed is None:
            self._changed = self._host.loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked after each change); False on timeout."""
        host = self._host
        deadline = host.loop.time() + timeout
        while not predicate():
            remaining = deadline - host.loop.time()
            if remaining <= 0 or not host.running():
                return predicate()
            await self.wait_changed(min(remaining, host.config.tick_seconds * 4))
        return True
