"""What a leader knows about one follower's log, and the flow control that follows from it.

A follower is in one of three states (as in etcd-io/raft's tracker):
- PROBE: the leader does not know where the follower's log matches; it sends one
  AppendEntries and waits for the answer (or the next heartbeat response) before the next.
- REPLICATE: the logs match up to ``match``; the leader streams entries optimistically,
  ``next`` runs ahead of ``match``, and at most ``max_inflight`` messages are unacknowledged.
- SNAPSHOT: the follower needs entries the leader has compacted; the leader sends the snapshot
  in chunks and sends no entries until the follower has installed it.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "recent_active",
        "sent_commit",
        "snap_index",
        "snap_offset",
        "snap_acked",
        "snap_acked_at_heartbeat",
    )

    def __init__(self, next_index: int, max_inflight: int, match: int = 0):
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        self.recent_active = False
        self.sent_commit = 0
        # InstallSnapshot transfer state (SNAPSHOT only)
        self.snap_index = 0
        self.snap_offset = 0  # next byte to send
        self.snap_acked = 0  # bytes the follower confirmed
        self.snap_acked_at_heartbeat = -1

    # --- state transitions ------------------------------------------------------------------
    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflight.clear()
        self.snap_index = 0
        self.snap_offset = 0
        self.snap_acked = 0
        self.snap_acked_at_heartbeat = -1

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # after a snapshot the follower holds at least the snapshot index
            snap = self.snap_index
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, snap + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snap_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snap_index = snap_index

    # --- acknowledgements ---------------------------------------------------------------------
    def maybe_update(self, index: int) -> bool:
        """An acceptance for ``index`` arrived. Returns True if ``match`` moved forward."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        if self.inflight:
            while self.inflight and self.inflight[0] <= index:
                self.inflight.popleft()
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append whose previous index was ``rejected`` arrived.

        Returns False when the rejection is stale (out of order, already superseded).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int) -> None:
        """Entries up to ``last_index`` were just sent."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def to_dict(self) -> dict:
        return {
            "match": self.match,
            "next": self.next,
            "state": self.state.value,
            "inflight": len(self.inflight),
            "recent_active": self.recent_active,
        }
