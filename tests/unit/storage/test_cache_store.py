"""CacheStore's record-per-key scheme, on localfs (forced with ``log_format="keys"``): layout,
group commit, fsync, and what damaged data does at load. The segment files of the localfs fast
path are tested in ``test_segments.py``."""

from __future__ import annotations

import os
import pathlib

import pytest

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.storage import StorageCorruption
from saltext_raft.storage import StorageError
from saltext_raft.storage import open_store
from saltext_raft.storage.store import node_bank
from tests.functional.storage.backends import master_opts


def ents(first, last, term=1):
    return [Entry(term, i, 0, b"d%d" % i) for i in range(first, last + 1)]


@pytest.fixture
def opts(tmp_path):
    return master_opts(str(tmp_path / "cache"))


@pytest.fixture
def node_dir(opts):
    return pathlib.Path(opts["cachedir"]) / "saltext_raft" / "c1" / "m1"


def opened(opts, **kwargs):
    kwargs.setdefault("log_format", "keys")
    store = open_store(opts, "c1", "m1", **kwargs)
    state = store.load()
    return store, state


def log_files(node_dir):
    return sorted(p.name for p in (node_dir / "log").iterdir())


def test_banks_live_under_saltext_raft_never_under_cluster(opts, tmp_path):
    store, _ = opened(opts)
    store.save(HardState(1, "m1", 0), ents(1, 2))
    store.compact(Snapshot(SnapshotMeta(1, 1, Membership()), b"s"))
    top = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert top == ["saltext_raft"]
    assert not (tmp_path / "cache" / "cluster").exists()
    assert store.bank == "saltext_raft/c1/m1"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x y"])
def test_ids_that_cannot_name_a_bank_are_refused(bad):
    with pytest.raises(StorageError, match="cannot name a cache bank"):
        node_bank("c1", bad)


def test_one_key_and_two_fsyncs_per_save_whatever_the_batch_size(opts):
    store, _ = opened(opts, seal_records=1000)
    for size in (1, 10, 500):
        keys, fsyncs = store.keys_written, store.fsyncs
        last = store.last_index
        store.save(HardState(1, "m1", last), ents(last + 1, last + size))
        assert store.keys_written - keys == 1
        assert store.fsyncs - fsyncs == 2  # the file, then its directory


def test_sealing_replaces_records_with_one_segment(opts, node_dir):
    store, _ = opened(opts, seal_records=4)
    for i in range(1, 10):
        store.save(HardState(1, "", i - 1), ents(i, i))
    assert log_files(node_dir) == [
        "g0000000000000001_0000000000000004.p",
        "g0000000000000005_0000000000000008.p",
        "r0000000000000009.p",
    ]
    store.close()
    _, state = opened(opts)
    assert state.entries == ents(1, 9)


def test_torn_tail_record_is_discarded(opts, node_dir):
    """The last record of a save() that never returned may be torn: drop it, keep the rest."""
    store, _ = opened(opts)
    store.save(HardState(1, "", 0), ents(1, 3))
    store.save(HardState(1, "", 3), ents(4, 6))
    store.close()
    (node_dir / "log" / "r0000000000000002.p").write_bytes(b"\x00\x01garbage")
    store, state = opened(opts)
    assert state.entries == ents(1, 3)
    assert state.hard_state == HardState(1, "", 0)
    store.save(None, ents(4, 4, term=2))  # the seq is reused cleanly
    store.close()
    assert opened(opts)[1].entries == ents(1, 3) + ents(4, 4, term=2)


def test_corrupt_record_in_the_middle_stops_the_node_naming_bank_and_key(opts, node_dir):
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 5):
        store.save(HardState(1, "", i - 1), ents(i, i))
    store.close()
    path = node_dir / "log" / "r0000000000000002.p"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # flip bits in the last byte of the entry data
    path.write_bytes(bytes(blob))
    with pytest.raises(StorageCorruption) as err:
        opened(opts)
    msg = str(err.value)
    assert "saltext_raft/c1/m1/log" in msg and "r0000000000000002" in msg
    assert "learner" in msg and "remove the node's data" in msg


