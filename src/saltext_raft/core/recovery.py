"""Recovering one node's log after a permanent loss of quorum (etcd's ``--force-new-cluster``).

Lives here: :func:`force_new_cluster`, a pure function from what a stopped node's storage holds
to what must be appended to it. Must not live here: reading or writing storage, checking that
the node is stopped (``runtime/recovery.py`` and the Salt command in
``master/recover.py`` do that).

What it does, and why each choice:

- **One CONF entry that makes this node the only voter**, carrying the resulting membership like
  every CONF entry, so the node rebuilds it from the log alone. Learners are dropped too: they
  would hold a log the new cluster no longer agrees with.
- **Every entry the node holds counts as committed**, including entries past its commit index.
  Such entries may have been committed by the lost majority and acknowledged to clients (this
  node just had not heard of the commit yet); the others were answered with a timeout, "may or
  may not have been applied", so applying them breaks no promise. Dropping them could lose
  acknowledged writes; keeping them cannot.
- **A new term** (one past the highest the node has seen), with the node's vote in it, for the
  entry and the hard state: no other log can hold a different entry with the same index and
  term, and the node cannot vote for anyone else in that term.

It is unsafe in the sense etcd uses: writes the lost majority committed that never reached this
node are gone, and a lost master brought back with its old data could form a quorum of the old
configuration with another one. The runbook says to rebuild those masters empty and to rotate the
cluster secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import SnapshotMeta


@dataclass(frozen=True)
class Recovery:
    """What :func:`force_new_cluster` decided: append ``entry``, then store ``hard_state``."""

    entry: Entry
    hard_state: HardState
    previous: Membership  #: the membership in force before (the latest in the log)
    membership: Membership  #: the one ``entry`` sets: this node alone, as a voter
    previous_commit: int  #: the commit index the node had stored
    uncommitted: int  #: entries past ``previous_commit`` that now count as committed

    def summary(self) -> dict:
        return {
            "previous_membership": self.previous.to_dict(),
            "membership": self.membership.to_dict(),
            "last_index": self.entry.index - 1,
            "previous_commit_index": self.previous_commit,
            "commit_index": self.hard_state.commit,
            "entries_committed_by_recovery": self.uncommitted,
            "term": self.hard_state.term,
            "recovery_entry_index": self.entry.index,
        }


def force_new_cluster(
    node_id: str,
    hard_state: HardState,
    snapshot: SnapshotMeta | None,
    entries: Sequence[Entry],
    address: str = "",
    default_address: str = "",
) -> Recovery:
    """The entry and hard state that make ``node_id`` the only voter of its cluster.

    ``hard_state``, ``snapshot`` and ``entries`` are what the node's storage loads (the
    snapshot's meta only). ``address`` is where the others reach this node; empty keeps the
    address the node has in its latest membership, or, when that records none (a backup
    restored on another master), ``default_address``. Raises :class:`RaftError` when there is
    nothing to recover from (an empty log), when the node has no address, or when the stored
    state is inconsistent."""
    if not node_id:
        raise RaftError("force_new_cluster: a node id is required")
    meta = snapshot if snapshot is not None else SnapshotMeta()
    if entries and entries[0].index != meta.index + 1:
        raise RaftError(
            f"force_new_cluster: stored entries start at {entries[0].index} but the snapshot "
            f"ends at {meta.index}"
        )
    last_index = entries[-1].index if entries else meta.index
    last_term = entries[-1].term if entries else meta.term
    if last_index == 0:
        raise RaftError(
            f"force_new_cluster: {node_id} holds no log and no snapshot: there is nothing to "
            "recover on this master (run the recovery on the master that has the data)"
        )
    if hard_state.commit > last_index:
        raise RaftError(
            f"force_new_cluster: the stored commit index {hard_state.commit} is beyond the last "
            f"stored entry {last_index}; the storage is damaged"
        )
    previous = meta.membership
    for entry in entries:
        if entry.kind == EntryKind.CONF:
            result = ConfChange.decode(entry.data).result
            if result is not None:
                previous = result
    address = address or previous.address_of(node_id) or default_address
    if not address:
        raise RaftError(
            f"force_new_cluster: no address for {node_id}: its latest membership records none; "
            "give the address the other masters will reach it at"
        )
    membership = Membership(
        voters=frozenset({node_id}),
        addresses=((node_id, address),),
        removed=previous.with_removed(node_id, 0),  # nodes removed before stay removed
    )
    term = max(hard_state.term, last_term) + 1
    data = ConfChange(ConfOp.FORCE_NEW_CLUSTER, node_id, address, result=membership).encode()
    entry = Entry(term, last_index + 1, EntryKind.CONF, data)
    return Recovery(
        entry=entry,
        hard_state=HardState(term, node_id, entry.index),
        previous=previous,
        membership=membership,
        previous_commit=hard_state.commit,
        uncommitted=last_index - max(hard_state.commit, meta.index),
    )
