"""The ``raft_roots*`` master options, and which directory each replicated environment is.

Lives here: :class:`RootsSettings`, :func:`from_opts` (master opts -> validated settings, a
:class:`RootsConfigError` naming the option otherwise) and :func:`targets` (the directory of
each environment of a kind on this master). Must not live here: reading or writing trees, Salt.

Options (top-level master options, read by the engine and by ``salt-run raft.sync_roots``):

- ``raft_roots`` (False): replicate the roots. ``true`` for both kinds, or a list naming some
  of ``file_roots`` and ``pillar_roots``. Set it on every master; it turns the engine's
  replicated cache on (``replicated.config.cache_enabled``).
- ``raft_roots_max_file_bytes`` (16777216): largest file a sync sends and a master writes;
  at most 67108864 (``layout.MAX_FILE_BYTES_LIMIT``).
- ``raft_roots_scan_interval`` (0): seconds between two scans of this master's roots by its
  engine, each one a ``raft.sync_roots``; 0 (the default) means no periodic scan. Set it on
  the one master whose tree is the source, never on two.

Which directory: the first directory Salt lists for an environment (``file_roots: {base:
[/srv/salt, /srv/extra]}`` replicates ``/srv/salt``). The other directories of an environment
stay local to each master. Why the first: it is the one Salt looks in first, so what is
replicated wins over anything local, and a receiving master writes into a tree it owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from saltext_raft.optionerror import OptionError
from saltext_raft.replicated.config import ROOTS_OPTION
from saltext_raft.roots import layout

#: Directory under ``cachedir`` of this master's record of what it applied.
STATE_DIR_NAME = "saltext_raft_roots"
#: Longest ``raft_roots_scan_interval`` (a day).
MAX_SCAN_INTERVAL = 86400.0
#: Shortest nonzero ``raft_roots_scan_interval``: a scan hashes the whole tree.
MIN_SCAN_INTERVAL = 5.0


class RootsConfigError(OptionError):
    """A replicated roots option is invalid (:class:`~saltext_raft.optionerror.OptionError`)."""

    subject = "raft roots"


@dataclass(frozen=True)
class RootsSettings:
    kinds: tuple = ()
    max_file_bytes: int = layout.DEFAULT_MAX_FILE_BYTES
    scan_interval: float = 0.0
    state_dir: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)

    @property
    def state_path(self) -> str:
        """This master's record of the last manifest it applied (paths, hashes, stats)."""
        return os.path.join(self.state_dir, "applied.json")


def from_opts(opts: dict) -> RootsSettings:
    value = opts.get(ROOTS_OPTION, False)
    if value is True:
        kinds = layout.KINDS
    elif value in (False, None):
        kinds = ()
    elif isinstance(value, (list, tuple)) and all(k in layout.KINDS for k in value):
        kinds = tuple(k for k in layout.KINDS if k in value)
    else:
        raise RootsConfigError(
            ROOTS_OPTION,
            f"must be true, false or a list of {', '.join(layout.KINDS)} (got {value!r})",
        )
    size = opts.get("raft_roots_max_file_bytes", layout.DEFAULT_MAX_FILE_BYTES)
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not 1 <= size <= layout.MAX_FILE_BYTES_LIMIT
    ):
        raise RootsConfigError(
            "raft_roots_max_file_bytes",
            f"must be a number of bytes from 1 to {layout.MAX_FILE_BYTES_LIMIT} (got {size!r})",
        )
    interval = opts.get("raft_roots_scan_interval", 0)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not (interval == 0 or MIN_SCAN_INTERVAL <= interval <= MAX_SCAN_INTERVAL)
    ):
        raise RootsConfigError(
            "raft_roots_scan_interval",
            f"must be 0 (off) or seconds from {MIN_SCAN_INTERVAL:g} to {MAX_SCAN_INTERVAL:g} "
            f"(got {interval!r})",
        )
    return RootsSettings(
        kinds=kinds,
        max_file_bytes=size,
        scan_interval=float(interval),
        state_dir=os.path.join(opts.get("cachedir") or "", STATE_DIR_NAME),
    )


def targets(opts: dict, kind: str) -> dict:
    """``{env: directory}`` of ``kind`` on this master: the first directory of each
    environment (see the module docstring). Environments without a directory are left out."""
    roots = opts.get(kind) or {}
    if not isinstance(roots, dict):
        raise RootsConfigError(kind, f"must map environments to directories (got {roots!r})")
    out = {}
    for env, dirs in roots.items():
        if isinstance(dirs, str):
            dirs = [dirs]
        if not isinstance(dirs, (list, tuple)):
            raise RootsConfigError(kind, f"environment {env!r}: not a list of directories")
        first = next((d for d in dirs if isinstance(d, str) and d), None)
        if first is None:
            continue
        try:
            layout.check_env(env)
        except layout.BadRootPath as exc:
            raise RootsConfigError(kind, str(exc)) from None
        out[env] = first
    return out
