"""The simulated network: latency, loss, duplication, reordering, long delays, partitions.

Lives here: ``Network``, which decides when (and whether) each message arrives, and the
partition state. It owns no clock and no event queue: ``route`` returns the delivery times and
the simulator schedules them. Every random choice comes from the RNG passed in, so a seed
replays exactly.

Time is in sim units; one tick is ``TICK`` units. Without faults, links are FIFO with a small
latency. A partition is a set of blocked directed links, checked both when a message is sent
and when it would arrive (a partition cuts messages already in flight).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TICK = 100  # sim time units per tick


@dataclass
class NetFaults:
    """Per-seed network fault intensities (0 = off)."""

    loss: float = 0.0  # probability a message is dropped
    dup: float = 0.0  # probability a message is delivered twice
    reorder: float = 0.0  # probability a message ignores link FIFO order (random latency)
    delay: float = 0.0  # probability a message is held for up to a few election timeouts
    delay_max: int = 20 * TICK

    def any(self) -> bool:
        return bool(self.loss or self.dup or self.reorder or self.delay)


class Network:
    def __init__(self, rng: random.Random, faults: NetFaults | None = None):
        self.rng = rng
        self.faults = faults or NetFaults()
        self.blocked: set[tuple[str, str]] = set()
        self._link_time: dict[tuple[str, str], int] = {}
        self.stats = {"sent": 0, "lost": 0, "dup": 0, "reordered": 0, "delayed": 0, "cut": 0}

    # --- partitions -----------------------------------------------------------------------------
    def partition(self, side_a, side_b) -> None:
        """Cut every link between the two sides, both ways."""
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def cut_one_way(self, frm: str, to: str) -> None:
        self.blocked.add((frm, to))

    def heal(self) -> None:
        self.blocked.clear()

    def is_blocked(self, frm: str, to: str) -> bool:
        return (frm, to) in self.blocked

    # --- delivery -------------------------------------------------------------------------------
    def route(self, frm: str, to: str, now: int) -> list[int]:
        """Delivery times for one message sent now (empty: dropped)."""
        st = self.stats
        st["sent"] += 1
        if (frm, to) in self.blocked:
            st["cut"] += 1
            return []
        f = self.faults
        rng = self.rng
        if f.loss and rng.random() < f.loss:
            st["lost"] += 1
            return []
        link = (frm, to)
        latency = rng.randint(1, TICK // 4)
        if f.delay and rng.random() < f.delay:
            st["delayed"] += 1
            at = now + rng.randint(TICK, f.delay_max)
        elif f.reorder and rng.random() < f.reorder:
            st["reordered"] += 1
            at = now + rng.randint(1, 3 * TICK)
        else:
            at = max(now + latency, self._link_time.get(link, 0))
            self._link_time[link] = at
        times = [at]
        if f.dup and rng.random() < f.dup:
            st["dup"] += 1
            times.append(at + rng.randint(0, 2 * TICK))
        return times
