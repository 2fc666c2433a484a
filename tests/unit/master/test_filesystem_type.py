"""Which filesystem a path is on (``master/fileutil.py``, ``filesystem_type``), and the
warning the ``sqlite`` layout gives on a network filesystem (``replicated/sqlite.py``)."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from saltext_raft.master import fileutil
from saltext_raft.master.fileutil import filesystem_type
from saltext_raft.replicated.sqlite import SqliteMirror
from saltext_raft.replicated.sqlite import warn_network_filesystem


def mountinfo(tmp_path, *mounts) -> str:
    """A mountinfo file with ``(mount point, fstype)`` lines, in mount order."""
    lines = ["not a mountinfo line", "1 2 3"]  # ignored
    for n, (point, fstype) in enumerate(mounts, start=20):
        escaped = point.replace("\\", "\\134").replace(" ", "\\040")
        lines.append(f"{n} 1 0:{n} / {escaped} rw,relatime shared:{n} - {fstype} src rw")
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_longest_mount_point_that_holds_the_path_decides(tmp_path):
    data = tmp_path / "srv" / "salt cache" / "copy"
    data.mkdir(parents=True)
    info = mountinfo(
        tmp_path,
        ("/", "ext4"),
        (str(tmp_path / "srv"), "xfs"),
        (str(tmp_path / "srv" / "salt cache"), "nfs4"),  # a space, escaped as \040
        (str(tmp_path / "srv" / "salt"), "tmpfs"),  # a prefix of the name, not a parent
    )
    assert filesystem_type(str(data), info) == "nfs4"
    assert filesystem_type(str(tmp_path / "srv"), info) == "xfs"
    assert filesystem_type(str(tmp_path), info) == "ext4"


def test_a_later_mount_on_the_same_point_hides_the_earlier_one(tmp_path):
    info = mountinfo(tmp_path, ("/", "ext4"), (str(tmp_path), "ext4"), (str(tmp_path), "cifs"))
    assert filesystem_type(str(tmp_path / "x"), info) == "cifs"


def test_a_symlink_is_resolved_first(tmp_path):
    (tmp_path / "remote").mkdir()
    os.symlink(tmp_path / "remote", tmp_path / "link")
    info = mountinfo(tmp_path, ("/", "ext4"), (str(tmp_path / "remote"), "nfs"))
    assert filesystem_type(str(tmp_path / "link"), info) == "nfs"


def test_no_mountinfo_means_unknown(tmp_path):
    assert filesystem_type(str(tmp_path), str(tmp_path / "missing")) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/mountinfo")
def test_this_hosts_own_mounts_are_read():
    assert filesystem_type("/proc") == "proc"


def test_the_sqlite_layout_warns_on_a_network_filesystem_and_still_opens(
    tmp_path, monkeypatch, caplog
):
    root = tmp_path / "copy"
    monkeypatch.setattr(
        fileutil, "MOUNTINFO", mountinfo(tmp_path, ("/", "ext4"), (str(tmp_path), "nfs4"))
    )
    with caplog.at_level(logging.WARNING, logger="saltext_raft.replicated.sqlite"):
        mirror = SqliteMirror(str(root))
    warned = [r.getMessage() for r in caplog.records if "network filesystem" in r.getMessage()]
    assert len(warned) == 1
    assert "nfs4" in warned[0] and "raft_cache_backend: localfs" in warned[0]
    assert mirror.root == str(root)


def test_a_local_disk_gives_no_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fileutil, "MOUNTINFO", mountinfo(tmp_path, ("/", "ext4")))
    with caplog.at_level(logging.WARNING, logger="saltext_raft.replicated.sqlite"):
        SqliteMirror(str(tmp_path / "copy"))
    assert warn_network_filesystem(str(tmp_path)) is None
    assert not [r for r in caplog.records if "network filesystem" in r.getMessage()]
