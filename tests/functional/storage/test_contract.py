"""The LogStore contract, run against MemoryStore, CacheStore on localfs, and on a real Redis.

Every test reopens the store (a node restart) before checking, so what is checked is what
is durable, not what one object remembers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.storage import MemoryStore
from saltext_raft.storage import StorageError

MEMBERS = Membership(frozenset({"m1", "m2", "m3"}), frozenset({"m4"}), (("m1", "tcp://a:1"),))


def ents(first, last, term=1, tag=b""):
    return [Entry(term, i, 0, b"%s%d@%d" % (tag, i, term)) for i in range(first, last + 1)]


def snap(index, term, data=b"state"):
    return Snapshot(SnapshotMeta(index, term, MEMBERS), data + b"@%d" % index)


def reopen(backend):
    store = backend.open()
    state = store.load()
    return store, state


def restart(backend, store):
    store.close()
    return reopen(backend)


def test_fresh_store_is_empty(backend):
    _, state = reopen(backend)
    assert state.hard_state == HardState()
    assert state.snapshot is None
    assert state.entries == []


def test_entries_and_hard_state_survive_restart(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "m1", 0), ents(1, 3))
    store.save(HardState(1, "m1", 3), ents(4, 10))
    store.save(HardState(2, "", 3), [])
    _, state = restart(backend, store)
    assert state.hard_state == HardState(2, "", 3)
    assert state.entries == ents(1, 10)


def test_truncation_on_conflict_replaces_the_suffix(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "m1", 2), ents(1, 10))
    store.save(HardState(2, "m2", 2), ents(6, 7, term=2))
    store, state = restart(backend, store)
    assert state.entries == ents(1, 5) + ents(6, 7, term=2)
    # truncation then append across many records and a reopen
    store.save(None, ents(8, 12, term=2))
    store.save(HardState(3, "m3", 2), ents(3, 4, term=3))
    _, state = restart(backend, store)
    assert state.entries == ents(1, 2) + ents(3, 4, term=3)
    assert state.hard_state == HardState(3, "m3", 2)


def test_a_commit_index_beyond_the_log_is_refused(backend):
    """Storing it would claim committed entries the node does not have."""
    store, _ = reopen(backend)
    store.save(HardState(1, "", 2), ents(1, 3))
    with pytest.raises(StorageError, match="commit 5"):
        store.save(HardState(1, "", 5), ents(4, 4))
    _, state = restart(backend, store)
    assert state.entries == ents(1, 3) and state.hard_state == HardState(1, "", 2)


def test_a_gap_is_refused_and_changes_nothing(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 0), ents(1, 3))
    with pytest.raises(StorageError, match="log ends at 3"):
        store.save(HardState(9, "", 0), ents(5, 6))
    with pytest.raises(StorageError, match="contiguous"):
        store.save(None, [Entry(1, 4), Entry(1, 6)])
    _, state = restart(backend, store)
    assert state.entries == ents(1, 3)
    assert state.hard_state == HardState(1, "", 0)


def test_compaction_forgets_covered_entries(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "m1", 8), ents(1, 10))
    store.compact(snap(6, 1))
    store, state = restart(backend, store)
    assert state.snapshot == snap(6, 1)
    assert state.entries == ents(7, 10)
    assert state.hard_state == HardState(1, "m1", 8)
    store.compact(snap(4, 1))  # older than the stored one: nothing to do
    store.compact(snap(8, 1))
    store.save(None, ents(11, 12))
    _, state = restart(backend, store)
    assert state.snapshot == snap(8, 1)
    assert state.entries == ents(9, 12)


def test_compaction_refuses_a_snapshot_the_log_does_not_hold(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 3), ents(1, 3))
    with pytest.raises(StorageError, match="log ends at 3"):
        store.compact(snap(5, 1))
    with pytest.raises(StorageError, match="does not match"):
        store.compact(snap(2, 7))
    _, state = restart(backend, store)
    assert state.snapshot is None and state.entries == ents(1, 3)


def test_received_snapshot_matching_the_log_keeps_the_suffix(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 0), ents(1, 10))
    store.save(HardState(1, "", 5), [], snap(5, 1))
    _, state = restart(backend, store)
    assert state.snapshot == snap(5, 1)
    assert state.entries == ents(6, 10)
    assert state.hard_state == HardState(1, "", 5)


def test_a_snapshot_and_the_entries_after_it_in_one_save_into_a_fresh_store(backend):
    """What restoring a backup writes (runtime/recovery.py: restore_store)."""
    store, _ = reopen(backend)
    store.save(HardState(4, "m1", 41), ents(41, 41, term=4), snap(40, 3))
    _, state = restart(backend, store)
    assert state.snapshot == snap(40, 3)
    assert state.entries == ents(41, 41, term=4)
    assert state.hard_state == HardState(4, "m1", 41)


def test_received_snapshot_not_matching_the_log_drops_it(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 0), ents(1, 10))
    store.save(HardState(3, "", 5), [], snap(5, 2))
    store, state = restart(backend, store)
    assert state.snapshot == snap(5, 2)
    assert state.entries == []
    # beyond the end of the log, with entries in the same batch
    store.save(HardState(4, "", 20), ents(21, 22, term=4), snap(20, 4))
    _, state = restart(backend, store)
    assert state.snapshot == snap(20, 4)
    assert state.entries == ents(21, 22, term=4)
    assert state.hard_state == HardState(4, "", 20)


def test_entries_at_or_below_the_snapshot_are_skipped(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 8), ents(1, 10))
    store.compact(snap(8, 1))
    store.save(None, ents(5, 8))  # wholly covered: changes nothing
    store.save(None, ents(7, 11))  # partly covered: replaces from 9 on
    _, state = restart(backend, store)
    assert state.entries == ents(9, 11)


def test_a_stale_received_snapshot_is_refused(backend):
    store, _ = reopen(backend)
    store.save(HardState(1, "", 8), ents(1, 10))
    store.compact(snap(8, 1))
    with pytest.raises(StorageError, match="older"):
        store.save(None, [], snap(5, 1))


def test_many_batches_across_seals_truncations_and_compactions(backend):
    store, _ = reopen(backend)
    model = MemoryStore()
    model.load()
    term, last = 1, 0
    for i in range(300):
        if i % 37 == 36 and last > 5:
            term += 1
            start = last - 3
            batch = ents(start, start + 1, term=term)
        else:
            batch = ents(last + 1, last + 1 + i % 5, term=term)
        hs = HardState(term, "m1", max(0, batch[0].index - 2))
        store.save(hs, batch)
        model.save(hs, batch)
        last = batch[-1].index
        if i % 50 == 49:
            point = snap(hs.commit, model.load().entries[hs.commit - 1 - _base(model)].term)
            store.compact(point)
            model.compact(point)
        if i % 70 == 69:
            store, state = restart(backend, store)
            assert state == model.load()
    _, state = restart(backend, store)
    assert state == model.load()


def _base(store: MemoryStore) -> int:
    snapshot = store.load().snapshot
    return snapshot.meta.index if snapshot else 0


def test_closed_store_refuses_writes(backend):
    store, _ = reopen(backend)
    store.close()
    with pytest.raises(StorageError):
        store.save(HardState(1), [])


# ---------------------------------------------------------------- property: same as the model

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.booleans()),
        st.tuples(st.just("truncate"), st.integers(0, 8), st.integers(1, 4)),
        st.tuples(st.just("compact"), st.integers(0, 8)),
        st.tuples(st.just("install"), st.integers(-3, 6), st.booleans()),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps)
def test_cache_store_behaves_like_the_memory_model(cache_backend, steps):
    """Random saves, truncations, compactions, snapshot installs and restarts: after each
    restart the store returns exactly what the in-memory reference returns."""
    backend = cache_backend
    backend.cluster_id += "h"  # fresh data for every example
    store, _ = reopen(backend)
    store.seal_records = 3  # seal often so segments are exercised
    model = MemoryStore()
    model.load()
    term = 1
    for step in steps:
        state = model.load()
        base = state.snapshot.meta.index if state.snapshot else 0
        base_term = state.snapshot.meta.term if state.snapshot else 0
        last = base + len(state.entries)
        commit = state.hard_state.commit
        kind = step[0]
        if kind == "append":
            batch = ents(last + 1, last + step[1], term=term)
            hs = HardState(term, "m1", min(last + step[1], commit + 1)) if step[2] else None
            args = (hs, batch)
        elif kind == "truncate":
            start = max(commit + 1, last - step[1])
            term += 1
            args = (HardState(term, "", commit), ents(start, start + step[2], term=term))
        elif kind == "compact":
            index = min(commit, base + step[1])
            if index <= base:
                continue
            point = snap(index, state.entries[index - base - 1].term)
            store.compact(point)
            model.compact(point)
            continue
        elif kind == "install":
            index = max(base + 1, commit + step[1])
            matching = step[2] and index <= last
            t = state.entries[index - base - 1].term if matching else max(term, base_term)
            term = max(term, t)
            args = (HardState(term, "", index), [], snap(index, t, b"leader"))
        else:
            store, got = restart(backend, store)
            store.seal_records = 3
            assert got == model.load()
            continue
        store.save(*args)
        model.save(*args)
    _, got = restart(backend, store)
    assert got == model.load()
