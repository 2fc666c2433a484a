"""Apply :func:`saltext_raft.core.recovery.force_new_cluster` to a stopped node's storage.

Lives here: :func:`recover_store` (load, decide, append, store). Must not live here: making sure
no running node owns the storage (the caller holds the engine's lock: integration/recover.py),
Salt.
"""

from __future__ import annotations

from saltext_raft.core.recovery import Recovery
from saltext_raft.core.recovery import force_new_cluster
from saltext_raft.storage.base import LogStore


def recover_store(store: LogStore, node_id: str, address: str = "", *, write: bool) -> Recovery:
    """Decide the recovery from what ``store`` holds and, with ``write``, append its entry and
    hard state in one durable ``save()``. Without ``write`` nothing is stored (a dry run).
    The store must be freshly opened (``load()`` is called here) and is left open."""
    restored = store.load()
    recovery = force_new_cluster(
        node_id,
        restored.hard_state,
        restored.snapshot.meta if restored.snapshot is not None else None,
        restored.entries,
        address,
    )
    if write:
        store.save(recovery.hard_state, [recovery.entry])
    return recovery
