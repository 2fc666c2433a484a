"""How long the event loop stalls: a timer that notices when it fires late.

Lives here: :class:`LoopLagMonitor` — re-arms a ``call_later`` every ``interval`` seconds and
records how late each firing was (the loop was busy: decrypting a flood of frames, applying a
large snapshot...). Must not live here: acting on the figures (status reports them; the flood
benchmark and test read them).

The lateness of one firing is a lower bound of the stall that delayed it, and is exact to
within ``interval`` for stalls longer than that. With the default 10 ms the monitor costs
100 callbacks a second.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """Start on a running loop, read :meth:`stats`, ``reset=True`` to start a new window."""

    def __init__(self, interval: float = 0.01, clock=time.monotonic):
        if not interval > 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._max = 0.0
        self._total = 0.0
        self._samples = 0
        self._over_50ms = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        self._due = self._clock() + self.interval
        self._handle = self._loop.call_later(self.interval, self._fired)

    def _fired(self) -> None:
        lag = max(0.0, self._clock() - self._due)
        self._samples += 1
        self._total += lag
        if lag > self._max:
            self._max = lag
        if lag > 0.05:
            self._over_50ms += 1
        self._arm()

    def stats(self, reset: bool = False) -> dict:
        """``max_ms``: the longest lateness seen (since start or the last reset)."""
        out = {
            "interval_ms": self.interval * 1000,
            "samples": self._samples,
            "max_ms": round(self._max * 1000, 3),
            "mean_ms": round(self._total / self._samples * 1000, 3) if self._samples else 0.0,
            "over_50ms": self._over_50ms,
        }
        if reset:
            self._max = self._total = 0.0
            self._samples = self._over_50ms = 0
        return out
