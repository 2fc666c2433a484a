"""The roots store inside the ``raft`` engine: applies each committed manifest to this master's
trees, rechecks them, and on a source master scans its trees periodically.

Lives here: :class:`RootsService` (a worker thread fed by the cache service's change reports).
Must not live here: what a pass does (:mod:`.apply`), what a sync does (:mod:`.sync`), when the
local copy counts as caught up (``replicated/service.py``).

Threads: the cache service calls :meth:`RootsService.changed` on the engine's event loop once
the local copy shows a change under ``saltext_raft_roots/manifests`` (or, with ``None``, after
it caught up at start or was rebuilt from a snapshot: a master that was down, or restarted in
the middle of a transfer, converges then). The passes run on one worker thread of this class,
so the loop never waits for the disk; several reports in a row make one pass. A pass also runs
every :data:`RECHECK_INTERVAL` seconds, so a diverged file put back by an operator, or a pass
that failed, is picked up without a new sync. With ``raft_roots_scan_interval`` set, the same
thread runs a sync of this master's trees at that interval (the runner's code, through this
master's cache socket, which the loop serves meanwhile).
"""

from __future__ import annotations

import logging
import threading
import time

from saltext_raft.roots import config as rootsconfig
from saltext_raft.roots import layout
from saltext_raft.roots.apply import RootsApplier

log = logging.getLogger(__name__)

#: Seconds between two passes when nothing was reported.
RECHECK_INTERVAL = 60.0


class RootsService:
    def __init__(self, opts: dict, settings, reader=None, syncer=None, recheck=RECHECK_INTERVAL):
        # pylint: disable=import-outside-toplevel
        from saltext_raft.roots import sync as _sync

        self.opts = opts
        self.settings = settings
        store = _sync.CacheStore(opts)
        targets = {kind: rootsconfig.targets(opts, kind) for kind in settings.kinds}
        self.applier = RootsApplier(
            reader or store, targets, settings.state_path, settings.max_file_bytes
        )
        self._syncer = syncer or (lambda: _sync.sync_from_opts(opts, store=store))
        self._recheck = recheck
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = False  # the local copy has caught up: passes may run
        self._thread: threading.Thread | None = None
        self.last_report: dict | None = None
        self.last_sync: dict | None = None
        self.last_error = ""
        self.passes = 0

    def changed(self, bank, key) -> None:  # pylint: disable=unused-argument
        """The cache service's watcher (on the loop): a manifest changed, or anything may have
        (``bank`` None: the local copy caught up or was rebuilt)."""
        if bank is None:
            self._ready = True
        if bank is None or bank == layout.MANIFESTS_BANK:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raft-roots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        next_scan = time.monotonic() + self.settings.scan_interval
        while not self._stop.is_set():
            timeout = self._recheck
            if self.settings.scan_interval:
                timeout = min(timeout, max(next_scan - time.monotonic(), 0))
            woke = self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._ready:
                continue
            if self.settings.scan_interval and time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.settings.scan_interval
                self._scan()
            elif woke or timeout == self._recheck:
                self.run_pass()

    def run_pass(self) -> dict | None:
        try:
            report = self.applier.apply()
        except Exception as exc:  # pylint: disable=broad-except
            self.last_error = f"apply: {exc}"
            log.error("saltext-raft roots: a pass failed: %s", exc)
            return None
        self.passes += 1
        self.last_report = report
        self.last_error = ""
        return report

    def _scan(self) -> None:
        try:
            self.last_sync = self._syncer()
        except Exception as exc:  # pylint: disable=broad-except
            self.last_error = f"scan: {exc}"
            log.warning("saltext-raft roots: periodic scan sent nothing: %s", exc)

    def status(self) -> dict:
        """What ``salt-run raft.status`` shows under ``roots``."""
        return {
            "kinds": list(self.settings.kinds),
            "targets": self.applier.targets,
            "scan_interval": self.settings.scan_interval,
            "passes": self.passes,
            "last_pass": self.last_report,
            "last_scan": self.last_sync,
            "last_error": self.last_error or None,
        }
