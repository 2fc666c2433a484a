"""Reading a source tree (``saltext_raft.roots.scan``): the attacks are planted in a real tree
and the scan must refuse them without reading through them."""

from __future__ import annotations

import hashlib
import os

import pytest

from saltext_raft.roots import layout
from saltext_raft.roots import scan

CAP = layout.DEFAULT_MAX_FILE_BYTES


def test_regular_files_are_hashed_with_their_mode(tmp_path):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "init.sls").write_bytes(b"nginx: pkg.installed\n")
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\n")
    script.chmod(0o4750)
    (tmp_path / "empty").write_bytes(b"")
    result = scan.scan_tree(str(tmp_path), CAP)
    assert result.refused == []
    assert result.files == {
        "empty": scan.ScannedFile(hashlib.sha256(b"").hexdigest(), 0, 0o644),
        "run.sh": scan.ScannedFile(hashlib.sha256(b"#!/bin/sh\n").hexdigest(), 10, 0o700),
        "web/init.sls": scan.ScannedFile(
            hashlib.sha256(b"nginx: pkg.installed\n").hexdigest(), 21, 0o644
        ),
    }


def test_a_symlink_to_a_secret_outside_the_root_is_refused_and_never_read(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret\n")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "passwords").symlink_to(secret)
    (root / "linkdir").symlink_to(tmp_path)  # a link to a directory above the root
    (root / "inner").symlink_to("sub")  # even pointing inside: links are not replicated
    result = scan.scan_tree(str(root), CAP)
    assert result.files == {}
    reasons = dict(result.refused)
    assert "outside the root" in reasons["sub/passwords"]
    assert "outside the root" in reasons["linkdir"]
    assert "symbolic link" in reasons["inner"] and "outside" not in reasons["inner"]


def test_a_fifo_is_refused_without_blocking_the_scan(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would block forever
    (tmp_path / "ok").write_bytes(b"1")
    result = scan.scan_tree(str(tmp_path), CAP)
    assert list(result.files) == ["ok"]
    assert result.refused == [("pipe", "a FIFO, not a regular file: refused")]


def test_a_file_over_the_cap_is_refused_and_one_at_the_cap_is_accepted(tmp_path):
    with open(tmp_path / "big", "wb") as fh:
        fh.truncate(CAP + 1)
    with open(tmp_path / "at-cap", "wb") as fh:
        fh.truncate(CAP)
    result = scan.scan_tree(str(tmp_path), CAP)
    assert list(result.files) == ["at-cap"] and result.files["at-cap"].size == CAP
    assert result.refused == [("big", f"{CAP + 1} bytes: over raft_roots_max_file_bytes ({CAP})")]


def test_a_name_with_control_characters_is_refused_and_temporary_files_skipped(tmp_path):
    (tmp_path / "bad\nname").write_bytes(b"x")
    (tmp_path / f"{layout.TEMP_PREFIX}123.tmp").write_bytes(b"half")
    result = scan.scan_tree(str(tmp_path), CAP)
    assert result.files == {}
    assert [p for p, _ in result.refused] == ["bad\nname"]


def test_a_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan.scan_tree(str(tmp_path / "nope"), CAP)


def test_reading_chunks_detects_a_file_changed_since_the_scan(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"x" * (layout.CHUNK_BYTES + 10))
    seen = scan.scan_tree(str(tmp_path), CAP).files["a"]
    chunks = list(scan.read_chunks(str(tmp_path), "a", seen))
    assert [len(c) for c in chunks] == [layout.CHUNK_BYTES, 10]
    f.write_bytes(b"y" * (layout.CHUNK_BYTES + 10))
    with pytest.raises(scan.SourceChanged):
        list(scan.read_chunks(str(tmp_path), "a", seen))


def test_reading_chunks_does_not_follow_a_link_swapped_in_after_the_scan(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"top secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_bytes(b"top secret")  # same bytes, so only the link could pass
    seen = scan.scan_tree(str(root), CAP).files["a"]
    (root / "a").unlink()
    (root / "a").symlink_to(secret)
    with pytest.raises(OSError):
        list(scan.read_chunks(str(root), "a", seen))
