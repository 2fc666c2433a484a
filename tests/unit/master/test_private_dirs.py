"""The directories the engine trusts are private to the master's user (issue 18, H1).

The attacks run as they would on a master: the tests run as root, and a forked child that
switched to uid 65534 ("nobody") plays the local unprivileged user. The shared parent is a
world-writable sticky directory, as ``/dev/shm`` and ``/tmp`` are.
"""

from __future__ import annotations

import os
import stat

import pytest
from salt.exceptions import SaltCacheError

from saltext_raft.master.fileutil import ProcessLock
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.replicated import driver as cachedriver
from saltext_raft.replicated import keystore
from saltext_raft.replicated.config import from_opts as cache_settings
from saltext_raft.replicated.localfs import LocalfsMirror
from saltext_raft.replicated.localfs import MirrorPathError
from saltext_raft.replicated.service import CacheService
from saltext_raft.replicated.sqlite import SqliteMirror
from tests.attacker import NOBODY
from tests.attacker import as_nobody
from tests.attacker import plant_rogue_key
from tests.attacker import sticky_shared_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@pytest.fixture
def shared():
    with sticky_shared_dir() as path:
        yield path


def opts_for(tmp_path, root: str, backend: str = "localfs") -> dict:
    return {
        "cachedir": str(tmp_path / "cachedir"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "raft_cache_dir": root,
        "raft_cache_backend": backend,
        "keys.cache_driver": "raft",
        "cache": "raft",
        "id": "m1",
    }


@pytest.mark.parametrize("backend", ["localfs", "sqlite"])
def test_a_cache_dir_planted_by_another_user_is_refused_and_nothing_from_it_is_served(
    tmp_path, shared, backend
):
    """Regression (H1): the planted directory was accepted; ``salt-key -L`` listed ``rogue``
    as accepted and the engine wrote ``pki_dir/minions/rogue``."""
    root = os.path.join(shared, "salt-raft-cache")
    as_nobody(lambda: plant_rogue_key(root))
    assert os.stat(root).st_uid == NOBODY
    opts = opts_for(tmp_path, root, backend)
    os.makedirs(opts["pki_dir"])

    # the engine's side: the cache service (hence the engine) does not start on it
    with pytest.raises(UnsafeDirectory) as info:
        CacheService(cache_settings(opts))
    msg = str(info.value)
    assert root in msg and f"owned by uid {NOBODY}" in msg and "0777" in msg
    assert "chown" in msg and "remove it" in msg
    with pytest.raises(UnsafeDirectory):
        (SqliteMirror if backend == "sqlite" else LocalfsMirror)(root)

    # the workers' side: the driver does not read it (salt-key's listing, _auth's fetch)
    with pytest.raises(SaltCacheError, match="owned by uid 65534"):
        keystore.list_all(opts, "keys")
    with pytest.raises(SaltCacheError, match="not reading the local copy"):
        cachedriver.fetch(opts, keystore.mirror_bank("keys"), "rogue")
    # and nothing was written into it
    assert sorted(os.listdir(root)) == [keystore.MIRROR_PREFIX]


def test_the_state_dir_of_another_user_is_refused_by_the_engine_lock(tmp_path, shared):
    state = os.path.join(shared, "saltext_raft")

    def plant():
        os.umask(0)
        os.mkdir(state, 0o777)
        with open(os.path.join(state, "ready"), "w", encoding="utf-8") as fh:
            fh.write('{"ready": true}')

    as_nobody(plant)
    with pytest.raises(UnsafeDirectory, match="the engine's state directory"):
        ProcessLock(os.path.join(state, "engine.lock")).acquire()
    assert not os.path.exists(os.path.join(state, "engine.lock"))


def test_a_group_or_world_writable_dir_even_our_own_is_refused(tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chmod(root, 0o770)
    with pytest.raises(UnsafeDirectory, match="mode 0770: writable by group or others"):
        LocalfsMirror(str(root))


def test_a_symlinked_cache_dir_is_refused(tmp_path):
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "cache"
    link.symlink_to(target)
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        LocalfsMirror(str(link))
    assert not os.listdir(target)


def test_a_dir_in_a_parent_others_can_write_without_sticky_bit_is_refused(tmp_path):
    parent = tmp_path / "open"
    parent.mkdir()
    os.chown(parent, NOBODY, NOBODY)
    os.chmod(parent, 0o777)
    with pytest.raises(UnsafeDirectory, match="without the sticky bit"):
        ensure_private_dir(str(parent / "cache"))


def test_a_new_cache_dir_is_created_0700(tmp_path, shared):
    root = os.path.join(shared, "salt-raft-cache")
    old = os.umask(0)
    try:
        mirror = LocalfsMirror(root)
    finally:
        os.umask(old)
    for path in (root, mirror.tmpdir):
        st = os.lstat(path)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    mirror.store("b", "k", b"v", 1)
    assert stat.S_IMODE(os.lstat(os.path.join(root, "b")).st_mode) == 0o700


def test_a_symlinked_bank_is_never_followed(tmp_path):
    """Regression (H1): a bank that was a link made the engine (root) write, and flush, in a
    directory of the link owner's choice."""
    root = str(tmp_path / "cache")
    LocalfsMirror(root)
    target = tmp_path / "elsewhere"
    (target / "sub").mkdir(parents=True)
    (target / "victim.p").write_bytes(b"precious")
    (target / "sub" / "x.p").write_bytes(b"precious")
    os.symlink(target, os.path.join(root, "bank"))

    mirror = LocalfsMirror(root)  # a new process: nothing checked yet
    for bank in ("bank", "bank/deeper"):
        with pytest.raises(MirrorPathError, match="symbolic link"):
            mirror.store(bank, "k", b"planted", 1)
    for bank, key in (("bank/sub", None), ("bank", "victim"), ("bank/sub", "x")):
        with pytest.raises(MirrorPathError, match="symbolic link"):
            mirror.flush(bank, key)
    assert sorted(p.name for p in target.iterdir()) == ["sub", "victim.p"]
    assert (target / "victim.p").read_bytes() == b"precious"
    assert (target / "sub" / "x.p").read_bytes() == b"precious"

    # the start-up rebuild removes the link (not what it points to) and makes a real bank
    stats = mirror.rebuild(["bank"], [("bank", "k", b"value", 1)])
    assert stats["deleted"] >= 1
    assert not os.path.islink(os.path.join(root, "bank"))
    with open(os.path.join(root, "bank", "k.p"), "rb") as fh:
        assert fh.read() == b"value"
    assert sorted(p.name for p in target.iterdir()) == ["sub", "victim.p"]
    assert (target / "victim.p").read_bytes() == b"precious"


def test_a_symlinked_key_file_is_replaced_not_followed(tmp_path):
    root = str(tmp_path / "cache")
    mirror = LocalfsMirror(root)
    mirror.store("b", "seed", b"x", 1)
    target = tmp_path / "secret.txt"
    target.write_bytes(b"value")  # same bytes as the wanted value: must not be "kept"
    os.symlink(target, os.path.join(root, "b", "k.p"))
    mirror.rebuild(["b"], [("b", "k", b"value", 1)])
    assert not os.path.islink(os.path.join(root, "b", "k.p"))
    assert target.read_bytes() == b"value"
    os.symlink(target, os.path.join(root, "b", "k2.p"))
    LocalfsMirror(root).store("b", "k2", b"new", 2)
    assert target.read_bytes() == b"value"
    assert not os.path.islink(os.path.join(root, "b", "k2.p"))


def test_another_user_cannot_plant_a_link_at_a_bank_of_the_copy(shared):
    """Red team 2026-12-07: a symbolic link at a *bank* directory is followed by the driver's
    reads until the engine restarts. Planting one needs write access to the bank's parent,
    which the copy gives nobody but the master's user (root 0700, each bank created 0700): the
    local unprivileged user tries every way to put a link there, in a copy whose root another
    user may enter (0755), and fails each time."""
    root = os.path.join(shared, "salt-raft-cache")
    mirror = LocalfsMirror(root)
    mirror.store("minions/m1", "data", b"\xa1v", 1)
    os.chmod(root, 0o755)  # still private (nobody may write); the strictest case for us
    bank = os.path.join(root, "minions")
    assert stat.S_IMODE(os.stat(bank).st_mode) == 0o700

    def attack():
        failures = 0
        for step in (
            lambda: os.rename(bank, bank + ".old"),
            lambda: os.symlink("/etc", os.path.join(root, "evil")),
            lambda: os.symlink("/etc", os.path.join(bank, "m1")),
        ):
            try:
                step()
            except PermissionError:
                failures += 1
        if failures != 3:
            raise AssertionError(f"only {failures} of 3 plants were refused")

    as_nobody(attack)
    assert os.path.isdir(bank) and not os.path.islink(bank)
    assert sorted(os.listdir(root)) == ["minions"]
