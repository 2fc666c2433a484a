"""Revocation on every master: a replicated minion key delete or reject ends the minion's access
through this master too, within seconds (Salt 3008, ``keys.cache_driver: raft``).

Lives here: :class:`KeyRevocation` (the engine side: refreshes this master's ``pki_dir`` view for
each replicated key change the cache service reports, and gathers revocations into one AES key
rotation) and :func:`rotate_aes_key` (how a rotation is done on this master). Must not live
here: the view layout and what counts as a revocation (``keystore``), when a change is reported
(``replicated/service.py``: ``CacheService.watch``).

Theory of operation
-------------------
On a single Salt master, ``salt-key -d``/``-r`` drops Salt's AES "dropfile"
(``salt.crypt.dropfile``) when ``rotate_aes_key`` is on (the default); the master's Maintenance
process finds it on its next pass (every ``loop_interval`` seconds, 60 by default) and rotates
the AES session key, so every minion has to authenticate again and the revoked one cannot. With
the key store replicated, the other masters learn of the delete from the Raft log and nothing
there rotates. Two things cut the revoked minion's access through this master:

1. **The pki_dir view, at once and for that minion only.** Salt's request server checks every
   request of a 3008 minion (pillar, files, job returns...) against
   ``pki_dir/minions/<id>`` (``ReqServerChannel.validate_token``). The engine removes that file
   as soon as the change is applied here (:func:`keystore.refresh_view`), so the minion's next
   request through this master is refused ("bad load"), and no other minion is affected.
2. **An AES rotation, for what the view cannot stop.** Publishes (jobs) are encrypted with the
   one AES key of the master, which the revoked minion still holds: it would keep receiving and
   running jobs published here (only their returns would be refused). So when a change took away
   an accepted key that this master's view held (a minion that authenticated here, or whose key
   was accepted here, may hold a session), and ``rotate_aes_key`` is on, the engine rotates this
   master's AES key. Connected minions notice at the next publish they cannot decrypt and
   authenticate again (all at once: see docs/cache.md for the cost); the revoked one is
   refused.

Rotations are gathered: the first revocation opens a window of ``raft_keys_rotate_window``
seconds (1 by default) and every revocation applied meanwhile shares the one rotation at its end,
so deleting a hundred keys costs the minions one re-authentication, not a hundred. Masters
whose view never held the key (the minion never talked to them) do not rotate at all.

How a rotation is done (:func:`rotate_aes_key`): the engine runs in a process forked from the
master, and shares the master's AES secret with the request workers and the publisher
(``salt.master.SMaster.secrets``, shared memory created before the forks). It calls Salt's own
``SMaster.rotate_secrets`` on it, which is what the Maintenance process does for a dropfile,
without waiting up to ``loop_interval``. With Salt's clustering (``cluster_id``) the key is the
cluster's, and only the Maintenance process can hand a new one to the peers: the engine then
drops the dropfile (Salt's own request) and Maintenance rotates on its next pass. If the
shared secret is not there (not forked from a master), the engine drops the dropfile too.

Threads: the cache service calls :meth:`KeyRevocation.changed` on the engine's event loop; the
view is written and the key rotated on one worker thread of this class (file reads and
writes per minion id), so the loop never waits for the disk.
"""

from __future__ import annotations

import logging
import time

from saltext_raft.queuethread import STOP
from saltext_raft.queuethread import QueueThread
from saltext_raft.replicated import keystore

log = logging.getLogger(__name__)

#: Seconds the worker waits for more changes before it looks at a pending rotation again.
IDLE_POLL = 0.5
#: A ``changed`` call that means "anything may have changed": reconcile every id.
EVERYTHING = None


def rotate_aes_key(opts: dict) -> str:
    """Rotate this master's AES session key as Salt's Maintenance process does for a dropfile;
    returns how (``"rotated"`` or ``"dropfile"``)."""
    # pylint: disable=import-outside-toplevel
    import salt.crypt
    import salt.master
    import salt.utils.event

    secrets = salt.master.SMaster.secrets
    if opts.get("cluster_id") or "aes" not in secrets:
        salt.crypt.dropfile(opts["cachedir"], opts.get("user"), opts.get("id", ""))
        return "dropfile"
    event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
    try:
        salt.master.SMaster.rotate_secrets(opts, event, owner=True)
    finally:
        event.destroy()
    return "rotated"


