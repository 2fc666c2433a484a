"""Configuration of the Raft core: timing in ticks, flow control, membership automation.

Time is counted in ticks; the driver decides how long a tick is. ``validate()`` rejects bad
settings with a reason that names the option.
"""

from __future__ import annotations

from dataclasses import dataclass

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.core.types import ConfigError

#: The one home of the default timing in ticks. The runtime pairs it with its default tick
#: (``runtime.config.DEFAULT_TICK_SECONDS``, 25 ms: an election timeout of 300-600 ms and a
#: heartbeat every 50 ms). The paper tests pin their own timing (``tests/unit/core/cluster.py``).
DEFAULT_ELECTION_TICKS = 12
DEFAULT_HEARTBEAT_TICKS = 2


@dataclass
class Config:
    id: str
    #: A follower that hears nothing from a leader for a random number of ticks in
    #: [election_ticks, 2 * election_ticks) starts an election.
    election_ticks: int = DEFAULT_ELECTION_TICKS
    #: A leader sends heartbeats every heartbeat_ticks.
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    #: Ask for votes without bumping the term first (thesis §9.6): a partitioned node that
    #: rejoins does not disrupt a working leader.
    pre_vote: bool = True
    #: A leader that has not heard from a quorum within an election timeout steps down, and a
    #: node that heard from a live leader within the timeout refuses votes (thesis §6.2, §4.2.3).
    check_quorum: bool = True
    #: Upper bound on the entry bytes of one AppendEntries (at least one entry is always sent).
    max_msg_bytes: int = 1 << 20
    #: Upper bound on unacknowledged AppendEntries per follower (pipelining window).
    max_inflight: int = 256
    #: Bytes of snapshot data per InstallSnapshot chunk.
    snapshot_chunk_bytes: int = 1 << 20
    #: The leader promotes a learner to voter once the learner is caught up.
    auto_promote: bool = True
    #: "Caught up" for auto-promotion: the learner's match index is within this many entries
    #: of the leader's last index.
    promote_lag: int = 0
    #: Upper bound on entry bytes handed out as committed_entries in one Ready (at least one).
    max_apply_bytes: int = 4 << 20

    def validate(self) -> Config:
        problem = node_id_problem(self.id)
        if problem:
            raise ConfigError(f"id: {problem}")
        for name in (
            "election_ticks",
            "heartbeat_ticks",
            "max_msg_bytes",
            "max_inflight",
            "snapshot_chunk_bytes",
            "max_apply_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.promote_lag, int) or self.promote_lag < 0:
            raise ConfigError(
                f"promote_lag: must be a non-negative integer, got {self.promote_lag!r}"
            )
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                f"election_ticks ({self.election_ticks}) must be greater than "
                f"heartbeat_ticks ({self.heartbeat_ticks})"
            )
        return self
