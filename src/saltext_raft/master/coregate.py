"""Salt 3008's own request gate, opened once ours opens (engine option ``core_gate``).

Lives here: :class:`CoreGate`, which finds Salt 3008's core request gate
(``salt.master.SMaster.secrets["cluster_ready"]``) in this process and sets it, once, when the
engine's own readiness first says "ready". Must not live here: the readiness decision
(``master/service.py``, ``evaluate_readiness``), our gate in the request workers
(``master/gate.py``), whether Salt's core consensus runs (``service.core_consensus_active``).

Why
---
Whenever ``cluster_id`` is set, Salt 3008 runs a Raft of its own in core and refuses every
request but ``_auth`` until that Raft commits a configuration entry naming this master a voter
(``salt/channel/server.py``, ``_cluster_is_ready``). Its leader appends no entry when it is
elected and it does not persist its commit index (SALT-NOTES, core defect 2), so after every
master of the cluster has restarted nothing ever commits there again: the event stays unset,
minions' job returns and file requests are refused for good, although saltext-raft's own
cluster has a leader and every member's gate is open. Seen on 3008.4 in
``tests/scenarios/test_nothing_shared.py``: no "now a committed voter" line on any of the three
masters after a full restart, and a job published afterwards never answered.

What it does, and why it is safe
--------------------------------
The event is a ``multiprocessing.Event`` created in the master's parent before it forks its
engines and request workers (``Master.start``: ``populate_secrets`` before ``start_engines``),
so the engine process holds the same event the workers check. When our readiness first opens,
the engine sets it and logs one line. Salt's gate never closes again once open (core defect 11)
whoever sets it; ours keeps applying in every worker after that (``master/gate.py``) and closes
when this master stops being a committed member with a live leader, so opening Salt's adds a
start-up hold of Salt's consensus and removes nothing of ours. ``core_gate: false`` leaves
Salt's gate to Salt's consensus alone; with ``gate: false`` (ours off) it is never touched.

Salt's readiness sentinel for Kubernetes probes (``cachedir/health/ready``) is written through
Salt's own ``salt.cluster.healthchecks.mark_cluster_ready`` at the same moment, so the probe and
the gate agree.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _salt_core_event():
    """Salt 3008's ``cluster_ready`` event in this process, or None (3007, or not clustered)."""
    try:
        import salt.master  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    entry = getattr(salt.master.SMaster, "secrets", {}).get("cluster_ready")
    if not isinstance(entry, dict):
        return None
    event = entry.get("event")
    return event if hasattr(event, "is_set") and hasattr(event, "set") else None


def _mark_salt_ready(opts: dict) -> None:
    try:
        import salt.cluster.healthchecks  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    salt.cluster.healthchecks.mark_cluster_ready(opts)


class CoreGate:
    """Open Salt's core request gate the first time ours opens (see the module docstring).

    ``find_event`` and ``mark_ready`` are the ports to Salt (tests give their own)."""

    def __init__(self, opts: dict, node_id: str, find_event=_salt_core_event, mark_ready=None):
        self._opts = opts
        self._node_id = node_id
        self._find_event = find_event
        self._mark_ready = mark_ready if mark_ready is not None else _mark_salt_ready
        #: What happened, for ``raft.status``: "", "opened", "already open", "absent".
        self.outcome = ""

    def on_ready(self) -> str:
        """Called each time our readiness is "ready"; acts once. Returns :attr:`outcome`."""
        if self.outcome:
            return self.outcome
        event = self._find_event()
        if event is None:
            self.outcome = "absent"
            log.info(
                "saltext-raft %s: Salt's core request gate (cluster_ready) is not in this "
                "process; nothing to open",
                self._node_id,
            )
            return self.outcome
        if event.is_set():
            self.outcome = "already open"
            return self.outcome
        event.set()
        self.outcome = "opened"
        log.warning(
            "saltext-raft %s: our gate is open; opening Salt's core request gate too, which "
            "Salt's core consensus has not opened (after a restart of every master it never "
            "does: core defect 2 in docs/security.md). Our gate keeps applying. Set the engine "
            "option core_gate: false to leave it to Salt.",
            self._node_id,
        )
        try:
            self._mark_ready(self._opts)
        except OSError as exc:
            log.warning(
                "saltext-raft %s: cannot write Salt's readiness sentinel: %s", self._node_id, exc
            )
        return self.outcome
