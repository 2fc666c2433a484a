"""Settings of the replicated Salt cache, shared by the engine and the ``raft`` cache driver.

Lives here: :class:`CacheSettings` and :func:`from_opts` (master opts -> validated settings),
:func:`cache_enabled` (does the engine host the cache?) and :func:`storage_opts` (the opts the
engine's own Raft storage must use). Must not live here: sockets, threads, files.

Both sides read the same master config file, so every setting is a top-level master option
(Salt cache drivers read their options from the master opts, as ``redis.*`` does), except
``cache`` which is also an engine option:

- ``cache: raft`` (Salt's own option): use this driver; set it on every master.
- ``keys.cache_driver: raft`` (Salt 3008's option): minion keys replicated by this driver
  (``saltext_raft.replicated.keystore``); set it on every master.
- ``master_job_cache: raft`` (Salt's option): the job cache replicated in the same cache
  (``saltext_raft.jobs``); set it on every master.
- ``raft_roots`` (saltext_raft.roots): replicated ``file_roots``/``pillar_roots``, kept in the
  same cache.
- engine option ``cache``: the engine hosts the replicated cache. Default: on when ``cache``
  (or 3008's ``keys.cache_driver``, or ``master_job_cache``) is ``raft``, or ``raft_roots`` is
  set.
- ``raft_cache_timeout`` (5): seconds a write waits for commit before it fails.
- ``raft_cache_linearizable_reads`` (False): reads first take a ReadIndex barrier.
- ``raft_cache_backend`` (sqlite): the layout of the local copy: ``sqlite`` (one SQLite
  database, far cheaper per write) or ``localfs`` (Salt's files, one per key; the default
  before 0.1.0, kept by setting it).
- ``raft_cache_batch_wait`` (0.002): longest time, in seconds, a batch of writes waits for
  workers answered a moment ago to send their next write (0: never wait).
- ``raft_cache_relay`` (True): a follower sends its batch of writes to the leader's cache
  service, to join the leader's next entry (``replicated.relay``), instead of proposing an
  entry of its own.
- ``raft_keys_rotate_window`` (1): with ``keys.cache_driver: raft``, seconds during which key
  revocations applied on this master are gathered into one AES key rotation
  (``master/revocation.py``).
- ``raft_cache_dir`` (``<cachedir>/saltext_raft_cache``): directory of the local copy.
- ``raft_cache_socket`` (``<sock_dir>/raft_cache.sock``): the engine's unix socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from saltext_raft.optionerror import OptionError

DRIVER_NAME = "raft"
#: Salt 3008's option naming the driver of the minion key store (absent on 3007).
KEYS_DRIVER_OPTION = "keys.cache_driver"
#: Salt's option naming the job cache's returner; ``raft`` is ours (``saltext_raft.jobs``).
JOB_CACHE_OPTION = "master_job_cache"
#: The replicated roots' switch (``saltext_raft.roots``), which keep their trees in this cache.
ROOTS_OPTION = "raft_roots"
SOCKET_NAME = "raft_cache.sock"
#: The bank of Salt's cluster secrets (engine option ``cluster_secrets``,
#: ``master/clustersecrets.py``): written by the engine only, reserved for every driver call.
CLUSTER_SECRETS_BANK = "saltext_raft_cluster"
#: Not under ``cachedir/saltext_raft/``: the engine's Raft log lives in banks
#: ``saltext_raft/<cluster id>/...`` there, and a cluster could be called anything.
DIR_NAME = "saltext_raft_cache"
BACKENDS = ("localfs", "sqlite")
#: The layout of the local copy when ``raft_cache_backend`` is not set: ``sqlite`` since 0.1.0
#: (docs/benchmarks.md, "Issue 21, fifth pass": 0.236 against 0.629 ms of CPU per store). A
#: master whose copy is still in the ``localfs`` layout rebuilds it in this one at its next
#: start, from the Raft state (``replicated/sqlite.py``, ``SqliteMirror._report_foreign``).
DEFAULT_BACKEND = "sqlite"
DEFAULT_TIMEOUT = 5.0
DEFAULT_BATCH_WAIT = 0.002
#: A batch that waits longer than this costs its writers more than it saves.
MAX_BATCH_WAIT = 0.1
#: Beside the local copy (``<raft_cache_dir>`` + this): present while the copy has caught up
#: with the cluster since the engine started (docs/cache.md, "Consistency").
CAUGHT_UP_SUFFIX = ".caught-up"
#: Beside the local copy (``<raft_cache_dir>`` + this): the ``localfs`` layout's temp files,
#: out of the tree so that a listing never sees them (:func:`tmp_dir`).
TMP_SUFFIX = ".tmp"
DEFAULT_ROTATE_WINDOW = 1.0
#: A longer window leaves a revoked minion its publishes for longer than it saves.
MAX_ROTATE_WINDOW = 60.0


def tmp_dir(root: str) -> str:
    """The ``localfs`` layout's temp directory beside the local copy ``root``."""
    return root.rstrip(os.sep) + TMP_SUFFIX


