"""CacheStore on localfs with segment files: group commit, layout next to Salt's own keys,
roll-over and compaction, torn tails, corruption, and the move from one key per record."""

from __future__ import annotations

import pathlib
import types

import pytest
import salt.cache

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.storage import StorageCorruption
from saltext_raft.storage import StorageError
from saltext_raft.storage import open_store
from saltext_raft.storage.segments import FRAME_MAGIC
from saltext_raft.storage.segments import encode_frame
from saltext_raft.storage.store import CacheStore
from tests.functional.storage.backends import master_opts


def ents(first, last, term=1):
    return [Entry(term, i, 0, b"d%d" % i) for i in range(first, last + 1)]


def snap(index, term=1, data=b"s"):
    return Snapshot(SnapshotMeta(index, term, Membership()), data)


@pytest.fixture
def opts(tmp_path):
    return master_opts(str(tmp_path / "cache"))


@pytest.fixture
def node_dir(opts):
    return pathlib.Path(opts["cachedir"]) / "saltext_raft" / "c1" / "m1"


def opened(opts, **kwargs):
    store = open_store(opts, "c1", "m1", **kwargs)
    state = store.load()
    return store, state


def segments(node_dir):
    return sorted(p.name for p in (node_dir / "wal").iterdir())


def fill(store, first, last, per_save=1):
    for i in range(first, last + 1, per_save):
        top = min(last, i + per_save - 1)
        store.save(HardState(1, "m1", i - 1), ents(i, top))


def test_localfs_defaults_to_segment_files_and_other_drivers_to_keys(opts):
    store, _ = opened(opts)
    assert store.log_format == "segments"
    redis_like = types.SimpleNamespace(driver="redis")
    assert CacheStore(redis_like, "c1", "m1").log_format == "keys"
    with pytest.raises(StorageError, match="needs the localfs cache driver"):
        CacheStore(redis_like, "c1", "m1", log_format="segments")
    with pytest.raises(StorageError, match="log_format 'x'"):
        CacheStore(redis_like, "c1", "m1", log_format="x")


def test_one_write_and_one_fdatasync_per_save_whatever_the_batch_size(opts):
    store, _ = opened(opts)
    store.save(HardState(1, "m1", 0), ents(1, 1))  # creates the first segment
    for size in (1, 10, 500, 0):
        writes, datasyncs, fsyncs = store.segment_writes, store.fdatasyncs, store.fsyncs
        last = store.last_index
        store.save(HardState(1, "m1", last), ents(last + 1, last + size))
        assert store.segment_writes - writes == 1
        assert store.fdatasyncs - datasyncs == 1
        assert store.fsyncs == fsyncs  # no directory fsync: no new file
    assert store.keys_written == 0


def test_a_new_segment_costs_an_fsync_of_the_file_and_of_the_directory(opts, node_dir):
    store, _ = opened(opts, segment_bytes=300)
    fill(store, 1, 3)
    fsyncs = store.fsyncs
    for _ in range(100):  # one entry at a time until the 300-byte segment rolls over
        if len(segments(node_dir)) > 1:
            break
        fill(store, store.last_index + 1, store.last_index + 1)
    assert len(segments(node_dir)) == 2
    assert store.fsyncs - fsyncs == 2
    store.close()
    assert opened(opts)[1].entries == ents(1, store.last_index)


def test_salt_localfs_list_and_fetch_of_the_node_banks_still_work(opts, node_dir):
    store, _ = opened(opts)
    fill(store, 1, 5)
    store.compact(snap(3))
    cache = salt.cache.Cache(opts)
    assert sorted(cache.list("saltext_raft/c1/m1")) == ["log", "snap", "wal"]
    names = list(cache.list("saltext_raft/c1/m1/wal"))
    assert names == ["0000000000000001.wal"]  # not "*.p": never a key's payload
    assert cache.fetch("saltext_raft/c1/m1/wal", names[0]) == {}
    assert list(cache.list("saltext_raft/c1/m1/log")) == []
    assert cache.contains("saltext_raft/c1/m1/snap", store._snap_key)  # pylint: disable=protected-access


