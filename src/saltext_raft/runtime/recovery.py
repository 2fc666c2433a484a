"""Apply :func:`saltext_raft.core.recovery.force_new_cluster` to a stopped node's storage: to
its own log (:func:`recover_store`) or to a backup restored into empty storage
(:func:`restore_store`).

Must not live here: making sure no running node owns the storage (the caller holds the engine's
lock: master/recover.py), Salt.
"""

from __future__ import annotations

from saltext_raft.core.recovery import Recovery
from saltext_raft.core.recovery import force_new_cluster
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Snapshot
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.storage.base import LogStore
from saltext_raft.transport.config import address_problem


class RecoveryRefused(RaftRuntimeError):
    """The storage is not in a state this recovery can start from; the message says why."""

    code = "refused"


def _check_address(node_id: str, address: str) -> None:
    """The address rule every way into a membership passes (``transport.config``): the
    recovery's entry makes ``address`` the only voter's, which every master joining it uses."""
    problem = address_problem(address) if address else ""
    if problem:
        raise RecoveryRefused(f"the address given for {node_id}: {problem}; nothing was written")


def recover_store(
    store: LogStore, node_id: str, address: str = "", default_address: str = "", *, write: bool
) -> Recovery:
    """Decide the recovery from what ``store`` holds and, with ``write``, append its entry and
    hard state in one durable ``save()``. Without ``write`` nothing is stored (a dry run).
    The store must be freshly opened (``load()`` is called here) and is left open."""
    _check_address(node_id, address)
    restored = store.load()
    recovery = force_new_cluster(
        node_id,
        restored.hard_state,
        restored.snapshot.meta if restored.snapshot is not None else None,
        restored.entries,
        address,
        default_address,
    )
    if write:
        store.save(recovery.hard_state, [recovery.entry])
    return recovery


def restore_store(
    store: LogStore,
    node_id: str,
    snapshot: Snapshot,
    address: str = "",
    default_address: str = "",
    *,
    write: bool,
) -> Recovery:
    """Make ``node_id`` the only voter of a cluster whose state is ``snapshot`` (from a backup):
    with ``write``, one durable ``save()`` stores the snapshot, the recovery entry after it and
    the hard state. ``store`` must hold nothing yet: a restore never mixes a backup with a log.
    Without ``write`` nothing is stored."""
    _check_address(node_id, address)
    restored = store.load()
    if restored.hard_state != HardState() or restored.snapshot is not None or restored.entries:
        last = (
            restored.entries[-1].index
            if restored.entries
            else (restored.snapshot.meta.index if restored.snapshot is not None else 0)
        )
        raise RecoveryRefused(
            f"{node_id} already holds Raft data (log up to index {last}); a backup is restored "
            "only into empty storage. Remove this master's Raft data first, or recover it from "
            "its own log instead (without --restore)"
        )
    recovery = force_new_cluster(node_id, HardState(), snapshot.meta, [], address, default_address)
    if write:
        store.save(recovery.hard_state, [recovery.entry], snapshot)
    return recovery
