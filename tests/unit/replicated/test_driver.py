"""The ``raft`` cache driver's per-call settings (no engine, no loader)."""

from __future__ import annotations

import os

import pytest
from salt.exceptions import SaltCacheError

from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import driver as cachedriver


class Recording(dict):
    """A dict that remembers which keys were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def base_opts(tmp_path, **extra):
    return dict(cachedir=str(tmp_path / "c"), sock_dir=str(tmp_path / "s"), **extra)


def test_the_settings_key_names_every_option_from_opts_reads(tmp_path):
    """Regression guard for the parsed-settings cache: an option ``from_opts`` reads but the
    key leaves out would keep its first value for the life of the process."""
    opts = Recording(base_opts(tmp_path))
    cacheconfig.from_opts(opts)
    assert opts.read <= set(cachedriver._OPTION_NAMES)  # pylint: disable=protected-access


def test_a_changed_option_takes_effect_on_the_next_call(tmp_path):
    opts = base_opts(tmp_path, raft_cache_timeout=5)
    assert cachedriver._settings(opts).timeout == 5  # pylint: disable=protected-access
    opts["raft_cache_timeout"] = 7
    assert cachedriver._settings(opts).timeout == 7  # pylint: disable=protected-access
    opts["raft_cache_linearizable_reads"] = True
    assert cachedriver._settings(opts).linearizable_reads  # pylint: disable=protected-access


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_another_mapping_is_read_again_after_the_ttl_and_not_before(tmp_path, monkeypatch):
    """Salt 3008 hands the driver an ``OptsDict`` whose every read takes a lock: its options
    are read once per ``OPTS_SETTINGS_TTL``, and a changed one takes effect after that."""
    clock = Clock()
    monkeypatch.setattr(cachedriver, "_clock", clock)
    opts = Recording(base_opts(tmp_path, raft_cache_timeout=5))
    assert cachedriver._settings(opts).timeout == 5  # pylint: disable=protected-access
    opts.read.clear()
    opts["raft_cache_timeout"] = 7
    assert cachedriver._settings(opts).timeout == 5  # pylint: disable=protected-access
    assert not opts.read  # served without reading the options
    clock.now += cachedriver.OPTS_SETTINGS_TTL
    assert cachedriver._settings(opts).timeout == 7  # pylint: disable=protected-access
    assert opts.read  # read again


def test_an_object_given_the_id_of_a_collected_one_gets_its_own_settings(tmp_path, monkeypatch):
    import weakref  # pylint: disable=import-outside-toplevel

    clock = Clock()
    monkeypatch.setattr(cachedriver, "_clock", clock)
    gone = Recording(base_opts(tmp_path, raft_cache_timeout=5))
    stale = cachedriver._settings(gone)  # pylint: disable=protected-access
    new = Recording(base_opts(tmp_path, raft_cache_timeout=9))
    # As if ``new`` had been allocated where ``gone`` was: same id, another object.
    monkeypatch.setitem(
        cachedriver._by_opts,  # pylint: disable=protected-access
        id(new),
        (weakref.ref(gone), clock.now + 60, stale),
    )
    assert cachedriver._settings(new).timeout == 9  # pylint: disable=protected-access


def test_an_option_set_to_none_is_not_taken_for_an_absent_one(tmp_path):
    opts = base_opts(tmp_path)
    assert cachedriver._settings(opts).timeout == cacheconfig.DEFAULT_TIMEOUT  # pylint: disable=protected-access
    with pytest.raises(SaltCacheError, match="raft_cache_timeout"):
        cachedriver._settings(dict(opts, raft_cache_timeout=None))  # pylint: disable=protected-access


def test_a_bad_option_fails_on_every_call(tmp_path):
    opts = base_opts(tmp_path, raft_cache_timeout=-1)
    for _ in range(2):
        with pytest.raises(SaltCacheError, match="raft_cache_timeout"):
            cachedriver._settings(opts)  # pylint: disable=protected-access
    with pytest.raises(SaltCacheError, match="raft_cache_timeout"):
        cachedriver._settings(dict(opts, raft_cache_timeout=[1]))  # pylint: disable=protected-access


def test_the_layout_of_the_local_copy_is_checked(tmp_path):
    # sqlite by default since 0.1.0 (less CPU per store); localfs kept when pinned
    assert cacheconfig.DEFAULT_BACKEND == "sqlite"
    assert cachedriver._settings(base_opts(tmp_path)).backend == "sqlite"  # pylint: disable=protected-access
    assert cacheconfig.CacheSettings(socket="s", root="r").backend == "sqlite"
    for layout in cacheconfig.BACKENDS:
        opts = base_opts(tmp_path, raft_cache_backend=layout)
        assert cachedriver._settings(opts).backend == layout  # pylint: disable=protected-access
    with pytest.raises(SaltCacheError, match="raft_cache_backend.*localfs, sqlite"):
        cachedriver._settings(base_opts(tmp_path, raft_cache_backend="mysql"))  # pylint: disable=protected-access


def test_the_batch_wait_is_checked(tmp_path):
    assert cachedriver._settings(base_opts(tmp_path)).batch_wait == cacheconfig.DEFAULT_BATCH_WAIT  # pylint: disable=protected-access
    opts = base_opts(tmp_path, raft_cache_batch_wait=0)
    assert cachedriver._settings(opts).batch_wait == 0  # pylint: disable=protected-access
    for bad in (-0.001, 0.5, "2ms", True, None):
        with pytest.raises(SaltCacheError, match="raft_cache_batch_wait.*from 0 to 0.1"):
            cachedriver._settings(base_opts(tmp_path, raft_cache_batch_wait=bad))  # pylint: disable=protected-access


def test_reads_need_a_caught_up_marker_written_by_a_running_engine(tmp_path):
    """Issue 17 part 4: a local copy is served only while its engine's caught-up marker
    exists and names a live process; an engine killed without its clean stop leaves a marker
    naming a dead pid, and that copy may be behind the cluster after a restart."""
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    opts = base_opts(tmp_path, raft_cache_timeout=0.2)
    settings = cachedriver._settings(opts)  # pylint: disable=protected-access
    marker = settings.caught_up_path
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with pytest.raises(SaltCacheError, match="has not caught up.*retry"):
        cachedriver.fetch(opts, "b", "k")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    with open(marker, "w", encoding="utf-8") as fh:
        json.dump({"pid": int(dead.stdout)}, fh)
    assert not cachedriver.marker_live(marker)
    with pytest.raises(SaltCacheError, match="has not caught up"):
        cachedriver.list_(opts, "b")
    with open(marker + ".new", "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid()}, fh)
    os.replace(marker + ".new", marker)
    assert cachedriver.fetch(opts, "b", "k") == {}
    assert cachedriver.list_(opts, "b") == []


def test_a_marker_others_could_have_written_is_not_trusted(tmp_path):
    """The marker sits beside the local copy, whose parent may be ``/dev/shm``: a marker that
    is a symlink, or writable by others, never lets a copy be read."""
    import json  # pylint: disable=import-outside-toplevel

    opts = base_opts(tmp_path, raft_cache_timeout=0.1)
    marker = cachedriver._settings(opts).caught_up_path  # pylint: disable=protected-access
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    real = tmp_path / "elsewhere"
    real.write_text(json.dumps({"pid": os.getpid()}))
    os.symlink(real, marker)
    assert not cachedriver.marker_live(marker)
    os.unlink(marker)
    with open(marker, "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid()}, fh)
    os.chmod(marker, 0o666)
    assert not cachedriver.marker_live(marker)
    with pytest.raises(SaltCacheError, match="has not caught up"):
        cachedriver.fetch(opts, "b", "k")
    os.chmod(marker, 0o600)
    assert cachedriver.marker_live(marker)


def test_a_marker_naming_another_users_process_is_dead(tmp_path, monkeypatch):
    """A marker's pid reused by a process of another user means the engine that wrote it is
    gone (the engine runs as the reader's user, and the marker must be the reader's): the copy
    is not served. The kernel answers signal 0 to another user's process with EPERM; that
    answer is injected, since a test running as root is never refused."""
    import json  # pylint: disable=import-outside-toplevel

    marker = tmp_path / "caught-up"
    marker.write_text(json.dumps({"pid": os.getpid()}))
    os.chmod(marker, 0o600)
    assert cachedriver.marker_live(str(marker))

    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refused)
    assert not cachedriver.marker_live(str(marker))


def test_a_marker_whose_pid_now_names_a_later_process_is_dead(tmp_path, monkeypatch):
    """Regression: an engine killed without its clean stop leaves its marker; once the kernel
    gave its pid to a later process of the same user (a request worker after the pids wrapped,
    32768 by default in many containers), signal 0 called the engine alive and a copy that may
    be behind the cluster was served. The marker now records the engine's start time and boot:
    a live process with that pid but another start is not the engine."""
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    from saltext_raft.master.readiness import BOOT_ID  # pylint: disable=import-outside-toplevel
    from saltext_raft.master.readiness import process_start  # pylint: disable=C0415

    later = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        start = process_start(later.pid)
        assert start is not None
        marker = tmp_path / "caught-up"
        planted = []

        def plant(body):  # a new file each time, with its own mtime: the reader sees a change
            planted.append(body)
            new = tmp_path / "caught-up.new"
            new.write_text(json.dumps(body))
            os.chmod(new, 0o600)
            os.utime(new, ns=(0, len(planted)))
            os.replace(new, marker)

        # the engine that wrote it started one tick before the process now holding its pid
        plant({"pid": later.pid, "start": start - 1, "boot": BOOT_ID})
        assert not cachedriver.marker_live(str(marker))
        plant({"pid": later.pid, "start": start, "boot": "another boot"})
        assert not cachedriver.marker_live(str(marker))
        plant({"pid": later.pid, "start": start, "boot": BOOT_ID})
        assert cachedriver.marker_live(str(marker))
        # The pid is reused while this worker keeps the marker's body: seen at the next check.
        monkeypatch.setattr(cachedriver, "process_start", lambda pid: start + 1)
        clock = [1e9]
        monkeypatch.setattr(cachedriver, "_clock", lambda: clock[0])
        assert not cachedriver.marker_live(str(marker))
    finally:
        later.kill()
        later.wait(10)


def test_the_engines_marker_carries_its_start_and_is_live_for_the_driver(tmp_path):
    """The other half of the check above: the marker the cache service writes names this
    process with its start time and boot, and the driver's check accepts it."""
    import json  # pylint: disable=import-outside-toplevel

    from saltext_raft.master.readiness import BOOT_ID  # pylint: disable=import-outside-toplevel
    from saltext_raft.master.readiness import process_start  # pylint: disable=C0415
    from tests.unit.replicated.test_service import caught_up_service  # pylint: disable=C0415

    class CaughtUp:
        async def wait_caught_up(self):
            return 5

    svc = caught_up_service(tmp_path, CaughtUp())
    path = svc.settings.caught_up_path
    with open(path, encoding="utf-8") as fh:
        body = json.load(fh)
    assert (body["pid"], body["boot"]) == (os.getpid(), BOOT_ID)
    assert body["start"] == process_start(os.getpid()) is not None
    assert cachedriver.marker_live(path)