def test_compaction_deletes_whole_segments_below_the_snapshot(opts, node_dir):
    store, _ = opened(opts, segment_bytes=200)
    fill(store, 1, 40)
    assert len(segments(node_dir)) > 5
    store.compact(snap(30))
    left = segments(node_dir)
    assert len(left) <= 4
    store.close()
    _, state = opened(opts)
    assert state.snapshot == snap(30)
    assert state.entries == ents(31, 40)


def test_a_deleted_segment_that_comes_back_is_never_read_and_removed(opts, node_dir):
    """Deletions are not fsynced: after a power loss, a covered segment may be back."""
    store, _ = opened(opts, segment_bytes=200)
    fill(store, 1, 40)
    first = segments(node_dir)[0]
    store.compact(snap(30))
    store.close()
    assert first not in segments(node_dir)
    (node_dir / "wal" / first).write_bytes(b"junk that would not parse")
    _, state = opened(opts)
    assert state.entries == ents(31, 40)
    assert first not in segments(node_dir)


def _newest(node_dir):
    return node_dir / "wal" / segments(node_dir)[-1]


@pytest.mark.parametrize(
    "tear",
    [
        pytest.param(lambda blob, frame: blob[: len(blob) - len(frame) // 2], id="half-a-frame"),
        pytest.param(lambda blob, frame: blob[: len(blob) - len(frame) + 5], id="half-a-header"),
        pytest.param(
            lambda blob, frame: blob[: len(blob) - len(frame)] + bytes(len(frame)), id="zeros"
        ),
        pytest.param(lambda blob, frame: blob[:-3] + b"\xff\xff\xff", id="garbled-blob"),
    ],
)
def test_a_torn_last_frame_is_cut_off_and_its_seq_reused(opts, node_dir, tear):
    store, _ = opened(opts)
    store.save(HardState(1, "", 0), ents(1, 3))
    size = _newest(node_dir).stat().st_size
    store.save(HardState(1, "", 3), ents(4, 6))
    store.close()
    path = _newest(node_dir)
    blob = path.read_bytes()
    path.write_bytes(tear(blob, blob[size:]))
    store, state = opened(opts)
    assert state.entries == ents(1, 3)
    assert state.hard_state == HardState(1, "", 0)
    assert path.stat().st_size == size  # cut before the next append
    store.save(None, ents(4, 4, term=2))
    store.close()
    assert opened(opts)[1].entries == ents(1, 3) + ents(4, 4, term=2)


def test_a_segment_created_but_never_written_is_removed(opts, node_dir):
    store, _ = opened(opts, segment_bytes=100)
    fill(store, 1, 6)
    store.close()
    names = segments(node_dir)
    (node_dir / "wal" / "0000000000000099.wal").write_bytes(b"")
    _, state = opened(opts)
    assert state.entries == ents(1, 6)
    assert segments(node_dir) == names


def test_a_damaged_frame_followed_by_an_intact_one_stops_the_node(opts, node_dir):
    store, _ = opened(opts)
    fill(store, 1, 4)
    store.close()
    path = _newest(node_dir)
    blob = bytearray(path.read_bytes())
    second = blob.find(FRAME_MAGIC, 1)
    blob[second - 1] ^= 0xFF  # last byte of the first frame's entry data
    path.write_bytes(bytes(blob))
    with pytest.raises(StorageCorruption) as err:
        opened(opts)
    msg = str(err.value)
    assert "saltext_raft/c1/m1/wal" in msg and "0000000000000001.wal" in msg
    assert "record seq 1" in msg and str(path) in msg
    assert "learner" in msg and "remove the node's data" in msg


def test_a_damaged_header_followed_by_an_intact_frame_is_not_a_torn_tail(opts, node_dir):
    store, _ = opened(opts)
    fill(store, 1, 4)
    store.close()
    path = _newest(node_dir)
    blob = bytearray(path.read_bytes())
    blob[blob.find(FRAME_MAGIC, 1) + 9] ^= 0x01  # the length of frame 2
    path.write_bytes(bytes(blob))
    with pytest.raises(StorageCorruption, match="damaged frame at byte .* intact frame follows"):
        opened(opts)


def test_damage_at_the_end_of_an_older_segment_stops_the_node(opts, node_dir):
    store, _ = opened(opts, segment_bytes=100)
    fill(store, 1, 6)
    store.close()
    older = node_dir / "wal" / segments(node_dir)[0]
    older.write_bytes(older.read_bytes()[:-1])
    with pytest.raises(StorageCorruption, match=segments(node_dir)[0]):
        opened(opts)


def test_a_missing_segment_stops_the_node(opts, node_dir):
    store, _ = opened(opts, segment_bytes=100)
    fill(store, 1, 8)
    store.close()
    names = segments(node_dir)
    (node_dir / "wal" / names[1]).unlink()
    with pytest.raises(StorageCorruption, match="segment file was lost"):
        opened(opts)
    (node_dir / "wal" / names[0]).unlink()
    with pytest.raises(StorageCorruption, match="segment file was lost"):
        opened(opts)


def test_a_frame_out_of_sequence_stops_the_node(opts, node_dir):
    store, _ = opened(opts)
    fill(store, 1, 2)
    store.close()
    path = _newest(node_dir)
    with path.open("ab") as fh:
        fh.write(encode_frame(7, 0, b"whatever"))
    with pytest.raises(StorageCorruption, match="holds seq 7, not 3"):
        opened(opts)


def test_a_hard_state_alone_is_one_small_frame(opts, node_dir):
    """The runtime writes commit-only hard states in the background: no new file for them."""
    store, _ = opened(opts)
    fill(store, 1, 10)
    size, writes = _newest(node_dir).stat().st_size, store.segment_writes
    store.save(HardState(1, "m1", 10), [])
    assert store.segment_writes - writes == 1
    assert _newest(node_dir).stat().st_size - size < 64
    store.close()
    assert opened(opts)[1].hard_state == HardState(1, "m1", 10)


def test_a_log_kept_one_key_per_record_moves_to_segment_files(opts, node_dir):
    store, _ = opened(opts, log_format="keys", seal_records=4)
    fill(store, 1, 10)
    store.compact(snap(6, data=b"s6"))
    fill(store, 11, 13)
    next_seq = store._next_seq  # pylint: disable=protected-access
    store.close()
    store, state = opened(opts)
    assert state.snapshot == snap(6, data=b"s6")
    assert state.entries == ents(7, 13)
    assert state.hard_state == HardState(1, "m1", 12)
    assert list((node_dir / "log").iterdir()) == []
    assert segments(node_dir) == [f"{next_seq:016d}.wal"]
    store.compact(snap(9, data=b"s9"))
    store.save(HardState(2, "m1", 13), ents(14, 14, term=2))
    store.close()
    _, state = opened(opts)
    assert state.snapshot == snap(9, data=b"s9")
    assert state.entries == ents(10, 13) + ents(14, 14, term=2)


def test_keys_left_by_an_interrupted_move_are_removed(opts, node_dir):
    store, _ = opened(opts, log_format="keys", seal_records=100)
    fill(store, 1, 3)
    store.close()
    saved = {p.name: p.read_bytes() for p in (node_dir / "log").iterdir()}
    store, _ = opened(opts)  # moves
    store.close()
    for name, blob in saved.items():  # the deletions did not survive a power loss
        (node_dir / "log" / name).write_bytes(blob)
    _, state = opened(opts)
    assert state.entries == ents(1, 3)
    assert list((node_dir / "log").iterdir()) == []


def test_segment_files_are_not_read_back_one_key_per_record(opts):
    store, _ = opened(opts)
    fill(store, 1, 3)
    store.close()
    with pytest.raises(StorageError, match="log_format='auto'"):
        opened(opts, log_format="keys")


def test_a_failed_write_stops_further_writes(opts, monkeypatch):
    store, _ = opened(opts)
    fill(store, 1, 2)

    def fail(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("os.fdatasync", fail)
    with pytest.raises(StorageError, match="write failed"):
        store.save(HardState(1, "", 2), ents(3, 3))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="an earlier write failed"):
        store.save(HardState(1, "", 2), ents(3, 3))
    store.close()
    assert opened(opts)[1].entries == ents(1, 2)  # cut back to what was durable
