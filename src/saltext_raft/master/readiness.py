"""The readiness file: how the engine tells the master's request workers "serve minions now".

Lives here: :class:`ReadinessWriter` (used by the engine: writes the file atomically when the
state changes, refreshes its mtime while alive) and :class:`ReadinessReader` (used by the gate in
every worker: a cached ``stat()``, re-reading the small JSON body only when it changed). Must
not live here: the decision *whether* this master is ready (the engine makes it).

Why a file: the workers are forked from the master parent before the engine has decided
anything, and must learn about changes in both directions (open, then closed again).

Failing closed: "ready" is believed only while the engine proves it is alive. Every write
carries a heartbeat stamp from ``CLOCK_MONOTONIC`` (system-wide on Linux, so the workers read
the same clock) and the kernel's boot id, and the engine rewrites the file every half
``readiness_interval``. A worker treats the file as ready only if its heartbeat is from this
boot and younger than ``stale_after`` on its own monotonic clock, and the engine process it
names is alive. Neither the file's mtime nor the wall clock takes part: stepping the wall
clock back (or forward) cannot keep a dead engine's gate open. A file not owned by the
master's user is ignored (closed).

Path: ``<cachedir>/saltext_raft/ready`` (not Salt 3008's ``.cluster_joined.*`` or ``health/``).
Body: JSON ``{"ready": bool, "reason": str, "node_id", "role", "leader", "term", "pid",
"heartbeat": monotonic seconds, "boot": boot id, ...}``.
"""

from __future__ import annotations

import json
import os
import time

from saltext_raft.master.fileutil import atomic_write

#: Seconds a worker trusts its last look at the file before it stats it again.
DEFAULT_CACHE_FOR = 0.25
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """This boot's id: a monotonic stamp means nothing after a reboot."""
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


BOOT_ID = boot_id()


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


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``, field
    22), or None (gone, or no ``/proc``). With the boot id it tells the process that wrote a
    pid into a file from a later one the kernel gave the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:  # the command (field 2) may hold spaces and ")": count from its last ")"
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def process_alive(pid) -> bool:
    """Whether process ``pid`` exists and belongs to this user (signal 0 checks both)."""
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:  # ProcessLookupError: gone; PermissionError: the pid now is someone else's
        return False
    return True


class ReadinessWriter:
    """The engine's side. ``publish(state)`` on every change; ``heartbeat()`` from a timer."""

    def __init__(self, path: str, interval: float = 1.0, clock=time.monotonic):
        self.path = path
        self.interval = interval
        self._clock = clock
        self._state: dict | None = None
        self._last_write = float("-inf")

    def _write(self, state: dict) -> None:
        now = self._clock()
        body = {"pid": os.getpid(), **state, "heartbeat": round(now, 3), "boot": BOOT_ID}
        _atomic_write(self.path, json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        self._state = dict(state)
        self._last_write = now

    def publish(self, state: dict) -> bool:
        """Write ``state`` if it differs from what is on disk; True if written."""
        if state == self._state and os.path.exists(self.path):
            return False
        self._write(state)
        return True

    def heartbeat(self) -> None:
        """Rewrite the file with a new heartbeat stamp every half interval (a small atomic
        write, twice a second by default)."""
        if self._state is None or self._clock() - self._last_write < self.interval / 2:
            return
        self._write(self._state)

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
        "_alive",
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
        alive=process_alive,
    ):
        self.path = path
        self.stale_after = stale_after
        self.cache_for = cache_for
        self._clock = clock
        self._alive = alive
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
        now = self._clock()
        self._until = now + self.cache_for
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._set(False, "the raft engine has not written its readiness file yet")
            return False
        except OSError as exc:
            self._set(False, f"cannot stat the readiness file: {exc}")
            return False
        if st.st_uid != os.geteuid():
            self._set(
                False,
                f"the readiness file {self.path} is owned by uid {st.st_uid}, not by the "
                "master's user: ignored",
            )
            return False
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig != self._sig:
            try:
                with open(self.path, "rb") as fh:
                    state = json.loads(fh.read() or b"{}")
            except (OSError, ValueError):
                self._set(False, "the readiness file is unreadable")
                return False
            self._state = state if isinstance(state, dict) else {}
            self._sig = sig
        state = self._state
        if not state.get("ready"):
            self._set(False, str(state.get("reason") or "not ready"))
            return False
        problem = self._not_alive(state, now)
        if problem:
            self._set(False, f"the raft engine is not running ({problem})")
            return False
        self._set(True, "ready")
        return True

    def _not_alive(self, state: dict, now: float) -> str:
        """Why a file that says "ready" is not to be believed, or ""."""
        beat = state.get("heartbeat")
        if isinstance(beat, bool) or not isinstance(beat, (int, float)):
            return "the readiness file has no heartbeat"
        if state.get("boot") != BOOT_ID:
            return "the readiness file is from before the last reboot"
        age = now - beat
        if not -1.0 <= age <= self.stale_after:
            return f"no heartbeat for {age:.0f}s"
        if not self._alive(state.get("pid")):
            return f"process {state.get('pid')} is gone"
        return ""

    @property
    def state(self) -> dict:
        return dict(self._state)

    def _set(self, value: bool, reason: str) -> None:
        self._open = value
        self.reason = reason
