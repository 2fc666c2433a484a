"""The readiness file: how the engine tells the master's request workers "serve minions now".

Lives here: :class:`ReadinessWriter` (used by the engine: writes the file atomically when the
state changes, refreshes its mtime while alive) and :class:`ReadinessReader` (used by the gate in
every worker: a cached ``stat()``, re-reading the small JSON body only when it changed). Must
not live here: the decision *whether* this master is ready (the engine makes it).

Why a file: the workers are forked from the master parent before the engine has decided
anything, and must learn about changes in both directions (open, then closed again). A file
whose mtime the engine keeps fresh fails closed on its own: if the engine dies, the file goes
stale and the gate closes; when the restarted engine writes it again, the gate reopens.

Path: ``<cachedir>/saltext_raft/ready`` (not Salt 3008's ``.cluster_joined.*`` or ``health/``).
Body: JSON ``{"ready": bool, "reason": str, "node_id", "role", "leader", "term", "pid", ...}``.
"""

from __future__ import annotations

import json
import os
import time

from saltext_raft.integration.fileutil import atomic_write

#: Seconds a worker trusts its last look at the file before it stats it again.
DEFAULT_CACHE_FOR = 0.25


def stale_after(interval: float) -> float:
    """Seconds without a refresh after which a readiness file written every ``interval``
    seconds is stale: its engine is gone and the gate closes. Three missed refreshes plus one
    second of slack. The one home of this rule (the gate, ``raft.is_ready`` and the engine's
    config all ask here)."""
    return 3 * interval + 1.0


def _atomic_write(path: str, data: bytes) -> None:
    """Replace the readiness file atomically (world-readable: workers of any user read it)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, data, prefix=".ready-", mode=0o644)


class ReadinessWriter:
    """The engine's side. ``publish(state)`` on every change; ``heartbeat()`` from a timer."""

    def __init__(self, path: str, interval: float = 1.0, clock=time.monotonic):
        self.path = path
        self.interval = interval
        self._clock = clock
        self._body: bytes | None = None
        self._last_write = float("-inf")

    def publish(self, state: dict) -> bool:
        """Write ``state`` if it differs from what is on disk; True if written."""
        body = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        if body == self._body and os.path.exists(self.path):
            return False
        _atomic_write(self.path, body)
        self._body = body
        self._last_write = self._clock()
        return True

    def heartbeat(self) -> None:
        """Refresh the mtime so workers know the engine is alive (cheap: one utime)."""
        now = self._clock()
        if now - self._last_write < self.interval / 2:
            return
        if self._body is None:
            return
        try:
            os.utime(self.path)
        except FileNotFoundError:
            _atomic_write(self.path, self._body)
        self._last_write = now

    def close(self, reason: str = "engine stopped") -> None:
        """Mark not ready (on a clean stop: do not wait for the file to go stale)."""
        try:
            self.publish({"ready": False, "reason": reason, "pid": os.getpid()})
        except OSError:
            pass


class ReadinessReader:
    """A worker's side. ``is_open()`` is the hot path: a clock read and a compare while cached."""

    __slots__ = (
        "path",
        "stale_after",
        "cache_for",
        "_clock",
        "_wall",
        "_until",
        "_open",
        "_sig",
        "_state",
        "reason",
    )

    def __init__(
        self,
        path: str,
        stale_after: float = stale_after(1.0),
        cache_for: float = DEFAULT_CACHE_FOR,
        clock=time.monotonic,
        wall=time.time,
    ):
        self.path = path
        self.stale_after = stale_after
        self.cache_for = cache_for
        self._clock = clock
        self._wall = wall
        self._until = float("-inf")
        self._open = False
        self._sig = None
        self._state: dict = {}
        self.reason = "not checked yet"

    def is_open(self) -> bool:
        if self._clock() < self._until:
            return self._open
        return self.check()

    def check(self) -> bool:
        """Look at the file now (bypassing the cache)."""
        self._until = self._clock() + self.cache_for
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._set(False, "the raft engine has not written its readiness file yet")
            return False
        except OSError as exc:
            self._set(False, f"cannot stat the readiness file: {exc}")
            return False
        age = self._wall() - st.st_mtime
        if age > self.stale_after:
            self._set(
                False,
                f"the raft engine is not running (readiness file not refreshed for {age:.0f}s)",
            )
            return False
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig != self._sig:
            try:
                with open(self.path, "rb") as fh:
                    self._state = json.loads(fh.read() or b"{}")
            except (OSError, ValueError):
                self._set(False, "the readiness file is unreadable")
                return False
            self._sig = sig
        ready = bool(self._state.get("ready"))
        self._set(ready, "ready" if ready else str(self._state.get("reason") or "not ready"))
        return ready

    @property
    def state(self) -> dict:
        return dict(self._state)

    def _set(self, value: bool, reason: str) -> None:
        self._open = value
        self.reason = reason
