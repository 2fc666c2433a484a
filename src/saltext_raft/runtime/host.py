"""What the runtime's parts may use of the runtime they belong to.

Lives here: :class:`Host` — the one port every part of ``RaftRuntime`` (proposals, reads,
snapshots, admin, events, the applier) gets: the node id and runtime config, the shared
counters, waking the Ready loop, whether the node runs; and, once the runtime has started,
the event loop, the core node and the election timeout in seconds. A part reaches nothing
else of the runtime: whatever more it needs is passed to it by name. Must not live here:
behaviour (this is a plain record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core import RaftNode
from saltext_raft.runtime.config import RuntimeConfig

#: The runtime's counters (``RaftRuntime.counters``), in the order ``status()`` shows them.
COUNTERS = (
    "readies",
    "saves",
    "entries_saved",
    "applied",
    "proposals",
    "proposal_batches",
    "proposal_timeouts",
    "proposals_resent",
    "proposals_overloaded",
    "reads",
    "snapshots_taken",
    "snapshots_restored",
    "ticks",
    "background_saves",
    "hard_states_deferred",
    "commit_updates_merged",
    "inline_saves",
    "inline_saves_paused",
)


@dataclass
class Host:
    node_id: str
    config: RuntimeConfig
    #: Wake the Ready loop (a new proposal, read or request needs a pass).
    kick: Callable[[], None]
    #: Raise Stopped / StorageFailed unless the node runs.
    check_running: Callable[[], None]
    running: Callable[[], bool]
    #: ``RaftRuntime.counters``: the runtime and each part count into it.
    counters: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    #: Set by ``RaftRuntime.start()``.
    loop: asyncio.AbstractEventLoop | None = None
    node: RaftNode | None = None
    #: The core's election timeout in seconds (``election_ticks`` × ``tick_seconds``): how
    #: long to wait before asking again for a read index or a commit.
    election_seconds: float = 0.0
