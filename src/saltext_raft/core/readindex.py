"""ReadIndex on the leader (thesis §6.4): the requests it holds and its confirmation rounds.

Lives here: ``ReadIndex``, the leader's bookkeeping of read requests — those waiting for the
first commit of its term, those batched for the next round, and the rounds in flight (each a
heartbeat round that proves leadership once a quorum of voters answers). Like etcd-io/raft's
``read_only.go``, it holds no messages and no log: the Raft node (``node.py``) says when an
entry of its term has committed, sends the heartbeats of a round, and turns released requests
into ``ReadState``s or ``READ_INDEX_RESP`` messages.

Must not live here: the read index itself (the leader's commit index when the round starts, the
node's), lease reads (not implemented), the client side (a follower forwards ``READ_INDEX``).
"""

from __future__ import annotations

from collections import deque

from saltext_raft.core import quorum

Request = tuple[str, bytes]  # (requester id, the caller's context)


class _Round:
    """One confirmation round: the read index it proves and who has answered."""

    __slots__ = ("round_id", "index", "requests", "acks")

    def __init__(self, round_id: int, index: int, requests: list[Request], me: str):
        self.round_id = round_id
        self.index = index
        self.requests = requests
        self.acks = {me}


class ReadIndex:
    __slots__ = ("waiting", "batch", "rounds", "_seq")

    def __init__(self):
        self.waiting: list[Request] = []  # before the first commit of the leader's term
        self.batch: list[Request] = []  # for the next round
        self.rounds: deque[_Round] = deque()
        self._seq = 0

    def reset(self) -> None:
        """Leadership (or the term) changed: every request held is dropped (callers retry)."""
        self.waiting = []
        self.batch = []
        self.rounds.clear()

    def add(self, request: Request, own_term_committed: bool) -> None:
        # §6.4: a read index is only safe once an entry of the leader's term has committed
        (self.batch if own_term_committed else self.waiting).append(request)

    def own_term_committed(self) -> None:
        """An entry of the leader's term committed: the waiting requests join the next round."""
        if self.waiting:
            self.batch.extend(self.waiting)
            self.waiting = []

    def take_batch(self) -> list[Request]:
        batch, self.batch = self.batch, []
        return batch

    def start_round(self, index: int, requests: list[Request], me: str) -> int:
        """A round for ``requests`` at read index ``index``; returns its id (the heartbeats'
        context)."""
        self._seq += 1
        self.rounds.append(_Round(self._seq, index, requests, me))
        return self._seq

    def ack(self, voter: str, ctx: bytes, voters) -> list[tuple[int, list[Request]]]:
        """``voter`` answered a heartbeat of round ``ctx``: the (read index, requests) of every
        round now confirmed by a quorum of ``voters``, oldest first."""
        try:
            rid = int(ctx)
        except ValueError:
            return []
        # a heartbeat answered for round r also proves leadership for every earlier round
        for rnd in self.rounds:
            if rnd.round_id > rid:
                break
            rnd.acks.add(voter)
        released = []
        while self.rounds and quorum.has_quorum(voters, self.rounds[0].acks):
            rnd = self.rounds.popleft()
            released.append((rnd.index, rnd.requests))
        return released
