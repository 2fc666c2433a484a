"""What a CI run requires of the tests.

Lives here: :func:`in_ci` (the one test of "is this a CI run": ``CI`` set and not empty, as
CI services and ``.ci/run`` set it) and :func:`skip_or_fail`, for a prerequisite a developer's
machine may lack but CI must have: locally the test skips and says what to install; in CI it
fails, so that a missing package cannot turn a contract test into a silent skip. Must not live
here: the prerequisites themselves (each test names its own).
"""

from __future__ import annotations

import os

import pytest


def in_ci(env=os.environ) -> bool:
    return bool(env.get("CI"))


def skip_or_fail(reason: str, env=os.environ):
    """Skip the test (outside CI) or fail it (in CI), saying ``reason``. Never returns."""
    if in_ci(env):
        pytest.fail(f"{reason}; CI must provide it (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)
