"""Bounded polling for synchronous callers: the demo, the process-cluster helpers, the tests.

``wait_until`` polls a predicate until it returns something truthy or the time is up, and then
says what was awaited and what the predicate last returned (or raised). It is the one place
that loop lives; asyncio code has its own waits (``RaftRuntime.wait_for``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(TimeoutError):
    """The awaited condition did not hold in time; the message says which and what was seen."""


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.1,
    describe: Callable[[], object] | None = None,
):
    """Return the first truthy value of ``predicate()`` within ``timeout`` seconds.

    An exception from the predicate counts as "not yet" (it is shown if time runs out).
    ``describe()``, if given, adds the state worth seeing to the timeout message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
        except Exception as exc:  # not yet; keep it for the message
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            extra = f"; {describe()}" if describe is not None else ""
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r}){extra}"
            )
        time.sleep(interval)
