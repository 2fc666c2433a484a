"""Leader operations (membership changes, leader transfer) and JOIN.

Lives here: :class:`Admin` — running an operation on this node when it leads, else sending it
to the leader (``runtime.remote``) and retrying until the deadline; waiting for a membership
entry to be applied (or, on a node that removed itself, asking the remaining members whether it
committed); and the JOIN loop of a node in no membership. Must not live here: the membership
arithmetic (``core``), the request/reply wire format and the server side (``runtime.remote``),
the Ready loop (``runtime.driver``).

Its port is the runtime's :class:`~saltext_raft.runtime.host.Host`, plus the
:class:`~saltext_raft.runtime.remote.Remote` it sends requests with and the runtime's
:class:`~saltext_raft.runtime.events.Events` (to wait for a change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from saltext_raft.core import NONE
from saltext_raft.core import ConfOp
from saltext_raft.core import NotLeader
from saltext_raft.core import ProposalDropped
from saltext_raft.core import RaftNode
from saltext_raft.core import Role
from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.core.types import MEMBERSHIP_OPS
from saltext_raft.core.types import TRANSFER_LEADER
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.errors import StaleRequest
from saltext_raft.runtime.errors import Unsent
from saltext_raft.runtime.events import Events
from saltext_raft.runtime.host import Host
from saltext_raft.runtime.remote import Remote
from saltext_raft.runtime.remote import RemoteNotLeader
from saltext_raft.runtime.remote import binding as remote_binding
from saltext_raft.runtime.remote import removed_message
from saltext_raft.transport.base import RateLimitedLog
from saltext_raft.transport.config import address_problem

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)  # per node id: lines a remote node can make repeat

#: The membership entries the operations of ``core.types.MEMBERSHIP_OPS`` propose.
_CONF_OPS = {op: ConfOp(op) for op in MEMBERSHIP_OPS if op != TRANSFER_LEADER}
#: After a refused JOIN, a node asks again after this many join intervals (or once added).
JOIN_REFUSED_WAIT = 60


class Admin:
    """Membership changes and leader transfer of one node, and its JOIN loop."""

    def __init__(self, host: Host, remote: Remote, events: Events):
        self._host = host
        self.id = host.node_id
        self._config = host.config
        self._remote = remote
        self._wait_changed = events.wait_changed
        self._wait_for = events.wait_for
        # membership entry index -> [(term, future)] of callers waiting for its apply
        self._conf_waiters: dict[int, list[tuple[int, asyncio.Future]]] = {}

    def is_member(self) -> bool:
        return self.id in self._host.node.membership.members

    # --- answering the callers waiting for a membership entry ---------------------------------
    def waiting(self) -> bool:
        return bool(self._conf_waiters)

    def applied(self, index: int, term: int) -> None:
        """Entry ``(index, term)`` was applied: answer who waits for a membership entry there."""
        for want, fut in self._conf_waiters.pop(index, ()):
            if not fut.done():
                if want == term:
                    fut.set_result(index)
                else:
                    fut.set_exception(
                        CommitTimeout(f"entry {index} was replaced after a leader change")
                    )

    def overtaken(self, snap_index: int) -> None:
        """A snapshot up to ``snap_index`` was installed: entries it covers are never applied."""
        for idx in [i for i in self._conf_waiters if i <= snap_index]:
            for _, fut in self._conf_waiters.pop(idx):
                if not fut.done():
                    fut.set_exception(
                        CommitTimeout(f"entry {idx} was overtaken by a snapshot; outcome unknown")
                    )

    def fail_all(self, exc: RaftRuntimeError) -> None:
        futs = [f for lst in self._conf_waiters.values() for _, f in lst]
        self._conf_waiters.clear()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)

    # --- operations ---------------------------------------------------------------------------
    async def run(
        self,
        cmd: str,
        args: dict,
        timeout: float | None,
        *,
        forward: bool = True,
        bound: Callable[[RaftNode], None] | None = None,
    ) -> dict:
        """Run a leader operation here if we lead, else on the leader (APP request/reply).

        ``bound(node)``, for a request that came from another node, raises
        :class:`StaleRequest` unless the request was issued against this leader's term and
        membership (``runtime.remote``); it is checked right before the operation runs.
        ``timeout`` None: the ``request_timeout``."""
        host = self._host
        host.check_running()
        target = args.get("node")
        problem = node_id_problem(target)
        if problem and (cmd == "add_learner" or target not in host.node.membership.members):
            # An id that was committed before ids were checked can still be removed.
            raise Rejected(f"{cmd}: {problem}")
        if cmd == "add_learner" and args.get("address"):
            # Every node applies a committed address: one zmq cannot use used to stop them all.
            problem = address_problem(args["address"])
            if problem:
                raise Rejected(f"{cmd} {target}: {problem}")
        if timeout is None:
            timeout = self._config.request_timeout
        loop = host.loop
        deadline = loop.time() + timeout
        pause = self._config.tick_seconds * 2
        hint = NONE
        last: RaftRuntimeError | None = None
        while True:
            host.check_running()
            node = host.node
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if node.role is Role.LEADER:
                if bound is not None:
                    bound(node)
                try:
                    return await self._local(cmd, args, deadline)
                except _Retry as exc:
                    last = CommitTimeout(str(exc))
                    await self._wait_changed(min(remaining, pause))
                    continue
            if not forward:
                raise RemoteNotLeader(node.leader)
            leader = node.leader or hint
            if leader == NONE or leader == self.id:
                last = _keep_uncertain(last, NoLeader(f"no leader known within {timeout:g}s"))
                await self._wait_changed(min(remaining, pause))
                continue
            request = {"op": "admin", "cmd": cmd, "args": args}
            request.update(remote_binding(node, remaining, time.time()))
            try:
                return await self._remote.request(leader, request, remaining)
            except StaleRequest as exc:
                # Our view of the term or membership lags the leader's: catch up, ask again.
                last = exc
                await self._wait_changed(min(deadline - loop.time(), pause))
            except RemoteNotLeader as exc:
                hint = exc.leader if exc.leader != leader else NONE
                last = _keep_uncertain(last, NoLeader(f"{leader} is not the leader"))
                await self._wait_changed(min(deadline - loop.time(), pause))
            except Unsent as exc:
                # Dropped here, at once: pause a full ``pause`` (not until the next Ready, which
                # comes every few ms under load), so the loop neither spins nor floods the queue.
                last = _keep_uncertain(last, exc)
                await asyncio.sleep(max(min(deadline - loop.time(), pause), 0))
            except CommitTimeout as exc:
                last = exc
        raise last or CommitTimeout(f"{cmd} not done within {timeout:g}s")

    async def _local(self, cmd: str, args: dict, deadline: float) -> dict:
        node = self._host.node
        target = str(args.get("node") or "")
        if cmd == TRANSFER_LEADER:
            try:
                node.transfer_leader(target)
            except ProposalDropped as exc:
                raise Rejected(str(exc)) from None
            self._host.kick()
            ok = await self._wait_for(
                lambda: node.leader == target, deadline - self._host.loop.time()
            )
            if not ok:
                raise CommitTimeout(
                    f"leadership did not move to {target} in time (leader: {node.leader or 'none'})"
                )
            return {"leader": target, "term": node.term}
        op = _CONF_OPS.get(cmd)
        if op is None:
            raise Rejected(f"unknown operation {cmd!r}")
        m = node.membership
        already = (
            (op is ConfOp.ADD_LEARNER and target in m.members)
            or (op is ConfOp.PROMOTE and target in m.voters)
            or (op is ConfOp.DEMOTE and target in m.learners)
            or (op is ConfOp.REMOVE and target not in m.members)
        )
        removed_at = m.removed_at(target)
        if op is ConfOp.ADD_LEARNER and args.get("join") and removed_at:
            # A node asking to add itself back after it was removed: only an operator may.
            msg = removed_message(target, removed_at)
            _rl.warning(target, "raft %s: JOIN refused: %s", self.id, msg)
            raise Rejected(msg)
        if already:  # idempotent, so a JOIN or a retried request is harmless
            index = node.membership_at(node.last_index)[0]
            if index > node.commit_index:
                # What it asks for is appended but not committed (e.g. this very request sent
                # again after an unclear answer): that entry may still be lost, so answer as
                # its first sender is answered, once it commits.
                term = node.term_at(index)
                await self._await_conf(f"{cmd} {target}", index, term, deadline)
            return {"index": index, "membership": m.to_dict(), "changed": False}
        try:
            index = node.propose_conf_change(op, target, str(args.get("address") or ""))
        except NotLeader:
            raise _Retry("leadership lost") from None
        except ProposalDropped as exc:
            text = str(exc)
            if "pending" in text or "transferred" in text:
                raise _Retry(text) from None
            raise Rejected(text) from None
        await self._await_conf(f"{cmd} {target}", index, node.term, deadline)
        return {
            "index": index,
            "membership": node.membership_at(index)[1].to_dict(),
            "changed": True,
        }

    async def _await_conf(self, what: str, index: int, term: int, deadline: float) -> None:
        """Return once membership entry ``(index, term)`` is applied here (or known committed),
        else raise :class:`CommitTimeout` (indeterminate)."""
        fut = self._host.loop.create_future()
        self._conf_waiters.setdefault(index, []).append((term, fut))
        self._host.kick()
        if not await self._wait_conf(fut, index, term, deadline):
            fut.cancel()  # its entry in _conf_waiters is dropped when that index is applied
            raise CommitTimeout(f"{what} (entry {index}) not committed in time")

    async def _wait_conf(self, fut: asyncio.Future, index: int, term: int, deadline: float) -> bool:
        """Wait for our membership entry ``(index, term)`` to be applied here (True), or for the
        deadline (False); raises what ``fut`` raises (e.g. the entry was replaced).

        A leader that removed itself may lose leadership before it learns that the entry
        committed (check-quorum, a partition): the next leader commits it but no longer
        replicates to the removed node, so it would never apply it here. Such a node asks the
        remaining members instead, once per election timeout (``Remote.committed``)."""
        host = self._host
        loop = host.loop
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            done, _ = await asyncio.wait((fut,), timeout=min(remaining, host.election_seconds))
            if done:
                fut.result()
                return True
            node = host.node
            if node.role is Role.LEADER or self.is_member():
                continue  # it reaches us through the log
            answer = await self._remote.committed(
                sorted(node.membership.voters), index, term, deadline - loop.time()
            )
            if answer is True:
                return True
            if answer is False:
                raise CommitTimeout(f"entry {index} was replaced after a leader change")

    # --- JOIN: a node in no membership asks a peer to add it as a learner ---------------------
    def joining(self, peers: dict[str, str], address: str):
        """At start: the JOIN loop to run (a coroutine), or None for a member, and for a node
        whose own log says it was removed: that one stays out (no JOIN) until an operator adds
        it back, which makes the leader replicate to it again (issue 18, M3)."""
        removed_at = self._host.node.membership.removed_at(self.id)
        if removed_at:
            log.warning("raft %s: %s", self.id, removed_message(self.id, removed_at))
            return None
        return None if self.is_member() else self.join_loop(peers, address)

    async def join_loop(self, peers: dict[str, str], address: str) -> None:
        targets = sorted(n for n in peers if n != self.id)
        k = 0
        while self._host.running() and not self.is_member():
            if not targets:
                log.warning("raft %s: not a member and no peers to ask to join", self.id)
                return
            target = targets[k % len(targets)]
            k += 1
            interval = self._config.join_interval
            try:
                wait = interval * 4
                await self._remote.request(
                    target, {"op": "join", "address": address, "exp": time.time() + wait}, wait
                )
                log.info("raft %s: %s accepted our JOIN; waiting for the log", self.id, target)
                await self._wait_for(self.is_member, interval * 4)
            except Rejected as exc:
                # Definite, e.g. we were removed: asking again soon would only fill two logs.
                log.warning("raft %s: JOIN via %s refused: %s", self.id, target, exc)
                await self._wait_for(self.is_member, interval * JOIN_REFUSED_WAIT)
            except Unsent as exc:
                # Dropped at once: the next target after a full interval, not at the next Ready.
                log.info("raft %s: JOIN via %s failed: %s", self.id, target, exc)
                await asyncio.sleep(interval)
            except RaftRuntimeError as exc:
                log.info("raft %s: JOIN via %s failed: %s", self.id, target, exc)
                await self._wait_changed(interval)


def _keep_uncertain(last: RaftRuntimeError | None, new: RaftRuntimeError) -> RaftRuntimeError:
    """The error to report after another failed attempt: a definite one (``new``) must not
    hide an earlier attempt whose outcome is unknown."""
    return last if last is not None and not last.definite else new


class _Retry(Exception):
    """A transient refusal on the leader: try again until the deadline."""