def test_missing_record_in_the_middle_is_an_error(opts, node_dir):
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 5):
        store.save(HardState(1, "", i - 1), ents(i, i))
    store.close()
    (node_dir / "log" / "r0000000000000002.p").unlink()
    with pytest.raises(StorageCorruption, match="seq 2 is missing"):
        opened(opts)


def test_missing_start_of_log_without_a_snapshot_is_an_error(opts, node_dir):
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 4):
        store.save(HardState(1, "", i - 1), ents(i, i))
    store.close()
    (node_dir / "log" / "r0000000000000001.p").unlink()
    with pytest.raises(StorageCorruption, match="starts at seq 2"):
        opened(opts)


def test_damaged_segment_falls_back_to_the_records_it_covers(opts, node_dir):
    """A crash between writing a segment and deleting its records: either copy will do."""
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 5):
        store.save(HardState(1, "", i - 1), ents(i, i))
    store.close()
    (node_dir / "log" / "g0000000000000001_0000000000000004.p").write_bytes(b"")
    store, state = opened(opts)
    assert state.entries == ents(1, 4)
    assert "g0000000000000001_0000000000000004.p" not in log_files(node_dir)


def test_records_left_behind_by_an_interrupted_seal_are_ignored_and_removed(opts, node_dir):
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 5):
        store.save(HardState(1, "", i - 1), ents(i, i))
    saved = {p.name: p.read_bytes() for p in (node_dir / "log").iterdir()}
    store.seal_records = 5
    store.save(HardState(1, "", 4), ents(5, 5))  # seals 1..5
    store.close()
    for name, blob in saved.items():  # put the sealed records back
        (node_dir / "log" / name).write_bytes(blob)
    store, state = opened(opts)
    assert state.entries == ents(1, 5)
    assert log_files(node_dir) == ["g0000000000000001_0000000000000005.p"]


def test_items_older_than_the_low_water_mark_are_garbage(opts, node_dir):
    """A crash while compaction deletes old items leaves any subset of them behind."""
    store, _ = opened(opts, seal_records=100)
    for i in range(1, 6):
        store.save(HardState(1, "", i - 1), ents(i, i))
    saved = {p.name: p.read_bytes() for p in (node_dir / "log").iterdir()}
    store.compact(Snapshot(SnapshotMeta(4, 1, Membership()), b"s4"))
    store.close()
    (node_dir / "log" / "r0000000000000002.p").write_bytes(saved["r0000000000000002.p"])
    store, state = opened(opts)
    assert state.snapshot.data == b"s4"
    assert state.entries == ents(5, 5)
    assert "r0000000000000002.p" not in log_files(node_dir)


def test_a_damaged_snapshot_is_an_error_and_an_orphan_one_is_removed(opts, node_dir):
    store, _ = opened(opts)
    store.save(HardState(1, "", 3), ents(1, 4))
    store.compact(Snapshot(SnapshotMeta(3, 1, Membership()), b"s3"))
    store.close()
    snaps = sorted((node_dir / "snap").iterdir())
    assert len(snaps) == 1
    (node_dir / "snap" / "s0000000000000099.p").write_bytes(snaps[0].read_bytes())
    store, state = opened(opts)  # an orphan from a save() that never wrote its record
    assert state.snapshot.data == b"s3"
    assert len(list((node_dir / "snap").iterdir())) == 1
    store.close()
    snaps[0].write_bytes(b"\x93\x01\x02")
    with pytest.raises(StorageCorruption, match="saltext_raft/c1/m1/snap"):
        opened(opts)


def test_temp_files_left_by_a_killed_localfs_write_are_removed(opts, node_dir):
    store, _ = opened(opts)
    store.save(HardState(1, "", 0), ents(1, 1))
    store.close()
    (node_dir / "log" / "tmpab12cd34").write_bytes(b"partial")
    store, state = opened(opts)
    assert state.entries == ents(1, 1)
    assert not any(name.startswith("tmp") for name in os.listdir(node_dir / "log"))


def test_saving_before_load_is_refused(opts):
    store = open_store(opts, "c1", "m1", log_format="keys")
    with pytest.raises(StorageError, match="load"):
        store.save(HardState(1), [])
