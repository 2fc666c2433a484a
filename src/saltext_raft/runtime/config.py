"""Runtime configuration: how long a tick is, how often to snapshot, client defaults.

Lives here: :class:`RuntimeConfig` with its defaults and ``validate()``; the default tick
(:data:`DEFAULT_TICK_SECONDS`) and :func:`default_core_config`; the rule for a client's
``timeout`` (:func:`client_timeout`). Re-exported for the runtime's
users: :data:`DEFAULT_ELECTION_TICKS`, :data:`DEFAULT_HEARTBEAT_TICKS` (their one home is
``core.config``). Must not live here: the core's own timing rules (``core.Config``), transport
options (``transport.TransportConfig``), parsing of Salt master opts (the engine does that; it
takes its defaults from here).

Why the timing defaults (docs/architecture.md, "The runtime", argues them in full):
a tick is 25 ms, a follower campaigns after 12-23 ticks (300-575 ms) of silence, and the
leader heartbeats every 2 ticks (50 ms). With two followers the first one to time out does so
after ~390 ms at the median and ~570 ms at p99, so failover lands near 0.4 s / 0.6 s; a live
leader has to go silent for six heartbeats in a row before anyone campaigns, which a loaded
event loop (fsync runs in a worker thread, never on the loop) does not do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saltext_raft.core import Config
from saltext_raft.core.config import DEFAULT_ELECTION_TICKS
from saltext_raft.core.config import DEFAULT_HEARTBEAT_TICKS
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.limits import DEFAULT_MAX_ENTRY_BYTES


class RuntimeConfigError(ValueError):
    """A runtime option is invalid; the message names it and says why."""


#: Length of one tick, seconds (``RuntimeConfig.tick_seconds``).
DEFAULT_TICK_SECONDS = 0.025

__all__ = [
    "DEFAULT_ELECTION_TICKS",
    "DEFAULT_HEARTBEAT_TICKS",
    "DEFAULT_TICK_SECONDS",
    "RuntimeConfig",
    "RuntimeConfigError",
    "client_timeout",
    "default_core_config",
]


def default_core_config(node_id: str, **overrides) -> Config:
    """The core's configuration for ``node_id``: its default timing (``core.config``, the one
    home of the election and heartbeat ticks) goes with the default tick length here."""
    return Config(node_id, **overrides)


@dataclass
class RuntimeConfig:
    #: Length of one core tick, in seconds.
    tick_seconds: float = DEFAULT_TICK_SECONDS
    #: Take a snapshot and compact the log every this many applied entries (0: never).
    snapshot_interval: int = 10_000
    #: Entries kept in the log behind a snapshot, so a slightly slow follower gets entries
    #: rather than the whole snapshot.
    snapshot_keep: int = 1_000
    #: Default timeout of propose/read/membership calls, in seconds.
    request_timeout: float = 5.0
    #: How often a node that is in no membership asks a peer to add it (JOIN), in seconds.
    join_interval: float = 0.5
    #: Proposals handed to the core per batch (bounds one Ready's size).
    max_batch: int = 4096
    #: Proposals of this node waiting for their answer (queued, replicating or being applied)
    #: beyond which a new one is refused at once with ``overloaded`` (backpressure) instead of
    #: joining a queue it could only leave by timing out. The default is two full batches: at
    #: the ~5,000 commits/s a busy 2-CPU machine still does, the last one in waits ~1.6 s,
    #: well within ``request_timeout``.
    max_pending_proposals: int = 8192
    #: A follower writes a small Ready (at most 8 entries) on the event loop thread instead of
    #: the storage thread, when no background storage work is queued: two thread hand-offs fewer
    #: on the commit path (~0.1-0.2 ms a put, docs/benchmarks.md). Its answers wait for that
    #: save anyway; what waits besides is the rest of the loop (in a Salt engine the cache
    #: socket and the readiness file) for one small ``fdatasync``. A save slower than
    #: ``runtime.driver.INLINE_SAVE_SLOW`` (a slow or stalling disk) sends the saves to the
    #: storage thread for ``INLINE_SAVE_PAUSE`` seconds. A leader always saves in the storage
    #: thread, so it keeps stepping acknowledgements and sending heartbeats.
    follower_inline_saves: bool = True
    #: Largest payload of one proposal, bytes; a larger one is refused when proposed. It sets
    #: the largest frame the transport accepts (``runtime.limits``), so it is also what an
    #: attacker can make a node decrypt per forged frame: keep it near the largest real write.
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES

    def validate(self) -> RuntimeConfig:
        def bad(name, why):
            raise RuntimeConfigError(f"runtime option {name}: {why}")

        for name in ("tick_seconds", "request_timeout", "join_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                bad(name, f"must be a positive number, got {value!r}")
        for name in ("snapshot_interval", "snapshot_keep"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                bad(name, f"must be a non-negative integer, got {value!r}")
        if not isinstance(self.follower_inline_saves, bool):
            bad(
                "follower_inline_saves",
                f"must be true or false, got {self.follower_inline_saves!r}",
            )
        if type(self.max_entry_bytes) is not int or not 1024 <= self.max_entry_bytes <= 256 << 20:
            bad(
                "max_entry_bytes",
                f"must be an integer in [1024, {256 << 20}], got {self.max_entry_bytes!r}",
            )
        for name in ("max_batch", "max_pending_proposals"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                bad(name, f"must be a positive integer, got {value!r}")
        return self


def client_timeout(timeout, default: float) -> float:
    """The seconds a client's proposal, read or membership operation may take: ``default`` for
    None, else a finite number (not a bool). A NaN (JSON and ``salt-run ... timeout=nan``
    carry it) or an infinite timeout gave a wait that no deadline ended: a membership change
    without quorum stayed pending for ever, and the engine's control answered at once while it
    did. Raises :class:`~saltext_raft.runtime.errors.Rejected` (nothing was started)."""
    if timeout is None:
        return default
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
    ):
        raise Rejected(f"timeout must be a finite number of seconds (got {timeout!r})")
    return float(timeout)


def seconds_argument(value, what: str = "timeout") -> float:
    """A number of seconds above 0 given by an operator (a runner's ``timeout``, a state's
    ``wait``): ``salt-run`` hands over ``30`` as a number and ``None``/``null``/``~`` as None,
    salt-api and ``salt.client`` the text as typed ("30", "None"). None is no default here
    (each function has its own, given by leaving the argument out), and 0 is none either: the
    engine took it for its own default (10 s) while a runner waited 3 s. Then
    :func:`client_timeout`'s rule (finite, not a bool). Raises
    :class:`~saltext_raft.runtime.errors.Rejected`."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    try:
        seconds = None if number is None else client_timeout(number, None)
    except Rejected:
        seconds = None
    if seconds is None or seconds <= 0:
        raise Rejected(
            f"{what} must be a number of seconds above 0 (got {value!r}); leave it out for "
            "the default"
        )
    return seconds
