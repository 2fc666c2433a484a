"""Preconditions of tests that share state with earlier tests (one real-master cluster per
module, tests in file order).

Lives here: :func:`require`: a test that needs what an earlier test left behind (a master
stopped, a key accepted, a backup written) first builds it where it can (each module's own
``ensure_*`` helpers and fixtures) and, for what it cannot build from the state it finds, fails
saying which precondition and which test provides it, instead of a KeyError or, worse,
testing another situation than the one it names. Must not live here: the states themselves
and the code that builds them (in the modules that need them).
"""

from __future__ import annotations

import pytest


def require(ok, what: str, provided_by: str = "") -> None:
    """Fail the test unless ``ok``: ``what`` is the missing precondition; ``provided_by`` the
    test that normally establishes it (run the module, or that test first)."""
    if not ok:
        hint = (
            f" (established by {provided_by}: run it first, or the whole module)"
            if provided_by
            else ""
        )
        pytest.fail(f"precondition not met: {what}{hint}", pytrace=False)
