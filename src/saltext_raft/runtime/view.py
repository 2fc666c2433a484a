"""What a running node looks like from outside: a read-only copy for the Salt side.

Lives here: :class:`NodeView` and :class:`Replication` (frozen values) and :func:`node_view`,
which copies them out of the core node; :func:`entry_committed` (what a ``committed`` request
is answered with, ``runtime.remote``). The engine (readiness, ``raft.members``) and the bench
read a node through these instead of the core's internals. Must not live here: how the
Salt side judges them (readiness rules, staleness), anything that changes the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saltext_raft.core import Membership
from saltext_raft.core import RaftNode
from saltext_raft.core import Role


@dataclass(frozen=True)
class Replication:
    """A leader's view of one other member's log."""

    #: The highest entry the leader knows is on that member's disk.
    match: int
    #: The leader heard from it since its last check-quorum round (one election timeout).
    active: bool


@dataclass(frozen=True)
class NodeView:
    """One node's role, leader, indexes and membership, copied at one moment."""

    node_id: str
    #: "leader", "follower", "candidate", ... (``core.Role`` values).
    role: str
    #: The leader this node knows of, "" if none.
    leader: str
    term: int
    commit_index: int
    last_index: int
    #: The latest membership in this node's log (committed or not).
    membership: Membership
    #: The membership in force at the commit index, and the index of its entry.
    committed_index: int
    committed: Membership
    #: On a leader, each other member's replication; empty on any other node.
    replication: Mapping[str, Replication]

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER.value


def node_view(node: RaftNode) -> NodeView:
    committed_index, committed = node.membership_at(node.commit_index)
    replication = {}
    if node.role is Role.LEADER:
        replication = {
            nid: Replication(pr.match, pr.recent_active)
            for nid, pr in node.progress.items()
            if nid != node.id
        }
    return NodeView(
        node_id=node.id,
        role=node.role.value,
        leader=node.leader,
        term=node.term,
        commit_index=node.commit_index,
        last_index=node.last_index,
        membership=node.membership,
        committed_index=committed_index,
        committed=committed,
        replication=replication,
    )


def entry_committed(node: RaftNode, index: int, term: int) -> bool | None:
    """Whether entry ``(index, term)`` is committed on ``node`` (True), was replaced or never
    existed in that term (False), or ``node`` cannot tell yet (None)."""
    if index > node.commit_index:
        return None
    at = node.term_at(index)
    if at is None:  # compacted behind the snapshot: only its last entry's term is known
        meta = node.snapshot_meta
        return meta.term == term if index == meta.index else None
    return at == term