class CacheConfigError(OptionError):
    """A cache driver option is invalid (:class:`~saltext_raft.optionerror.OptionError`)."""

    subject = "raft cache"


@dataclass(frozen=True)
class CacheSettings:
    socket: str
    root: str
    backend: str = DEFAULT_BACKEND
    timeout: float = DEFAULT_TIMEOUT
    linearizable_reads: bool = False
    batch_wait: float = DEFAULT_BATCH_WAIT
    relay: bool = True
    rotate_window: float = DEFAULT_ROTATE_WINDOW

    @property
    def caught_up_path(self) -> str:
        """The marker the engine writes once the local copy has applied the read index a
        leader confirmed after the engine's start, and removes when the engine starts or
        stops: reads are served only while it exists."""
        return self.root.rstrip(os.sep) + CAUGHT_UP_SUFFIX


def from_opts(opts: dict) -> CacheSettings:
    cachedir = opts.get("cachedir") or ""
    sock_dir = opts.get("sock_dir") or ""
    timeout = opts.get("raft_cache_timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise CacheConfigError("raft_cache_timeout", f"must be a positive number (got {timeout!r})")
    lin = opts.get("raft_cache_linearizable_reads", False)
    if not isinstance(lin, bool):
        raise CacheConfigError(
            "raft_cache_linearizable_reads", f"must be true or false (got {lin!r})"
        )
    backend = opts.get("raft_cache_backend") or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise CacheConfigError(
            "raft_cache_backend",
            f"{backend!r} is not a layout of the local copy; choose one of {', '.join(BACKENDS)}",
        )
    wait = opts.get("raft_cache_batch_wait", DEFAULT_BATCH_WAIT)
    if (
        isinstance(wait, bool)
        or not isinstance(wait, (int, float))
        or not 0 <= wait <= MAX_BATCH_WAIT
    ):
        raise CacheConfigError(
            "raft_cache_batch_wait",
            f"must be a number of seconds from 0 to {MAX_BATCH_WAIT:g} (got {wait!r})",
        )
    relay = opts.get("raft_cache_relay", True)
    if not isinstance(relay, bool):
        raise CacheConfigError("raft_cache_relay", f"must be true or false (got {relay!r})")
    window = opts.get("raft_keys_rotate_window", DEFAULT_ROTATE_WINDOW)
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not 0 <= window <= MAX_ROTATE_WINDOW
    ):
        raise CacheConfigError(
            "raft_keys_rotate_window",
            f"must be a number of seconds from 0 to {MAX_ROTATE_WINDOW:g} (got {window!r})",
        )
    root = opts.get("raft_cache_dir") or os.path.join(cachedir, DIR_NAME)
    socket = opts.get("raft_cache_socket") or os.path.join(sock_dir, SOCKET_NAME)
    return CacheSettings(
        socket=socket,
        root=root,
        backend=backend,
        timeout=float(timeout),
        linearizable_reads=lin,
        batch_wait=float(wait),
        relay=relay,
        rotate_window=float(window),
    )


def cache_enabled(opts: dict, engine_option=None) -> bool:
    """The engine hosts the cache: engine option ``cache`` if set, else whether the master uses
    the ``raft`` driver (``cache: raft``, or ``keys.cache_driver: raft`` on 3008) or the
    ``raft`` job cache (``master_job_cache: raft``, which keeps its jobs in the same cache), or
    the replicated roots (``raft_roots``, likewise)."""
    if engine_option is not None:
        return bool(engine_option)
    return (
        opts.get("cache") == DRIVER_NAME
        or keys_driver_enabled(opts)
        or opts.get(JOB_CACHE_OPTION) == DRIVER_NAME
        or bool(opts.get(ROOTS_OPTION))
    )


def keys_driver_enabled(opts: dict) -> bool:
    """Salt 3008 keeps minion keys behind this driver (``keys.cache_driver: raft``)."""
    return opts.get(KEYS_DRIVER_OPTION) == DRIVER_NAME


def storage_opts(opts: dict) -> dict:
    """Opts for the engine's own Raft storage: never the ``raft`` driver (the log cannot be
    stored through the log), so ``cache: raft`` becomes ``localfs`` there."""
    if opts.get("cache") == DRIVER_NAME:
        opts = dict(opts, cache="localfs")
    return opts
