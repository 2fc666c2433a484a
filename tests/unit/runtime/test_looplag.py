"""The loop-lag monitor sees a stall of the event loop and forgets it on reset."""

from __future__ import annotations

import asyncio
import time

from saltext_raft.runtime.looplag import LoopLagMonitor


def test_a_blocked_loop_shows_as_a_late_timer_and_reset_starts_a_new_window():
    async def main():
        mon = LoopLagMonitor(interval=0.005)
        mon.start()
        try:
            await asyncio.sleep(0.02)
            time.sleep(0.1)  # block the loop: the armed timer fires at least ~95 ms late
            await asyncio.sleep(0.02)
            st = mon.stats(reset=True)
            assert st["max_ms"] >= 90 and st["over_50ms"] >= 1 and st["samples"] >= 2, st
            after = mon.stats()
            assert after["samples"] == 0 and after["max_ms"] == 0
        finally:
            mon.stop()

    asyncio.run(main())
