"""This node's proposals, from ``submit()`` until the state machine's answer or an error.

Lives here: :class:`Proposals` — the queue of proposals not yet handed to the core and its
batching into ``propose_batch``, the futures of proposals waiting for their entry to be applied
(matched by the sequence number in the runtime's envelope), their deadlines, and re-sending
those whose term ended without them (issue 17, part 3). Must not live here: the envelope's
layout (``runtime.envelope``), the Ready loop and applying entries (``runtime.driver``), Raft
rules (``core``).

Its port is the runtime's :class:`~saltext_raft.runtime.host.Host`, nothing more.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque

from saltext_raft.core import NONE
from saltext_raft.core import NotLeader
from saltext_raft.core import ProposalDropped
from saltext_raft.core import Role
from saltext_raft.runtime import envelope
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Overloaded
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.host import Host
from saltext_raft.runtime.limits import ENTRY_OVERHEAD
from saltext_raft.runtime.limits import PROPOSAL_BATCH_BYTES
from saltext_raft.runtime.remote import removed_message

log = logging.getLogger(__name__)


class Proposals:
    """Proposals of one node (one boot): queued, sent to the core, answered or expired."""

    def __init__(self, host: Host):
        self._host = host
        self.id = host.node_id
        self._config = host.config
        self._counters = host.counters
        self._prefix = envelope.prefix(host.node_id, envelope.new_nonce())
        self._seq = 0
        self._waiting: dict[int, asyncio.Future] = {}  # proposal seq -> future
        # (data, future, seq) of proposals not yet handed to the core
        self._pending: list[tuple[bytes, asyncio.Future, int]] = []
        # (term, seq, data) of proposals handed to the core, in that order (terms never go
        # down): what settle_sent re-sends once their term has provably ended without them.
        self._sent: deque[tuple[int, int, bytes]] = deque()
        # (deadline, seq, timeout) of proposals, checked every tick (see expire)
        self._deadlines: list[tuple[float, int, float]] = []

    def stats(self) -> dict:
        return {
            "pending_proposals": len(self._pending),
            "waiting_proposals": len(self._waiting),
            "sent_proposals": len(self._sent),
        }

    def context(self) -> bytes:
        """A fresh ReadIndex context: unique per boot, numbered with the proposals."""
        self._seq = seq = self._seq + 1
        return envelope.wrap(self._prefix, seq, b"")

    def submit(self, data: bytes, timeout: float | None) -> asyncio.Future:
        """Queue ``data``: the future of the state machine's result once it is committed and
        applied here (raises NoLeader / CommitTimeout / Stopped after ``timeout`` s). Raises
        :class:`Overloaded` at once when ``max_pending_proposals`` are waiting, and
        :class:`Rejected` on a node whose membership says it was removed. ``timeout`` None:
        the ``request_timeout``."""
        host = self._host
        host.check_running()
        if timeout is None:
            timeout = self._config.request_timeout
        if len(data) > self._config.max_entry_bytes:
            raise Rejected(
                f"a proposal of {len(data)} bytes is larger than max_entry_bytes "
                f"({self._config.max_entry_bytes})"
            )
        removed_at = host.node.membership.removed_at(self.id)
        if removed_at:  # the leader would drop it: say so now, definitely
            raise Rejected(f"not queued: {removed_message(self.id, removed_at)}")
        limit = self._config.max_pending_proposals
        if len(self._waiting) >= limit:
            self._counters["proposals_overloaded"] += 1
            raise Overloaded(
                f"{limit} proposals of node {self.id} are already waiting "
                "(max_pending_proposals): not queued; retry after a short back-off"
            )
        self._seq = seq = self._seq + 1
        fut = host.loop.create_future()
        self._waiting[seq] = fut
        self._pending.append((envelope.wrap(self._prefix, seq, data), fut, seq))
        self._counters["proposals"] += 1
        host.kick()
        heapq.heappush(self._deadlines, (host.loop.time() + timeout, seq, timeout))
        return fut

    def answer(self, data: bytes) -> tuple[asyncio.Future | None, bytes]:
        """For an applied entry's data: the future waiting for it (None unless this node in
        this boot proposed it and still waits) and the payload for the state machine."""
        seq, payload = envelope.split(self._prefix, data)
        return (None if seq is None else self._waiting.pop(seq, None)), payload

    def expire(self, now: float) -> None:
        """Time out proposals whose deadline passed (at most one tick late).

        One heap of plain tuples checked per tick instead of a ``call_later`` timer per
        proposal: a timer is a ``TimerHandle`` pushed into the loop's heap with Python-level
        comparisons, then cancelled (and swept later) for nearly every proposal, since nearly
        all of them commit in time. Entries of answered proposals are dropped lazily: when they
        reach the top, or in a sweep once they outnumber the live ones."""
        heap = self._deadlines
        if not heap:
            return
        waiting = self._waiting
        expired = False
        while heap and heap[0][0] <= now:
            _, seq, timeout = heapq.heappop(heap)
            # Popped here or by the apply that answers it (a cancelled one waits for either).
            fut = waiting.pop(seq, None)
            if fut is not None:
                self._expire_one(fut, timeout)
                expired = True
        if expired and self._pending:
            # Answered proposals still queued (no leader known, so never flushed) go now, with
            # their data: else a client retrying every timeout grows the queue without bound.
            self._pending[:] = [p for p in self._pending if not p[1].done()]
        sent = self._sent
        if expired and len(sent) > 2 * len(waiting):
            # Likewise the record of sent proposals, pruned otherwise only by an apply (none
            # comes while our proposals are lost on the way to a leader on an idle cluster).
            # Order is kept; at least half of it is dead, so the sweep costs O(1) per entry.
            self._sent = deque(s for s in sent if s[1] in waiting)
        if len(heap) > 2 * len(waiting) + 1024:
            heap[:] = [d for d in heap if d[1] in waiting]
            heapq.heapify(heap)

    def _expire_one(self, fut: asyncio.Future, timeout: float) -> None:
        if fut.done():
            return
        self._counters["proposal_timeouts"] += 1
        node = self._host.node
        if any(f is fut for _, f, _ in self._pending) and node.leader == NONE:
            fut.set_exception(
                NoLeader(f"no leader known within {timeout:g}s (election in progress or no quorum)")
            )
        else:
            fut.set_exception(
                CommitTimeout(
                    f"not committed within {timeout:g}s "
                    f"(leader {node.leader or 'unknown'}, term {node.term}): "
                    "no quorum reachable, or the leader changed"
                )
            )

    def flush(self) -> None:
        """Hand the queued proposals to the core in batches (kept while no leader is known)."""
        pending = self._pending
        if not pending:
            return
        node = self._host.node
        removed_at = node.membership.removed_at(self.id)
        if removed_at:
            # Removed while they were queued here: never handed to a leader, and no leader
            # takes them from us now (RaftNode drops a non-member's forwarded requests).
            refused = Rejected(f"not sent: {removed_message(self.id, removed_at)}")
            for _, fut, seq in pending:
                self._waiting.pop(seq, None)
                if not fut.done():
                    fut.set_exception(refused)
            pending.clear()
            # Those already sent are not re-sent (no leader would take them); they time out.
            self._sent.clear()
            return
        if node.role is not Role.LEADER and node.leader == NONE:
            return  # kept until a leader is known (or they time out)
        live = [p for p in pending if not p[1].done()]
        pending.clear()
        limit = self._config.max_batch
        k = 0
        while k < len(live):
            chunk = live[k : k + limit]
            # Stop before the batch's encoded size would pass PROPOSAL_BATCH_BYTES (one larger
            # entry goes alone): runtime.limits derives the frame size cap from this.
            size = 0
            n = 0
            for d, _, _ in chunk:
                size += len(d) + ENTRY_OVERHEAD
                if size > PROPOSAL_BATCH_BYTES and n:
                    break
                n += 1
            chunk = chunk[:n]
            try:
                node.propose_batch([d for d, _, _ in chunk])
            except (NotLeader, ProposalDropped):
                pending.extend(live[k:])  # retried on the next wake-up
                return
            term = node.term
            self._sent.extend([(term, seq, d) for d, _, seq in chunk])
            self._counters["proposal_batches"] += 1
            k += n

    def has_sent(self) -> bool:
        return bool(self._sent)

    def settle_sent(self, applied_term: int) -> None:
        """Re-send the proposals whose term ended without them (issue 17, part 3).

        This node has just applied an entry of ``applied_term``. A proposal handed to the core
        in an earlier term and not applied here by now can never commit (``propose_batch``
        explains why), so proposing it again cannot apply it twice: the caller gets its answer
        from the new leader instead of waiting out its timeout. Called after every apply; the
        front of the sent record is pruned of answered proposals on the way."""
        sent = self._sent
        waiting = self._waiting
        again = []
        while sent:
            term, seq, data = sent[0]
            fut = waiting.get(seq)
            if fut is not None and term >= applied_term:
                break
            sent.popleft()
            if fut is not None and not fut.done():
                again.append((data, fut, seq))
        if again:
            self._counters["proposals_resent"] += len(again)
            log.info(
                "raft %s: re-sending %d proposal(s) of an earlier term that did not commit "
                "(term %d applied)",
                self.id,
                len(again),
                applied_term,
            )
            self._pending[:0] = again
            self._host.kick()

    def settle_overtaken(self, snap_term: int) -> None:
        """A snapshot up to term ``snap_term`` was installed instead of entries: whether a
        proposal sent in a term up to ``snap_term`` is inside it cannot be told, so answer those
        at once with an indeterminate error (never re-send them: that could apply twice)."""
        sent = self._sent
        waiting = self._waiting
        while sent and sent[0][0] <= snap_term:
            _, seq, _ = sent.popleft()
            fut = waiting.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    CommitTimeout(
                        "a snapshot from the leader replaced the entries; "
                        "outcome unknown (the write may or may not have been applied)"
                    )
                )

    def fail_all(self, exc: RaftRuntimeError) -> None:
        futs = [f for _, f, _ in self._pending] + list(self._waiting.values())
        self._pending.clear()
        self._sent.clear()
        self._waiting.clear()
        self._deadlines.clear()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)
