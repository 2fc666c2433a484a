"""Minion keys on Salt 3007 replicated through the Raft log, each master's own key directories
kept as the view Salt reads (engine option ``keys: replicate``; docs/keys.md).

Lives here: :class:`Reconciler` (the rules: what is a local change, when it is proposed, when
the log's state is written to the directories instead), its port to the log (:class:`LogPort`,
:class:`KeyLogError`), :class:`KeyReplication` (the engine side: a thread running the
reconciler after the engine has caught up, the ``keys.sync`` request of the ``_auth`` wrapper)
and the option's vocabulary (:data:`OPTION`, :data:`REPLICATE`, :func:`check_option`). Must not
live here: reading and writing the directories and the persisted record
(``replicated/keyview.py``), the ``_auth`` wrapper (``replicated/keyauth.py``), the replicated
representation's names (``replicated/keystore.py``: the mirror bank
``saltext_raft_keys/<bank>``, ``{"state", "pub"}``, shared with Salt 3008's
``keys.cache_driver: raft``).

Theory of operation
-------------------
Salt 3007 reads and writes minion keys as files (``salt-key`` in its own process, ``_auth`` in
the request workers, auto-accept, autosign). The engine cannot see those writes happen, so it
reconciles: it compares three things for each minion id and bank (``keys``: one of accepted,
pending, rejected with its PEM; ``denied_keys``: the denied PEM):

- ``D``: what the directories show now;
- ``P``: what they showed when the engine last applied or adopted that id (the *applied
  record*, ``keyview.AppliedView``, persisted in the engine's state dir, fsynced);
- ``M``: the state the log has committed (the key store's banks in the replicated cache).

=================  ==========  =========================================================
D vs P             M vs P      action
=================  ==========  =========================================================
same               same        nothing
same               different   the log changed: write ``M`` to the directories, ``P = M``
different          (D == M)    the change is already in the log (a crash after a write,
                               before the record): ``P = M``
different          different   the log changed since this master last applied the id:
                               **the log wins**, the local change is discarded, ``M``
                               written (a delete stays final: a master that was down while
                               a key was deleted removes its file, never proposes it)
different          same        a local change: proposed (after a ReadIndex barrier, ``M``
                               looked at again); a new key (``P`` empty) as an *add*, which
                               the state machine applies only if the log still has no entry
                               for the id; a change as a store, a removal as a flush
=================  ==========  =========================================================

A new pending key for an id whose log entry is absent but which the log has as denied is not
proposed either: the pending file is removed (``_auth`` on a master that had not applied the
state yet must not open a door the cluster closed). The directories are written first and the
record after (both durably): a crash between them leaves ``D == M``, adopted on the next pass.

Local changes are looked for only after the engine has caught up with the log since its start
(the cache service's catch-up barrier), and only against the record: never against a
directory listing alone. The record missing (first start with this option) means nothing was
applied yet: every key found is new and proposed as an add (the log's existing entries win:
this imports a master's existing keys). The record unreadable (torn) means local changes
cannot be told from stale files: the first pass writes the log's state everywhere (logged).

Detection: the directories are listed every ``POLL_INTERVAL`` seconds (a stat signature per
entry; a file is read only when its signature changed, or when its mtime is recent enough that
a same-size rewrite within one clock tick could hide behind it: ``keyview.RACY_WINDOW_NS``),
and every applied change of the key banks is reported by the cache service; correctness
depends on neither being prompt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import math
import os
import time

import salt.payload
from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.master import settings as engine_settings
from saltext_raft.queuethread import STOP
from saltext_raft.queuethread import QueueThread
from saltext_raft.replicated import keystore
from saltext_raft.replicated.keyview import ACCEPTED
from saltext_raft.replicated.keyview import APPLIED_FILE
from saltext_raft.replicated.keyview import DENIED
from saltext_raft.replicated.keyview import PENDING
from saltext_raft.replicated.keyview import AppliedView
from saltext_raft.replicated.keyview import Entry
from saltext_raft.replicated.keyview import IdView
from saltext_raft.replicated.keyview import KeyDirs
from saltext_raft.replicated.keyview import Refused
from saltext_raft.replicated.keyview import from_log
from saltext_raft.replicated.keyview import may_hide_a_change
from saltext_raft.replicated.keyview import to_log

log = logging.getLogger(__name__)

#: The engine option and its one value (one home: ``master/settings.py``).
OPTION = engine_settings.KEYS_OPTION
REPLICATE = engine_settings.KEYS_REPLICATE
#: The control request the ``_auth`` wrapper sends before Salt treats a minion as new.
SYNC_OP = "keys.sync"
#: Seconds between two listings of the key directories.
POLL_INTERVAL = 0.5
BANKS = keystore.REPLICATED_BANKS
#: Seconds a proposal or a barrier of the reconciler may take.
LOG_TIMEOUT = 5.0


def salt_has_key_cache() -> bool:
    """Salt 3008 and later keep minion keys behind a cache driver (``keys.cache_driver``)."""
    return importlib.util.find_spec("salt.cache.localfs_key") is not None


def check_option(value, *, cache: bool | None) -> str:
    """The engine option ``keys``: ``""`` (off) or :data:`REPLICATE`. Raises ValueError with
    the reason: an unknown value, the cache switched off (the key state lives in it), or a
    Salt with its own key cache (3008: ``keys.cache_driver: raft`` instead)."""
    if value in (None, "", False):
        return ""
    if value != REPLICATE:
        raise ValueError(f"must be {REPLICATE!r} or unset (got {value!r})")
    if cache is False:
        raise ValueError(
            "keys: replicate keeps the key state in the replicated cache; remove 'cache: false'"
        )
    if salt_has_key_cache():
        raise ValueError(
            "keys: replicate is for Salt 3007, whose minion keys are plain files; this Salt "
            "keeps them behind a cache driver: set 'keys.cache_driver: raft' on every master "
            "instead (docs/keys.md)"
        )
    return REPLICATE


class KeyLogError(Exception):
    """The log could not be reached (no quorum, timeout, engine stopping)."""


class LogPort:
    """What the reconciler needs of the log; every method may block (called from the
    reconciler's thread). ``read`` returns a replicated value or None; ``propose`` takes
    ``"add"``, ``"store"`` or ``"flush"`` and returns the state machine's result."""

    def read(self, bank: str, minion_id: str):
        raise NotImplementedError

    def ids(self, bank: str) -> list:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def propose(self, op: str, bank: str, minion_id: str, value):
        raise NotImplementedError


class Reconciler:
    """The rules of the module docstring for one master's directories."""

    def __init__(self, dirs: KeyDirs, applied: AppliedView, logport: LogPort):
        self.dirs = dirs
        self.applied = applied
        self.log = logport
        self._signatures: dict = {}
        #: Wall clock (ns) at the start of the last listing: mtimes near it may hide a change.
        self._listed_at: int | None = None
        self._wall_clock_ns = time.time_ns
        self._reported: set = set()
        #: First pass after a torn record: the log wins every difference.
        self._adopt = False
        #: Ids whose accepted key this master's directories held and the engine took away
        #: (deleted, rejected or changed through the log): minions that may hold a session
        #: here. Taken by the caller (an AES key rotation).
        self.revoked: list[str] = []
        #: Ids whose write or proposal failed: part of every pass until it succeeds (the scan
        #: reports only entries that changed, and the log may not change either).
        self.retry: set[str] = set()
        self.counters = {
            "applied": 0,
            "adopted": 0,
            "proposed": 0,
            "discarded": 0,
            "refused": 0,
            "failed": 0,
        }
        self._last_fail_log = 0.0

    # --- start --------------------------------------------------------------------------------
    def start(self) -> str:
        """Create/check the directories, load the record; returns its status."""
        self.dirs.ensure()
        leftovers = self.dirs.remove_leftovers()
        if leftovers:
            log.info(
                "saltext-raft keys: removed %d temp file(s) an interrupted write left in %s",
                leftovers,
                self.dirs.root,
            )
        self.applied.load()
        if self.applied.status == "torn":
            log.warning(
                "saltext-raft keys: the record of the applied key view %s is unreadable (%s); "
                "writing the log's key state to %s, local key changes made while the engine "
                "was not running are discarded",
                self.applied.path,
                self.applied.problem,
                self.dirs.root,
            )
            self._adopt = True
        elif self.applied.status == "missing":
            log.info(
                "saltext-raft keys: first start with replicated keys: the keys found in %s "
                "that the log does not have are proposed to the cluster",
                self.dirs.root,
            )
        return self.applied.status

    # --- detection ----------------------------------------------------------------------------
    def scan(self) -> set:
        """Ids whose directory entries changed since the last scan (all of them the first
        time)."""
        started = self._wall_clock_ns()
        listing, refusals = self.dirs.listing()
        for problem in refusals:
            self._refused(problem)
        previous = self._listed_at
        changed = {
            i
            for i, sigs in listing.items()
            if self._signatures.get(i) != sigs
            or any(may_hide_a_change(sig, previous) for sig in sigs.values())
        }
        changed |= set(self._signatures) - set(listing)
        self._signatures = listing
        self._listed_at = started
        return changed

    def all_ids(self) -> set:
        ids = set(self.dirs.listing()[0]) | set(self.applied.ids)
        for bank in BANKS:
            for minion_id in self.log.ids(bank):
                if self.dirs.valid_id(minion_id):
                    ids.add(minion_id)
        return ids

    # --- the pass -----------------------------------------------------------------------------
    def reconcile(self, ids=None) -> dict:
        """One pass over ``ids`` (None: every id known to the directories, the record or the
        log). Returns ``{id: {bank: Entry | None}}``: the log's state for each id handled."""
        if ids is None:
            self.scan()
            ids = self.all_ids()
        ids = set(ids) | self.retry
        self.retry = set()
        try:
            return self._pass(ids)
        except BaseException:
            # The scan has recorded these ids' signatures: a pass that fails (a log read timed
            # out) must not forget them, or a local change waits for an unrelated event.
            self.retry |= ids
            raise

    def _pass(self, ids: set) -> dict:
        proposals = []
        states = {}
        for minion_id in sorted(ids):
            view = self.dirs.read(minion_id)
            if view.refused:
                for problem in view.refused:
                    self._refused(problem)
                continue
            for bank in BANKS:
                wanted = self._decide(minion_id, bank, view, self.log.read(bank, minion_id))
                if wanted is not None:
                    proposals.append(wanted)
            states[minion_id] = {b: self.applied.get(minion_id, b) for b in BANKS}
        self._adopt = False
        if proposals:
            self._propose(proposals)
            for minion_id, _bank, _view in proposals:
                states[minion_id] = {b: self.applied.get(minion_id, b) for b in BANKS}
        if self.applied.dirty:
            self.applied.save()
        return states

    def _decide(self, minion_id: str, bank: str, view: IdView, value, proposing: bool = True):
        """Apply or adopt the log's state, or return ``(id, bank, view)`` to propose."""
        have = view.entry(bank)
        base = self.applied.get(minion_id, bank)
        want, pem = from_log(bank, value)
        stray = bank == "keys" and len(view.found) > 1
        if have == base and not self._adopt:
            if want != base or stray:
                self._write(minion_id, bank, want, pem)
            return None
        if have == want:
            if stray:
                self._write(minion_id, bank, want, pem)
            elif self.applied.get(minion_id, bank) != want:
                self.applied.set(minion_id, bank, want)
                self.counters["adopted"] += 1
            return None
        if want != base or self._adopt or not proposing or self._closed_door(minion_id, have):
            self.counters["discarded"] += 1
            log.info(
                "saltext-raft keys: %s/%s: the local change (%s) is not proposed: the log has "
                "%s; the view is restored",
                bank,
                minion_id,
                have.state if have else "removed",
                want.state if want else "nothing",
            )
            self._write(minion_id, bank, want, pem)
            return None
        return (minion_id, bank, view)

    def _closed_door(self, minion_id: str, have: Entry | None) -> bool:
        """A new pending key for an id the log has as denied (and has no key for)."""
        if have is None or have.state != PENDING or self.applied.get(minion_id, "keys"):
            return False
        denied, _ = from_log("denied_keys", self.log.read("denied_keys", minion_id))
        return denied is not None and denied.state == DENIED

    def _write(self, minion_id: str, bank: str, want: Entry | None, pem: str | None) -> None:
        try:
            self.dirs.write(minion_id, bank, want.state if want else None, pem)
        except (OSError, Refused, SaltCacheError) as exc:
            self._failed(f"writing {bank}/{minion_id} to {self.dirs.root}", exc)
            self.retry.add(minion_id)
            return
        old = self.applied.get(minion_id, bank)
        if bank == "keys" and old is not None and old.state == ACCEPTED and want != old:
            self.revoked.append(minion_id)
        self.applied.set(minion_id, bank, want)
        self.counters["applied"] += 1

    def _propose(self, proposals: list) -> None:
        try:
            self.log.barrier()
        except KeyLogError as exc:
            self._failed(f"confirming {len(proposals)} local key change(s) with the cluster", exc)
            self.retry.update(minion_id for minion_id, _, _ in proposals)
            return
        for minion_id, bank, _ in proposals:
            view = self.dirs.read(minion_id)  # as it is now, after the barrier
            if view.refused:
                continue
            base = self.applied.get(minion_id, bank)
            want, _pem = from_log(bank, self.log.read(bank, minion_id))
            if (
                want == base
                and view.entry(bank) != base
                and not self._closed_door(minion_id, view.entry(bank))
            ):
                value = to_log(bank, view)
                op = "flush" if value is None else ("add" if base is None else "store")
                try:
                    self.log.propose(op, bank, minion_id, value)
                except KeyLogError as exc:
                    self._failed(f"proposing {bank}/{minion_id} ({op})", exc)
                    self.retry.add(minion_id)
                    continue
                self.counters["proposed"] += 1
                log.info(
                    "saltext-raft keys: %s/%s: local change proposed (%s%s)",
                    bank,
                    minion_id,
                    op,
                    f" {value['state']}" if isinstance(value, dict) else "",
                )
            # Settle against what the log has now: adopted if ours went in, else the log wins.
            self._decide(minion_id, bank, view, self.log.read(bank, minion_id), proposing=False)

    # --- reporting ----------------------------------------------------------------------------
    def _refused(self, problem: str) -> None:
        if problem in self._reported:
            return
        self._reported.add(problem)
        self.counters["refused"] += 1
        log.warning(
            "saltext-raft keys: refused %s in %s: not read, not proposed, left for an operator "
            "to remove (reported once)",
            problem,
            self.dirs.root,
        )

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters["failed"] += 1
        now = time.monotonic()
        if now - self._last_fail_log >= 30.0:
            self._last_fail_log = now
            log.warning("saltext-raft keys: %s failed: %s (retried; logged every 30s)", what, exc)


# --------------------------------------------------------------------------------------------
# the engine side
# --------------------------------------------------------------------------------------------
_OPS = {"add": ADD, "store": STORE, "flush": FLUSH}


class EngineLog(LogPort):
    """The log as the engine's cache service has applied it (its ``fetch``, ``list`` and
    ``propose``, run on the loop); the barrier is the runtime's ReadIndex."""

    def __init__(self, cache, runtime, loop, *, timeout: float = LOG_TIMEOUT):
        self.cache = cache
        self.runtime = runtime
        self.loop = loop
        self.timeout = timeout

    def _on_loop(self, fn):
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                fut.set_result(fn())
            except Exception as exc:  # pylint: disable=broad-except
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(self.timeout)

    def _await(self, make_awaitable):
        async def wait():
            return await make_awaitable()

        try:
            return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(self.timeout + 1)
        except Exception as exc:  # pylint: disable=broad-except
            raise KeyLogError(f"{type(exc).__name__}: {exc}") from None

    def read(self, bank: str, minion_id: str):
        raw = self._on_loop(lambda: self.cache.fetch(keystore.mirror_bank(bank), minion_id))
        if raw is None:
            return None
        try:
            return salt.payload.loads(raw)
        except Exception:  # pylint: disable=broad-except
            return None

    def ids(self, bank: str) -> list:
        return self._on_loop(lambda: list(self.cache.list(keystore.mirror_bank(bank))))

    def barrier(self) -> None:
        self._await(lambda: self.runtime.read(self.timeout))

    def propose(self, op: str, bank: str, minion_id: str, value):
        data = b"" if value is None else salt.payload.dumps(value)
        return self._await(
            lambda: self.cache.propose(_OPS[op], keystore.mirror_bank(bank), minion_id, data)
        )


class KeyReplication:
    """The engine's side: one thread owns the directories and the record."""

    def __init__(
        self, opts: dict, cache, state_dir: str, *, poll: float = POLL_INTERVAL, rotate=None
    ):
        """``rotate()``: rotate this master's AES key after a revocation (the engine passes
        ``master/revocation.rotate_aes_key``; None: no rotation)."""
        self.opts = opts
        self._rotate = rotate if opts.get("rotate_aes_key", True) else None
        self.rotations = 0
        self.cache = cache
        self.state_dir = state_dir
        self.poll = poll
        self.dirs = KeyDirs(opts)
        self.reconciler: Reconciler | None = None
        self._worker = QueueThread("raft-keys3007", self._run)
        self.loop = None
        self.runtime = None
        self.started = False
        self._start_error = ""

    # --- loop side ----------------------------------------------------------------------------
    def start(self, loop, runtime) -> None:
        self.loop, self.runtime = loop, runtime
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)

    def changed(self, bank, key) -> None:
        """The cache service's watcher (on the loop)."""
        if bank is None or key is None:
            self._worker.put(("full", None))
        else:
            self._worker.put(("id", key))

    async def handle_sync(self, rt, req: dict) -> dict:
        """``keys.sync``: confirm with the cluster (ReadIndex), then make the directories show
        the log's state for one id before ``_auth`` looks at them."""
        from saltext_raft.runtime.errors import Rejected  # pylint: disable=import-outside-toplevel

        minion_id = req.get("minion")
        if not isinstance(minion_id, str) or not self.dirs.valid_id(minion_id):
            raise Rejected(f"{minion_id!r} is not a valid minion id")
        timeout = req.get("timeout")
        if timeout is None:
            timeout = LOG_TIMEOUT
        # JSON carries NaN, which no asyncio wait ever ends: a number > 0, finite, or refused.
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise Rejected(f"timeout must be a number of seconds above 0 (got {timeout!r})")
        timeout = min(float(timeout), LOG_TIMEOUT)
        await rt.read(timeout)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._worker.put(("sync", (minion_id, fut)))
        states = await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        return {b: (e.state if e else None) for b, e in states.items()}

    def status(self) -> dict:
        rec = self.reconciler
        return {
            "view": self.dirs.root,
            "started": self.started,
            "record": rec.applied.status if rec else "not loaded",
            "rotations": self.rotations,
            **(dict(rec.counters) if rec else {}),
        }

    # --- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        waiting = []  # sync requests that came before the first pass
        caught_up = False
        while not self.started:  # nothing before the engine has caught up (the docstring)
            for item in self._worker.take(self.poll):
                if item is STOP:
                    self._fail_waiting(waiting)
                    return
                if item[0] == "full":
                    caught_up = True
                elif item[0] == "sync":
                    waiting.append(item[1])
            if caught_up:
                self._first_pass()  # retried every poll until it succeeds
        self._answer(waiting, None)
        while True:
            items = self._worker.take(self.poll)
            if STOP in items:
                self._fail_waiting([i[1] for i in items if i is not STOP and i[0] == "sync"])
                return
            syncs = [i[1] for i in items if i[0] == "sync"]
            try:
                if any(i[0] == "full" for i in items):
                    states = self.reconciler.reconcile(None)
                else:
                    ids = {i[1] for i in items if i[0] == "id"} | {s[0] for s in syncs}
                    ids |= self.reconciler.scan()
                    busy = ids or self.reconciler.retry
                    states = self.reconciler.reconcile(ids) if busy else {}
            except Exception as exc:  # pylint: disable=broad-except
                log.warning("saltext-raft keys: reconciling the key view failed: %s", exc)
                self._fail_waiting(syncs, exc)
                continue
            self._answer(syncs, states)
            self._after_revocations()

    def _after_revocations(self) -> None:
        """A key this master's directories held as accepted was taken away through the log:
        the minion may still hold this master's AES key (publishes), so rotate it, once per
        pass (as on 3008: ``master/revocation.py``)."""
        revoked, self.reconciler.revoked = self.reconciler.revoked, []
        if not revoked:
            return
        if self._rotate is None:
            log.info(
                "saltext-raft keys: revoked %s here; no AES key rotation (rotate_aes_key off)",
                ", ".join(revoked),
            )
            return
        try:
            how = self._rotate()
        except Exception as exc:  # pylint: disable=broad-except
            log.warning(
                "saltext-raft keys: rotating the AES key after revoking %s: %s", revoked, exc
            )
            return
        self.rotations += 1
        log.info(
            "saltext-raft keys: revoked %s here; AES key rotation: %s", ", ".join(revoked), how
        )

    def _first_pass(self) -> None:
        try:
            self.reconciler = Reconciler(
                self.dirs,
                AppliedView(os.path.join(self.state_dir, APPLIED_FILE)),
                EngineLog(self.cache, self.runtime, self.loop),
            )
            self.reconciler.start()
            self.reconciler.reconcile(None)
        except Exception as exc:  # pylint: disable=broad-except
            if str(exc) != self._start_error:  # retried every poll: logged when it changes
                self._start_error = str(exc)
                log.error(
                    "saltext-raft keys: cannot start the key view in %s: %s (retrying)",
                    self.dirs.root,
                    exc,
                )
            self.reconciler = None
            return
        self.started = True
        log.info("saltext-raft keys: key view %s reconciled with the log", self.dirs.root)
        self._after_revocations()

    def _answer(self, syncs: list, states) -> None:
        for minion_id, fut in syncs:
            if states is None or minion_id not in states:
                try:
                    states_id = self.reconciler.reconcile({minion_id}).get(minion_id, {})
                except Exception as exc:  # pylint: disable=broad-except
                    # Outside the thread's loop guard: raising here would end the thread.
                    self._fail_waiting([(minion_id, fut)], exc)
                    continue
            else:
                states_id = states[minion_id]
            if not fut.done():
                fut.set_result(states_id)

    @staticmethod
    def _fail_waiting(syncs: list, exc: Exception | None = None) -> None:
        for _minion_id, fut in syncs:
            if not fut.done():
                fut.set_exception(exc or KeyLogError("the engine is stopping"))
