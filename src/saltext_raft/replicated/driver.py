"""The ``raft`` Salt cache driver's code (``saltext_raft/cache/raft.py`` is its thin loader
module): writes go to the local engine over a unix socket, reads come from the local mirror.

Lives here: :class:`EngineClient` (one connection per thread of a worker process, with its own
client id and sequence numbers), :func:`check_names` (the edge check of bank and key names; the
rule itself is ``kv.machine.check_name``) and the driver functions with Salt's signatures. Each
public function checks its names once and calls its ``*_checked`` twin; code that has already
checked (the key store, a listing walking its own keys) calls the twin. Must not live here:
anything that runs in the engine (``replicated/service.py``), mirror writing
(``replicated/mirror.py``), which bank goes where (``replicated/banks.py``).

Why one connection per thread: the KV state machine drops a write whose ``(client, seq)`` is not
newer than the last one it applied for that client (that is how a retry is recognised). Two
threads sharing a client id with writes in flight at once could commit out of order and lose the
older one. A thread has at most one write in flight, so per-thread ids are safe; Salt 3008 runs
worker handlers on executor threads, so this matters.

Reads never talk to the engine unless ``raft_cache_linearizable_reads`` is on: they read the
mirror (with the default ``sqlite`` layout, one indexed query of the mirror's database; with
``raft_cache_backend: localfs``, a ``fetch`` reads one file, ``replicated/localfs.py``'s
:func:`read`, and a listing goes through Salt's ``localfs`` functions), so they cost what a
local read costs and keep working while the quorum is down.

They are served only while the engine's caught-up marker exists and the engine that wrote it
(its pid is in the marker) is alive (``replicated/service.py``, "Caught up"): after a restart
the mirror may be older than what the cluster committed meanwhile (a key deleted while this
master was down would still be there), and an engine killed without its clean stop leaves its
marker behind. Without a live marker a read waits for one, polling, at most ``raft_cache_timeout``,
then fails with a ``SaltCacheError`` that says to retry. The marker is looked at on every read
(a ``stat`` and a signal-0 ``kill``; the file is read again only when it changed, and
``/proc/<pid>/stat`` at most every second, so that a pid the kernel gave a later process
does not pass for the engine): a marker remembered for a while would let a worker read a
copy its engine has just started to rebuild.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import stat
import threading
import time
import uuid
import weakref

import salt.cache.localfs as _localfs
import salt.payload
from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import BadName
from saltext_raft.kv.machine import check_flush
from saltext_raft.kv.machine import check_key
from saltext_raft.kv.machine import check_name
from saltext_raft.kv.machine import expire_value
from saltext_raft.kv.machine import union_value
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.master.fileutil import check_private_dir
from saltext_raft.master.readiness import BOOT_ID
from saltext_raft.master.readiness import process_alive
from saltext_raft.master.readiness import process_start
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import localfs as localfs_layout
from saltext_raft.replicated.sqlite import SqliteReader
from saltext_raft.runtime.control import MAX_LINE

#: Seconds between reconnection attempts while the engine is not reachable.
RECONNECT_INTERVAL = 0.05
#: Seconds between looks at the caught-up marker while a read waits for it.
CAUGHT_UP_POLL = 0.05
_CAUSES = {
    "no_leader": "no leader: this master cannot reach a quorum of the raft cluster",
    "timeout": "not committed in time: no quorum of masters reachable, or the leader changed",
    "stopped": "the local raft engine is stopping or has stopped",
    "storage_failed": "the local raft engine stopped after a storage failure",
    "rejected": "rejected by the raft engine",
    "overloaded": "the local raft engine has too many writes waiting; not applied, retry later",
}


class EngineUnavailable(OSError):
    """The engine's socket is missing or refuses connections."""


class RequestTooLarge(Exception):
    """A request line longer than the engine's socket reads (``runtime.control.MAX_LINE``):
    never sent. The engine closes a connection at such a line, so sending it was answered by
    a broken pipe, retried until the timeout (16 MiB or more each time) and reported as
    "may or may not have been applied" (red team 2026-12-07: a minion's 13 MiB return)."""

    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


