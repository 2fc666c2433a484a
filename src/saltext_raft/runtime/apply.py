"""Applying a Ready's snapshot and committed entries to the state machine, answering waiters.

Lives here: :class:`Applier` — installs a decoded snapshot, hands each committed entry's
payload to the state machine (stopping the node, never skipping, when the state machine says
it cannot apply one), answers the proposer of each entry, the callers waiting for a membership
entry and the reads the Ready confirmed, and tells observers about membership changes. Must
not live here: the order of persist → send → apply → advance (``runtime.driver``), the
envelope's layout (``runtime.envelope``, read through ``Proposals.answer``).

Its port is the runtime's :class:`~saltext_raft.runtime.host.Host`, plus a getter of the state
machine (a test may swap it), the runtime's proposals, reads, snapshots and admin parts (their
public methods) and ``emit`` (tell observers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from saltext_raft.core import ConfChange
from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.core import Membership
from saltext_raft.core import Ready
from saltext_raft.runtime.admin import Admin
from saltext_raft.runtime.errors import ApplyHalted
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.host import Host
from saltext_raft.runtime.proposals import Proposals
from saltext_raft.runtime.reads import Reads
from saltext_raft.runtime.snapshots import Snapshots

log = logging.getLogger(__name__)


class Applier:
    """Carries out the apply step of each Ready for one node."""

    def __init__(
        self,
        host: Host,
        *,
        state_machine: Callable[[], object],
        proposals: Proposals,
        reads: Reads,
        snapshots: Snapshots,
        admin: Admin,
        emit: Callable[[dict], None],
    ):
        self.id = host.node_id
        self._counters = host.counters
        self._state_machine = state_machine
        self._proposals = proposals
        self._reads = reads
        self._snapshots = snapshots
        self._admin = admin
        self._emit = emit

    def apply(self, rd: Ready, install: Callable[[], None] | None) -> int:
        """Apply ``rd``'s snapshot (``install``, from ``Snapshots.decode``; None when there is
        none) and entries; returns how many local proposals it answered."""
        proposals = self._proposals
        if install is not None:
            meta = rd.snapshot.meta
            install()
            self._snapshots.installed(meta.index)
            self._admin.overtaken(meta.index)
            self._emit_membership(meta.membership, meta.index)
            if proposals.has_sent():
                proposals.settle_overtaken(meta.term)
        sm = self._state_machine()
        answer = proposals.answer
        admin = self._admin if self._admin.waiting() else None
        applied = 0
        resolved = 0
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                if e.data:
                    fut, payload = answer(e.data)
                    try:
                        result = sm.apply(Entry(e.term, e.index, e.kind, payload))
                    except Exception as exc:  # the state machine's bug: answer the proposer
                        if getattr(exc, "halt", False):
                            # It cannot apply this entry, and every node that can will: stop
                            # (the entry is applied after a fix and a restart), never skip.
                            raise ApplyHalted(f"cannot apply entry {e.index}: {exc}") from exc
                        log.exception("raft %s: state machine failed on entry %d", self.id, e.index)
                        if fut is not None and not fut.done():
                            fut.set_exception(
                                Rejected(f"state machine failed on entry {e.index}: {exc}")
                            )
                    else:
                        if fut is not None and not fut.done():
                            fut.set_result(result)
                            resolved += 1
                    applied += 1
            else:
                cc = ConfChange.decode(e.data)
                if cc.result is not None:
                    self._emit_membership(cc.result, e.index, cc)
            if admin is not None:
                admin.applied(e.index, e.term)
        self._counters["applied"] += applied
        if proposals.has_sent() and rd.committed_entries:
            proposals.settle_sent(rd.committed_entries[-1].term)
        self._reads.confirmed(rd.read_states)
        return resolved

    def _emit_membership(
        self, membership: Membership, index: int, cc: ConfChange | None = None
    ) -> None:
        log.info(
            "raft %s: membership at %d: voters %s learners %s",
            self.id,
            index,
            sorted(membership.voters),
            sorted(membership.learners),
        )
        event = {"event": "membership", "index": index, "membership": membership.to_dict()}
        if cc is not None:
            event.update(op=cc.op.value, node=cc.node_id)
        self._emit(event)
