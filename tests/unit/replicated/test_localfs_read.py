"""The ``localfs`` layout's reader (``replicated/localfs.py`` :func:`read`), which the driver's
``fetch`` uses instead of Salt's ``localfs.fetch``: it must answer exactly as Salt's function
does for every file the mirror writes, and better where Salt's would answer with a piece of
another key."""

from __future__ import annotations

import os
import threading

import pytest
import salt.cache.localfs as salt_localfs
import salt.payload
from salt.exceptions import SaltCacheError

from saltext_raft.replicated.localfs import LocalfsMirror
from saltext_raft.replicated.localfs import key_path
from saltext_raft.replicated.localfs import read

VALUES = [
    {},
    {"a": 1, "nested": {"b": [1, 2, {"c": None}]}},
    "text é",
    b"\x00\xffbytes",
    ["x"] * 3,
    12345678901234567890,
    -1.5,
    True,
    None,
    "x" * 70_000,
]


@pytest.fixture
def mirror(tmp_path):
    return LocalfsMirror(str(tmp_path / "copy"))


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize(
    "bank,key",
    [("bench/fetch", "k1"), ("", "top"), ("minions/m1", "data"), ("a/b", "x/y"), ("b", "k.p")],
)
def test_read_answers_as_salts_localfs_fetch_for_what_the_mirror_writes(mirror, bank, key, value):
    mirror.store(bank, key, salt.payload.dumps(value), 1_700_000_000)
    ours = read(mirror.root, bank, key)
    assert ours == salt_localfs.fetch(bank, key, mirror.root)
    assert ours == value


@pytest.mark.parametrize("bank,key", [("nobank", "k"), ("b", "missing"), ("", "missing")])
def test_an_absent_key_reads_as_an_empty_dict_like_localfs(mirror, bank, key):
    mirror.store("b", "k", salt.payload.dumps(1), 1)
    assert read(mirror.root, bank, key) == {} == salt_localfs.fetch(bank, key, mirror.root)


def test_a_bank_where_the_key_would_be_and_a_key_where_a_bank_would_be_read_as_absent(mirror):
    mirror.store("b/k.p", "inner", salt.payload.dumps(1), 1)  # a *bank* named k.p
    assert os.path.isdir(key_path(mirror.root, "b", "k"))
    assert read(mirror.root, "b", "k") == {}
    mirror.store("c", "leaf", salt.payload.dumps(2), 1)  # c/leaf.p is a file
    assert read(mirror.root, "c/leaf.p", "x") == {}  # its "bank" path passes through a file


def test_a_key_of_the_parent_bank_is_not_answered_for_a_missing_key_of_the_child(mirror):
    """Salt's localfs falls back to ``<bank>.p`` as a dict of keys (an old layout). In the
    mirror that file is key ``m1`` of bank ``minions``: its fallback answers a missing
    ``minions/m1``/``grains`` with a piece of another key's value."""
    mirror.store("minions", "m1", salt.payload.dumps({"grains": "not m1's grains"}), 1)
    assert salt_localfs.fetch("minions/m1", "grains", mirror.root) == "not m1's grains"
    assert read(mirror.root, "minions/m1", "grains") == {}


def test_an_empty_file_reads_as_none_like_localfs(mirror):
    mirror.store("b", "k", b"", 1)
    assert read(mirror.root, "b", "k") is None
    assert salt_localfs.fetch("b", "k", mirror.root) is None


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x01", b"\xdb\xff\xff\xff\xff"])
def test_a_torn_or_corrupt_file_is_a_clear_cache_error_naming_the_key_and_the_fix(mirror, garbage):
    mirror.store("b", "k", garbage, 1)
    with pytest.raises(SaltCacheError, match=r"cannot read b/k .*rebuilds the copy"):
        read(mirror.root, "b", "k")


def test_a_file_that_cannot_be_opened_is_a_cache_error_not_an_absent_key(mirror):
    """Anything but "no such file" is an error: answering ``{}`` would hide a damaged copy
    (here a link loop, which the mirror never creates; root could read a mode-0 file)."""
    mirror.store("b", "other", salt.payload.dumps(1), 1)
    path = key_path(mirror.root, "b", "k")
    os.symlink(os.path.basename(path), path)
    with pytest.raises(SaltCacheError, match="cannot read b/k in the local copy.*symbolic links"):
        read(mirror.root, "b", "k")


def test_the_mirror_writes_where_the_reader_reads(mirror):
    mirror.store("x/y", "z/w", salt.payload.dumps(1), 1)
    assert mirror.key_path("x/y", "z/w") == key_path(mirror.root, "x/y", "z/w")
    assert os.path.isfile(os.path.join(mirror.root, "x", "y", "z", "w.p"))


def test_a_key_rewritten_while_it_is_read_is_seen_whole_old_or_new(mirror):
    """The mirror replaces a key's file by rename; a reader opening it meanwhile holds one
    inode or the other, never a file being written. 2,000 rewrites between two values of
    different sizes while another thread reads: every read is one of the two."""
    small, large = {"v": "a"}, {"v": "b" * 50_000}
    blobs = [salt.payload.dumps(small), salt.payload.dumps(large)]
    mirror.store("b", "k", blobs[0], 1)
    done = threading.Event()
    seen, errors = [], []

    def reader():
        while not done.is_set() and len(seen) < 200_000:
            try:
                seen.append(read(mirror.root, "b", "k"))
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(2000):
            mirror.store("b", "k", blobs[i % 2], 1)
    finally:
        done.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors[:3]
    assert seen and all(v in (small, large) for v in seen)


def test_a_fifo_planted_at_a_key_is_a_cache_error_not_a_worker_held_for_ever(mirror):
    """Regression: ``read`` opened the key's path blocking, so a FIFO there (the mirror never
    makes one) held the request worker's thread until something wrote to it; Salt's localfs
    answers at once. Now the open does not wait and the FIFO is refused as no regular file."""
    mirror.store("b", "other", salt.payload.dumps(1), 1)
    path = key_path(mirror.root, "b", "k")
    os.mkfifo(path, 0o600)
    outcome = []

    def reader():
        try:
            outcome.append(read(mirror.root, "b", "k"))
        except SaltCacheError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # release the blocked open (a writer arriving), then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("read() of a FIFO waited for a writer")
    assert isinstance(outcome[0], SaltCacheError), outcome
    assert "not a regular file" in str(outcome[0])


def test_a_link_planted_at_a_key_is_not_followed(mirror, tmp_path):
    """Regression: ``read`` followed a symbolic link at a key to whatever it named, a file of
    the master's user outside the copy included (the rebuild removes links; until then the
    driver served the target's content as the key's value)."""
    outside = tmp_path / "outside.p"
    outside.write_bytes(salt.payload.dumps({"secret": "not cache data"}))
    mirror.store("b", "other", salt.payload.dumps(1), 1)
    os.symlink(outside, key_path(mirror.root, "b", "k"))
    with pytest.raises(SaltCacheError, match="cannot read b/k .*symbolic link"):
        read(mirror.root, "b", "k")


def test_a_file_larger_than_16_mib_reads_whole(mirror):
    """The reader takes the file's size from ``fstat`` and reads it in one call: a value past
    the control line's 16 MiB (only a rebuild or an older build writes one) still reads."""
    value = "v" * (17 << 20)
    mirror.store("b", "big", salt.payload.dumps(value), 1)
    assert read(mirror.root, "b", "big") == value
