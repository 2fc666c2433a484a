"""Fixtures of the ``raft`` runner tests.

Lives here: ``sent``, the engine's control client replaced by a recorder. Must not live here:
what a test asserts about the runner.
"""

from __future__ import annotations

import pytest

from saltext_raft.runners import raft as runner


@pytest.fixture
def sent(monkeypatch):
    """The runner's requests to the engine, as ``(op, args, timeout)``, each answered ``{}``."""
    calls = []

    class Client:
        def __init__(self, opts):
            pass

        def call(self, op, args, timeout):
            calls.append((op, args, timeout))
            return {}

    monkeypatch.setattr(runner._control, "ControlClient", Client)
    monkeypatch.setattr(runner, "__opts__", {}, raising=False)
    return calls
