"""The names the roots store accepts (``saltext_raft.roots.layout``): every path that reaches a
receiving master's disk is checked here first."""

from __future__ import annotations

import hashlib

import pytest

from saltext_raft.roots import layout
from saltext_raft.roots.layout import BadRootPath

SHA = hashlib.sha256(b"x").hexdigest()


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "/etc/shadow",
        "a//b",
        "./a",
        "a/.",
        "",
        "a\0b",
        "a\nb",
        "x" * 256,
        f"dir/{layout.TEMP_PREFIX}abc.tmp",
        None,
    ],
)
def test_paths_that_could_leave_the_root_or_collide_are_refused(path):
    with pytest.raises(BadRootPath):
        layout.check_relpath(path)


@pytest.mark.parametrize("path", ["top.sls", "web/init.sls", "a b/ü.txt", "..hidden/x"])
def test_ordinary_paths_pass(path):
    assert layout.check_relpath(path) == path


def test_modes_carry_whether_the_file_is_executable_and_whether_others_may_read_it():
    assert layout.file_mode(0o4755) == 0o755
    assert layout.file_mode(0o4754) == 0o755
    assert layout.file_mode(0o700) == 0o700
    assert layout.file_mode(0o666) == 0o644
    assert layout.file_mode(0o600) == 0o600


def test_chunk_arithmetic_and_the_16_mib_file():
    assert layout.chunk_count(0) == 0
    assert layout.chunk_count(1) == 1
    assert layout.chunk_count(layout.CHUNK_BYTES) == 1
    assert layout.chunk_count(layout.CHUNK_BYTES + 1) == 2
    assert layout.chunk_count(layout.DEFAULT_MAX_FILE_BYTES) == 32
    # one chunk stays far below one log entry's limit and the cache service's batch bound
    from saltext_raft.replicated.service import MAX_BATCH_BYTES  # pylint: disable=C0415
    from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES  # pylint: disable=C0415

    assert layout.CHUNK_BYTES < MAX_BATCH_BYTES < DEFAULT_MAX_ENTRY_BYTES


def _manifest(files):
    return layout.manifest({"base": files}, "m1", 0)


@pytest.mark.parametrize(
    "files, why",
    [
        ({"../x": [SHA, 1, 0o644]}, "'..' part"),
        ({"/abs": [SHA, 1, 0o644]}, "absolute"),
        ({"a": ["nothex", 1, 0o644]}, "SHA-256"),
        ({"a": [SHA, -1, 0o644]}, "bad size"),
        ({"a": [SHA, 1, 0o4755]}, "mode"),
        ({"a": [SHA, 100, 0o644]}, "raft_roots_max_file_bytes"),
        ({"a": [SHA, 1]}, "malformed"),
    ],
)
def test_a_manifest_naming_anything_unsafe_is_refused_as_a_whole(files, why):
    with pytest.raises(BadRootPath, match=why):
        layout.check_manifest("file_roots", _manifest(files), max_file_bytes=99)


def test_a_good_manifest_reads_back_and_an_absent_one_is_empty():
    got = layout.check_manifest("file_roots", _manifest({"a/b": [SHA, 1, 0o755]}), 99)
    assert got == {"base": {"a/b": (SHA, 1, 0o755)}}
    assert layout.check_manifest("file_roots", {}, 99) == {}
    with pytest.raises(BadRootPath, match="format"):
        layout.check_manifest("file_roots", {"format": 99, "envs": {}}, 99)