class EngineClient:
    """A blocking JSON-lines client of the engine's cache socket (one per thread)."""

    def __init__(self, path: str):
        self.path = path
        self.client_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.seq = 0
        self._sock: socket.socket | None = None
        self._file = None
        self._rid = 0

    def close(self) -> None:
        for obj in (self._file, self._sock):
            if obj is not None:
                try:
                    obj.close()
                except OSError:
                    pass
        self._file = self._sock = None

    def _connect(self, timeout: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise EngineUnavailable(exc.errno, exc.strerror or str(exc)) from None
        self._sock = sock
        self._file = sock.makefile("rb")

    def call(self, request: dict, timeout: float) -> dict:
        """Send one request and wait for its answer, reconnecting until ``timeout``. The same
        request (same ``client``/``seq``) may reach the engine twice: the engine dedups it."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise last if last is not None else EngineUnavailable(0, "timed out")
            try:
                if self._sock is None:
                    self._connect(min(remaining, 1.0))
                self._rid += 1
                req = dict(request, id=self._rid)
                if "timeout" in request:
                    # Leave the engine time to answer with its own error before we give up.
                    req["timeout"] = max(remaining - 0.2, 0.05)
                self._sock.settimeout(remaining + 1.0)
                line = json.dumps(req).encode() + b"\n"
                if len(line) > MAX_LINE:
                    raise RequestTooLarge(len(line))
                self._sock.sendall(line)
                while True:
                    line = self._file.readline()
                    if not line:
                        raise ConnectionResetError("the raft engine closed the connection")
                    answer = json.loads(line)
                    if answer.get("id") == self._rid:
                        return answer
            except (OSError, ValueError) as exc:
                self.close()
                last = exc
                time.sleep(min(RECONNECT_INTERVAL, max(deadline - time.monotonic(), 0)))


_local = threading.local()


def _client(settings) -> EngineClient:
    if getattr(_local, "pid", 0) != os.getpid():
        # A forked child must not share its parent's sockets or client ids.
        _local.clients, _local.pid = {}, os.getpid()
    client = _local.clients.get(settings.socket)
    if client is None:
        client = _local.clients[settings.socket] = EngineClient(settings.socket)
    return client


#: The options :func:`cacheconfig.from_opts` reads; their values key the parsed settings.
_OPTION_NAMES = (
    "cachedir",
    "sock_dir",
    "raft_cache_timeout",
    "raft_cache_linearizable_reads",
    "raft_cache_backend",
    "raft_cache_batch_wait",
    "raft_cache_relay",
    "raft_keys_rotate_window",
    "raft_cache_dir",
    "raft_cache_socket",
)
_parsed: dict[tuple, object] = {}
_UNSET = object()  # an option that is absent is not the same as one set to None
#: Seconds the settings found for one opts object that is not a plain dict (Salt 3008's
#: ``OptsDict``) are used again without reading its options. Each read of an ``OptsDict``
#: takes its lock and walks its parents: the nine options cost 12-25 µs per cache call against
#: ~1 µs from a plain dict, a third of a ``fetch``'s overhead over ``localfs``. Plain dicts are
#: read every call. So a changed option takes effect on the next call (plain dict) or within
#: this many seconds (``OptsDict``); Salt changes none of them while a master runs.
OPTS_SETTINGS_TTL = 1.0
#: id(opts) -> (weak reference to opts, monotonic expiry, settings): the weak reference tells
#: a live object from a new one that was given the id of a collected one.
_by_opts: dict[int, tuple] = {}
_clock = time.monotonic


def _settings(opts: dict):
    """The settings for ``opts``, parsed once per distinct set of values: every cache call
    needs them, and parsing (validation, path joins) was a quarter of a ``fetch``'s overhead
    over ``localfs``. The values are read on every call from a plain dict, at most every
    :data:`OPTS_SETTINGS_TTL` seconds from another mapping, so a changed option takes effect."""
    plain = type(opts) is dict
    if not plain:
        entry = _by_opts.get(id(opts))
        if entry is not None and entry[0]() is opts and _clock() < entry[1]:
            return entry[2]
    settings = _parse_settings(opts)
    if not plain:
        try:
            ref = weakref.ref(opts)
        except TypeError:  # a mapping that cannot be referenced weakly: read every call
            return settings
        if len(_by_opts) >= 64:  # a handful of opts objects per process; stay bounded
            _by_opts.clear()
        _by_opts[id(opts)] = (ref, _clock() + OPTS_SETTINGS_TTL, settings)
    return settings


def _parse_settings(opts: dict):
    values = tuple(opts.get(name, _UNSET) for name in _OPTION_NAMES)
    try:
        return _parsed[values]
    except (KeyError, TypeError):  # TypeError: an unhashable (hence invalid) value
        pass
    try:
        settings = cacheconfig.from_opts(opts)
    except cacheconfig.CacheConfigError as exc:
        raise SaltCacheError(str(exc)) from None
    if len(_parsed) >= 64:  # a handful of distinct configs per process at most; stay bounded
        _parsed.clear()
    try:
        _parsed[values] = settings
    except TypeError:
        pass
    return settings


def check_names(bank, key=None, *, key_required=False, flush=False) -> None:
    """Refuse a bank or key name the replicated cache cannot hold, with a ``SaltCacheError``
    (``kv.machine.check_name``, with a key ``check_key``; ``flush``: ``check_flush``). Called
    once per driver call, at the edge."""
    try:
        if flush:
            check_flush(bank, key)
        elif key is not None or key_required:
            check_key(bank, key)
        else:
            check_name("bank", bank, allow_empty=True)
    except BadName as exc:
        raise SaltCacheError(f"raft cache: {exc}") from None


def _engine_call(opts: dict, what: str, request: dict, *, write: bool):
    settings = _settings(opts)
    client = _client(settings)
    if write:
        client.seq += 1
        request = dict(request, client=client.client_id, seq=client.seq)
    request["timeout"] = settings.timeout
    try:
        answer = client.call(request, settings.timeout)
    except RequestTooLarge as exc:
        raise SaltCacheError(
            f"raft cache: {what} refused: the request is {exc.size} bytes, more than the "
            f"{MAX_LINE} bytes the local raft engine reads in one request (and more than one "
            "log entry holds); nothing was sent"
        ) from None
    except EngineUnavailable as exc:
        raise SaltCacheError(
            f"raft cache: {what} failed: the local raft engine is not reachable at "
            f"{settings.socket} within {settings.timeout:g}s ({exc.strerror or exc}); is the "
            "'raft' engine configured and running on this master?"
        ) from None
    except OSError as exc:
        raise SaltCacheError(
            f"raft cache: {what} failed: no answer from the local raft engine within "
            f"{settings.timeout:g}s ({exc}); the write may or may not have been applied"
        ) from None
    if answer.get("ok"):
        return answer.get("result")
    err = answer.get("error") or {}
    code = str(err.get("code") or "error")
    cause = _CAUSES.get(code, "the raft engine reported an error")
    raise SaltCacheError(f"raft cache: {what} failed: {cause} ({err.get('message', '')})")


# --------------------------------------------------------------------------------------------
# the driver API (signatures as salt.cache.localfs, in 3007 and 3008)
# --------------------------------------------------------------------------------------------
def init_kwargs(opts: dict, kwargs: dict) -> dict:
    return {"cachedir": kwargs.get("cachedir") or opts.get("cachedir")}


def get_storage_id(opts: dict, kwargs: dict):
    return ("raft", _settings(opts).root)


def _value_request(op: str, bank: str, key: str, data) -> dict:
    try:
        value = salt.payload.dumps(data)
    except Exception as exc:  # pylint: disable=broad-except
        raise SaltCacheError(f"raft cache: cannot serialize {bank}/{key}: {exc}") from None
    return {"op": op, "bank": bank, "key": key, "value": base64.b64encode(value).decode("ascii")}


def store(opts: dict, bank: str, key: str, data) -> bool:
    check_names(bank, key, key_required=True)
    return store_checked(opts, bank, key, data)


def store_checked(opts: dict, bank: str, key: str, data) -> bool:
    request = _value_request("cache.store", bank, key, data)
    return _engine_call(opts, f"store {bank}/{key}", request, write=True)


def add(opts: dict, bank: str, key: str, data) -> bool:
    """Store ``data`` only if ``bank`` has no key ``key`` yet; True if it stored, False if the
    key was there (left as it is). Not part of Salt's cache API: the cluster decides, in one
    committed step, so a write another master commits meanwhile is never overwritten."""
    check_names(bank, key, key_required=True)
    request = _value_request("cache.add", bank, key, data)
    return bool(_engine_call(opts, f"add {bank}/{key}", request, write=True))


def union(opts: dict, bank: str, key: str, items) -> bool:
    """Merge the strings ``items`` into the list ``bank``/``key`` holds (created if absent;
    kept sorted, without duplicates) in one committed step: writes of several masters at once
    all count. Not part of Salt's cache API (the job cache's minion lists use it)."""
    check_names(bank, key, key_required=True)
    items = list(items)
    if not all(isinstance(i, str) for i in items):
        raise SaltCacheError(f"raft cache: union {bank}/{key}: every item must be a string")
    value = base64.b64encode(union_value(items)).decode("ascii")
    request = {"op": "cache.union", "bank": bank, "key": key, "value": value}
    return bool(_engine_call(opts, f"union {bank}/{key}", request, write=True))


def expire(opts: dict, bank: str, cutoff: int) -> int:
    """Remove, in one committed step, every sub-bank of ``bank`` first written before
    ``cutoff`` (seconds since the epoch, chosen here, by the caller: every master removes the
    same ones); returns how many. Not part of Salt's cache API (the job cache's retention)."""
    check_names(bank, flush=True)
    request = {
        "op": "cache.expire",
        "bank": bank,
        "key": None,
        "value": base64.b64encode(expire_value(int(cutoff))).decode("ascii"),
    }
    return int(_engine_call(opts, f"expire {bank}", request, write=True) or 0)


def flush(opts: dict, bank: str, key: str | None = None) -> bool:
    check_names(bank, key, flush=True)
    return flush_checked(opts, bank, key)


def flush_checked(opts: dict, bank: str, key: str | None = None) -> bool:
    request = {"op": "cache.flush", "bank": bank, "key": key}
    what = f"flush {bank}/{key}" if key is not None else f"flush bank {bank}"
    return bool(_engine_call(opts, what, request, write=True))


def read_barrier(opts: dict, what: str = "linearizable read") -> None:
    """Wait until this master's local copy reflects every write committed before the call
    (a ReadIndex through the local engine); raises SaltCacheError without a quorum."""
    _engine_call(opts, what, {"op": "cache.read"}, write=False)


#: Local copies found private to this process's user (a directory that is private stays so:
#: only its owner, this user, or root could change that).
_trusted_roots: set[str] = set()


def _before_read(opts: dict, settings, what: str) -> None:
    """Refuse to read a local copy someone else could have written (it decides, among other
    things, which minion keys are accepted): the engine refuses to start on it, and the
    workers must not serve it either. Then wait until the copy has caught up (see the module
    docstring)."""
    root = settings.root
    if root not in _trusted_roots:
        try:
            exists = check_private_dir(root, "the raft cache directory (raft_cache_dir)")
        except UnsafeDirectory as exc:
            raise SaltCacheError(f"raft cache: not reading the local copy: {exc}") from None
        if exists:
            _trusted_roots.add(root)
    if settings.linearizable_reads:
        read_barrier(opts)  # it waits for a current copy itself
        return
    wait_caught_up(settings, what)


class NotCaughtUp(SaltCacheError):
    """This master's local copy has not caught up with the cluster since its engine started."""


