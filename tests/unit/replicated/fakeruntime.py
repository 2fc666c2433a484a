"""What the cache service needs of a runtime beside proposals, for fakes that play a leader.

Lives here: :class:`LeaderPort`. Must not live here: how a fake commits (each test's own).
"""

from __future__ import annotations

from saltext_raft.runtime import RuntimeConfig


class LeaderPort:
    """A runtime that leads (so the service proposes its own batches) and records the remote
    requests the service serves (``relay``)."""

    is_leader = True
    leader = ""
    #: The runtime's settings (the service reads ``max_entry_bytes`` at start).
    config = RuntimeConfig()

    def __init__(self):
        self.served: dict = {}

    def serve(self, op, handler):
        self.served[op] = handler