class KeyRevocation:
    """The engine's side of revocation (see the module docstring).

    ``refresh(bank, key) -> bool`` and ``rotate() -> str`` default to the keystore's view
    refresh and :func:`rotate_aes_key`; tests pass their own."""

    def __init__(
        self,
        opts: dict,
        *,
        window: float,
        rotate_enabled: bool | None = None,
        refresh=None,
        rotate=None,
        clock=time.monotonic,
    ):
        self.opts = opts
        self.window = window
        self.rotate_enabled = (
            bool(opts.get("rotate_aes_key", True)) if rotate_enabled is None else rotate_enabled
        )
        self._refresh = refresh or (lambda bank, key: keystore.refresh_view(opts, bank, key))
        self._rotate = rotate or (lambda: rotate_aes_key(opts))
        self._clock = clock
        self._worker = QueueThread("raft-key-revocation", self._run)
        self._rotation_due: float | None = None
        self.counters = {"views_refreshed": 0, "revoked": 0, "rotations": 0, "errors": 0}
        self.last_rotation: str | None = None

    # --- loop side ------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def changed(self, bank, key) -> None:
        """The cache service's watcher: ``bank`` is the key store's mirror bank (``key`` None:
        the whole bank), or None when anything may have changed. Returns at once."""
        self._worker.put((bank, key))

    def status(self) -> dict:
        return dict(
            self.counters,
            rotate_aes_key=self.rotate_enabled,
            window=self.window,
            rotation_pending=self._rotation_due is not None,
            last_rotation=self.last_rotation,
        )

    # --- worker thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            timeout = IDLE_POLL
            if self._rotation_due is not None:
                timeout = max(0.0, min(timeout, self._rotation_due - self._clock()))
            items = self._worker.take(timeout)
            stop = STOP in items
            work = self._expand([i for i in items if i is not STOP])
            if work:
                self._apply(work)
            if self._rotation_due is not None and (stop or self._clock() >= self._rotation_due):
                self._do_rotation()
            if stop:
                return

    def _expand(self, items: list) -> list[tuple[str, str]]:
        """(bank, key) pairs to refresh, each once, in arrival order."""
        out: dict[tuple[str, str], None] = {}
        for bank, key in items:
            whole = bank is EVERYTHING or bank == keystore.MIRROR_PREFIX
            banks = keystore.REPLICATED_BANKS if whole else (_store_bank(bank),)
            for b in banks:
                if b is None:
                    continue
                if key is None or whole:
                    try:
                        ids = sorted(keystore.view_ids(self.opts, b))
                    except Exception as exc:  # pylint: disable=broad-except
                        self._error(f"listing {b}", exc)
                        continue
                    for i in ids:
                        out[(b, i)] = None
                else:
                    out[(b, key)] = None
        return list(out)

    def _apply(self, work: list[tuple[str, str]]) -> None:
        revoked = []
        for bank, key in work:
            try:
                if self._refresh(bank, key):
                    revoked.append(key)
            except Exception as exc:  # pylint: disable=broad-except
                self._error(f"refreshing the pki_dir view of {bank}/{key}", exc)
            self.counters["views_refreshed"] += 1
        if not revoked:
            return
        self.counters["revoked"] += len(revoked)
        if not self.rotate_enabled:
            log.info(
                "saltext-raft keys: revoked %s here (pki_dir view); rotate_aes_key is off, so "
                "they keep receiving publishes until the AES key next changes",
                ", ".join(revoked),
            )
            return
        if self._rotation_due is None:
            self._rotation_due = self._clock() + self.window
        log.info(
            "saltext-raft keys: revoked %s here (pki_dir view); rotating the AES key %s",
            ", ".join(revoked),
            f"within {self.window:g}s" if self.window else "now",
        )

    def _do_rotation(self) -> None:
        self._rotation_due = None
        try:
            how = self._rotate()
        except Exception as exc:  # pylint: disable=broad-except
            self._error("rotating the AES key", exc)
            return
        self.counters["rotations"] += 1
        self.last_rotation = how
        log.info(
            "saltext-raft keys: AES key rotation after revocation: %s",
            "rotated" if how == "rotated" else "requested from Salt's Maintenance (dropfile)",
        )

    def _error(self, what: str, exc: Exception) -> None:
        self.counters["errors"] += 1
        log.warning("saltext-raft keys: %s failed: %s", what, exc)


def _store_bank(mirror_bank: str) -> str | None:
    """``saltext_raft_keys/keys`` -> ``keys``; None for anything else under the prefix."""
    prefix = keystore.MIRROR_PREFIX + "/"
    if mirror_bank.startswith(prefix) and mirror_bank[len(prefix) :] in keystore.REPLICATED_BANKS:
        return mirror_bank[len(prefix) :]
    return None
