"""Health of the local master's raft node, read from its readiness file.

Lives here: what the ``raft`` execution module returns (``status``, ``is_leader``,
``is_ready``) and how it finds the master's opts. Must not live here: the decision whether
the master is ready (the engine writes it; see ``master/readiness.py``).
"""

from __future__ import annotations

import os

from saltext_raft.master import settings as engine_settings
from saltext_raft.master.readiness import ReadinessReader


def master_opts(master_config: str, minion_opts: dict | None = None) -> dict:
    """The master's opts: from ``master_config`` if it exists, else the given opts (e.g. in
    tests or when the caller already runs with master opts)."""
    if master_config and os.path.isfile(master_config):
        import salt.config  # pylint: disable=import-outside-toplevel

        return salt.config.master_config(master_config)
    return dict(minion_opts or {})


def status(opts: dict) -> dict:
    found = engine_settings.read(opts)
    if not found.configured:
        return {
            "ready": False,
            "configured": False,
            "reason": "the raft engine is not configured on this master",
        }
    reader = ReadinessReader(found.readiness_path, stale_after=found.stale_after, cache_for=0.0)
    ready = reader.check()
    state = reader.state
    fresh = not reader.reason.startswith(("the raft engine is not running", "the raft engine has"))
    out = dict(state, configured=True, fresh=fresh, ready=ready, reason=reader.reason)
    out["is_leader"] = bool(fresh and state.get("role") == "leader")
    out.pop("pid", None)
    return out


def is_ready(opts: dict) -> bool:
    return bool(status(opts).get("ready"))


def is_leader(opts: dict) -> bool:
    return bool(status(opts).get("is_leader"))
