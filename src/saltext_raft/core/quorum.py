"""Quorum arithmetic over a voter set: pure functions, no state.

Only voters count. Learners are never passed in here (Salt core defect 1: learners'
acknowledgements counted toward the commit quorum).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from collections.abc import Mapping


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n_voters: int) -> int:
    """Smallest number of voters that forms a quorum."""
    return n_voters // 2 + 1


def committed_index(voters: Collection[str], match: Mapping[str, int]) -> int:
    """The largest index known to be stored on a majority of ``voters``.

    Voters missing from ``match`` count as having stored nothing. An empty voter set commits
    nothing (returns 0): a node with no voters must never decide anything alone.
    """
    if not voters:
        return 0
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    """Outcome of an election given the votes received so far (granted True, refused False)."""
    if not voters:
        return VoteResult.LOST
    granted = sum(1 for v in voters if votes.get(v) is True)
    refused = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if refused > len(voters) - need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[str], present: Collection[str]) -> bool:
    """True when ``present`` includes a majority of ``voters``."""
    if not voters:
        return False
    return sum(1 for v in voters if v in present) >= majority(len(voters))
