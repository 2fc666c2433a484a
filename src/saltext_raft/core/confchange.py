"""Membership changes: the arithmetic of one change, and the configurations a log sets.

Lives here: ``changed_membership`` (the membership that results from one single-server change,
thesis §4.1, or the reason it is refused) and ``ConfHistory`` (the configuration in force at
the snapshot and the one set by each CONF entry in the log, so that a node uses the latest one,
committed or not, and rolls back to the previous one when a CONF entry is truncated).
Like etcd-io/raft's ``confchange``, pure values in and out.

Must not live here: when a change may be proposed (one uncommitted change at a time, no change
during a leader transfer or before the leader's first entry commits), what a leader does when
membership changes (progress for new members, stepping down once removed): that is the Raft
node's (``node.py``). The value types (``Membership``, ``ConfChange``) are in ``types.py``.
"""

from __future__ import annotations

import bisect

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import Entry
from saltext_raft.core.types import Membership
from saltext_raft.core.types import ProposalDropped
from saltext_raft.core.types import RaftError


def changed_membership(cur: Membership, op: ConfOp, node_id: str, address: str, index: int):
    """The membership after ``op`` on ``node_id`` in ``cur``, for the CONF entry at ``index``.

    Raises ``ProposalDropped`` with the reason when the change is not allowed.
    """
    voters, learners, demoted = set(cur.voters), set(cur.learners), set(cur.demoted)
    addresses = cur.addresses
    removed = cur.removed
    if not node_id:
        raise ProposalDropped("node id is empty")
    if op is ConfOp.ADD_LEARNER:
        if node_id in cur.members:
            raise ProposalDropped(f"{node_id} is already a member")
        problem = node_id_problem(node_id)
        if problem:  # the last line: an invalid id never enters a membership
            raise ProposalDropped(problem)
        learners.add(node_id)
        addresses = cur.with_address(node_id, address)
        removed = cur.with_removed(node_id, 0)  # an explicit add clears the tombstone
    elif op is ConfOp.PROMOTE:
        if node_id not in learners:
            raise ProposalDropped(f"{node_id} is not a learner")
        learners.discard(node_id)
        demoted.discard(node_id)
        voters.add(node_id)
    elif op is ConfOp.DEMOTE:
        if node_id not in voters:
            raise ProposalDropped(f"{node_id} is not a voter")
        if len(voters) == 1:
            raise ProposalDropped("cannot demote the last voter")
        voters.discard(node_id)
        learners.add(node_id)
        demoted.add(node_id)  # auto-promotion must not undo a deliberate demotion
    elif op is ConfOp.REMOVE:
        if node_id not in cur.members:
            raise ProposalDropped(f"{node_id} is not a member")
        if node_id in voters and len(voters) == 1:
            raise ProposalDropped("cannot remove the last voter")
        voters.discard(node_id)
        learners.discard(node_id)
        demoted.discard(node_id)
        addresses = cur.with_address(node_id, "")
        # A tombstone: the removed node may not add itself back (runtime JOIN) until an
        # explicit add; it carries the index of this entry so that everyone can say when.
        removed = cur.with_removed(node_id, index)
    else:
        raise ProposalDropped(f"unsupported membership operation {op.value}")
    return Membership(
        frozenset(voters), frozenset(learners), addresses, frozenset(demoted), removed
    )


class ConfHistory:
    """(index, membership) for the snapshot and every CONF entry in the log, oldest first."""

    __slots__ = ("_confs", "_indexes")

    def __init__(self, index: int, membership: Membership):
        self._confs: list[tuple[int, Membership]] = [(index, membership)]
        self._indexes: list[int] = [index]

    def reset(self, index: int, membership: Membership) -> None:
        """A snapshot replaced the log: only its configuration is left."""
        self._confs = [(index, membership)]
        self._indexes = [index]

    @property
    def latest(self) -> Membership:
        return self._confs[-1][1]

    @property
    def latest_index(self) -> int:
        return self._indexes[-1]

    def at(self, index: int) -> tuple[int, Membership]:
        """The configuration in force at ``index`` and the index of the entry that set it."""
        k = bisect.bisect_right(self._indexes, index) - 1
        if k < 0:
            raise RaftError(f"no configuration known at index {index}")
        return self._confs[k]

    def push(self, entry: Entry) -> None:
        cc = ConfChange.decode(entry.data)
        if cc.result is None:
            raise RaftError(f"configuration entry {entry.index} carries no resulting membership")
        self._confs.append((entry.index, cc.result))
        self._indexes.append(entry.index)

    def rollback(self, from_index: int) -> bool:
        """Entries from ``from_index`` on were truncated: forget the configurations they set.
        True if any was forgotten."""
        changed = False
        while len(self._confs) > 1 and self._indexes[-1] >= from_index:
            self._confs.pop()
            self._indexes.pop()
            changed = True
        return changed

    def compact(self, log_start: int) -> None:
        """Keep the configuration in force at the new log start, and everything after it."""
        k = bisect.bisect_right(self._indexes, log_start) - 1
        if k > 0:
            del self._confs[:k]
            del self._indexes[:k]