#: marker path -> [its stat signature, the pid it names, that process's start (None: not
#: recorded), monotonic time the start was last confirmed]; read again when the file changes.
_markers: dict[str, list] = {}
#: Seconds a worker trusts that the marker's pid still names the engine that wrote it before
#: it reads ``/proc/<pid>/stat`` again (a read costs about what a whole ``fetch`` does).
PID_RECHECK = 1.0


def marker_live(path: str) -> bool:
    """Whether the caught-up marker at ``path`` exists and names a running engine. It sits
    beside the local copy, whose parent may be shared (``/dev/shm``): only a regular file of
    this process's user that others cannot write counts (the engine writes it mode 0600).

    A marker an engine killed without its clean stop left behind names a pid the kernel may
    give a later process of the same user (a new request worker, after the pids wrapped):
    signal 0 alone would call the engine alive. The engine writes its start time and the boot
    id too, and the pid counts only while the process holding it started then (checked at
    most every :data:`PID_RECHECK` seconds; a marker without them, from an older build, is
    judged by its pid alone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return False
    sig = (st.st_ino, st.st_mtime_ns, st.st_size)
    known = _markers.get(path)
    if known is None or known[0] != sig:
        try:
            with open(path, "rb") as fh:
                body = json.loads(fh.read())
            pid, start = int(body["pid"]), body.get("start")
            if start is not None and (type(start) is not int or body.get("boot") != BOOT_ID):
                return False  # another boot's engine, or a body no engine writes
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        if len(_markers) >= 64:
            _markers.clear()
        known = _markers[path] = [sig, pid, start, float("-inf")]
    if not process_alive(known[1]):
        return False
    if known[2] is not None and _clock() - known[3] >= PID_RECHECK:
        if process_start(known[1]) != known[2]:
            return False  # the pid now names a later process
        known[3] = _clock()
    return True


def caught_up(opts: dict) -> bool:
    """Whether this master's local copy serves reads now (its caught-up marker is live), for
    callers that would rather skip a round than wait for it (the job cache's retention)."""
    return marker_live(_settings(opts).caught_up_path)


def wait_caught_up(settings, what: str) -> None:
    """Return once the engine's caught-up marker is live (see the module docstring); raise
    :class:`NotCaughtUp` after ``raft_cache_timeout`` seconds without it."""
    path = settings.caught_up_path
    if marker_live(path):
        return
    deadline = time.monotonic() + settings.timeout
    while True:
        if marker_live(path):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotCaughtUp(
                f"raft cache: {what} refused: this master's local copy has not caught up with "
                "the raft cluster since its engine started (it is catching up after a restart, "
                f"has no quorum yet, or the raft engine is not running; waited "
                f"{settings.timeout:g}s); retry in a moment, or on another master"
            )
        time.sleep(min(CAUGHT_UP_POLL, remaining))


_readers: dict[str, SqliteReader] = {}


def _sqlite(settings) -> SqliteReader:
    """The reader of ``settings.root``'s database (it keeps a connection per thread)."""
    reader = _readers.get(settings.root)
    if reader is None:
        reader = _readers.setdefault(settings.root, SqliteReader(settings.root))
    return reader


def _sqlite_call(what: str, fn, *args):
    try:
        return fn(*args)
    except sqlite3.Error as exc:
        raise SaltCacheError(f"raft cache: {what} failed reading the local copy: {exc}") from None


def fetch(opts: dict, bank: str, key: str):
    check_names(bank, key)
    return fetch_checked(opts, bank, key)


def fetch_checked(opts: dict, bank: str, key: str):
    settings = _settings(opts)
    _before_read(opts, settings, f"fetch {bank}/{key}")
    if settings.backend != "sqlite":
        return localfs_layout.read(settings.root, bank, key)
    value = _sqlite_call(f"fetch {bank}/{key}", _sqlite(settings).fetch, bank, key)
    if value is None:
        return {}  # what localfs returns for a missing key
    try:
        return salt.payload.loads(value)
    except Exception as exc:  # pylint: disable=broad-except
        raise SaltCacheError(f"raft cache: cannot read {bank}/{key}: {exc}") from None


def updated(opts: dict, bank: str, key: str):
    check_names(bank, key)
    return updated_checked(opts, bank, key)


def updated_checked(opts: dict, bank: str, key: str):
    settings = _settings(opts)
    _before_read(opts, settings, f"updated {bank}/{key}")
    if settings.backend == "sqlite":
        return _sqlite_call(f"updated {bank}/{key}", _sqlite(settings).updated, bank, key)
    path = localfs_layout.key_path(settings.root, bank, key)
    try:
        return int(os.path.getmtime(path))
    except FileNotFoundError:
        return None  # localfs logs a warning here; a missing key is normal for callers


def list_(opts: dict, bank: str):
    check_names(bank)
    return list_checked(opts, bank)


def list_checked(opts: dict, bank: str):
    settings = _settings(opts)
    _before_read(opts, settings, f"list {bank}")
    if settings.backend == "sqlite":
        return _sqlite_call(f"list {bank}", _sqlite(settings).list, bank)
    return _localfs.list_(bank, settings.root)


def contains(opts: dict, bank: str, key: str | None = None) -> bool:
    check_names(bank, key)
    return contains_checked(opts, bank, key)


def contains_checked(opts: dict, bank: str, key: str | None = None) -> bool:
    settings = _settings(opts)
    _before_read(opts, settings, f"contains {bank}")
    if settings.backend == "sqlite":
        return _sqlite_call(f"contains {bank}", _sqlite(settings).contains, bank, key)
    return _localfs.contains(bank, key, settings.root)
