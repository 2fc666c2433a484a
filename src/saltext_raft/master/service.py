"""What the ``raft`` engine runs: a Raft node inside a Salt master, and its Salt-side duties.

Lives here: :class:`RaftService` — builds the store (Salt's cache), the transport (zmq + AEAD)
and the runtime from a validated :class:`EngineConfig`; decides readiness and publishes it to
the request workers (readiness file); fires events under ``saltext/raft/``; answers the
runners' control requests (carried out by ``master/operations.py``); detects Salt 3008's core
consensus. Must not live here: Raft rules (``core``), the driver loop (``runtime``), config
parsing (``master/config.py``).

Threads: the asyncio loop (runtime, readiness) runs in the engine's main thread; the control
server blocks on the event bus in a second thread and hands each operation to the loop.

Ports (for tests; the engine passes none): ``event_bus`` (``fire_event(data, tag)``), ``clock``
(the monotonic clock readiness is measured on: the leader-loss grace), ``runtime_factory``
(builds the runtime instead of :meth:`RaftService.build_runtime`) and ``control_bus`` (what the
control server listens on). :meth:`RaftService.serve` runs the service on the caller's loop.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import threading
import time

from saltext_raft.master import clustersecrets
from saltext_raft.master import control
from saltext_raft.master.config import EngineConfig
from saltext_raft.master.coregate import CoreGate
from saltext_raft.master.fileutil import ProcessLock
from saltext_raft.master.operations import EngineOperations
from saltext_raft.master.readiness import ReadinessWriter
from saltext_raft.runtime.config import client_timeout

log = logging.getLogger(__name__)

EVENT_PREFIX = "saltext/raft/"
TAG_LEADER = EVENT_PREFIX + "leader"
TAG_MEMBERSHIP = EVENT_PREFIX + "membership"
TAG_GATE_OPEN = EVENT_PREFIX + "gate/open"
TAG_GATE_CLOSED = EVENT_PREFIX + "gate/closed"
TAG_STARTED = EVENT_PREFIX + "started"

#: Seconds between readiness evaluations on the loop.
READINESS_PERIOD = 0.1
#: Operation timeout when the runner passes none.
OP_TIMEOUT = 10.0
#: Seconds between looks at the transport's counters for authentication failures.
CONTACT_CHECK_PERIOD = 2.0
#: Seconds without any frame from a peer before a not-ready master says so in its log.
NO_CONTACT_AFTER = 10.0
#: At most one such log line per this many seconds.
CONTACT_LOG_EVERY = 60.0


def core_consensus_active(opts: dict) -> bool:
    """Salt 3008's own Raft runs whenever ``cluster_id`` and ``cluster_peers`` are set."""
    if not (opts.get("cluster_id") and opts.get("cluster_peers")):
        return False
    try:
        return importlib.util.find_spec("salt.cluster.consensus.service") is not None
    except (ImportError, ValueError):
        return False


def evaluate_readiness(
    *,
    node_id: str,
    running: bool,
    role: str,
    leader: str,
    voters,
    learners,
    committed_voters,
    committed_learners,
    last_leader_seen: float | None,
    now: float,
    grace: float,
    learners_ok: bool,
    removed_at: int = 0,
    caught_up: bool = True,
    refusal: str = "",
) -> tuple[bool, str]:
    """Whether this master may serve minions, and why not. Pure: unit-tested on its own.

    Ready = a committed voter (or learner, if allowed) that is still a member in its latest
    known configuration, that has caught up with the cluster since it started (applied a read
    index a leader confirmed, and, with the cache, written it to the local copy), with a live
    leader, or one seen within ``grace`` seconds. ``refusal`` (a reason) keeps it closed
    whatever the rest says: a cluster key that differs from the committed one.
    """
    if not running:
        return False, "the raft node is not running"
    if refusal:
        return False, refusal
    member_ok = node_id in committed_voters and node_id in voters
    if learners_ok and not member_ok:
        member_ok = (node_id in committed_learners or node_id in committed_voters) and (
            node_id in learners or node_id in voters
        )
    if not member_ok:
        if node_id in learners or node_id in committed_learners:
            return False, "this master is a learner (not yet promoted to voter)"
        if node_id in voters:
            return False, "this master's membership is not committed yet"
        if removed_at:
            return False, (
                f"this master is not a member of the raft cluster: it was removed at index "
                f"{removed_at} (re-add it with salt-run raft.add)"
            )
        return False, "this master is not a member of the raft cluster"
    if not caught_up:
        return False, "catching up with the cluster after start (waiting for a read index)"
    if leader and role in ("leader", "follower"):
        return True, "ready"
    if last_leader_seen is None:
        return False, "no leader elected yet"
    if now - last_leader_seen <= grace:
        return True, "ready (leader lost; within the grace period)"
    return False, f"no leader for more than {grace:g}s"


class PeerContactCheck:
    """Says in the log why a master hears nothing from its peers (a wrong secret, most often).

    The transport drops frames that fail authentication and counts them; without this, a master
    with a mistyped secret only ever reports "no leader elected yet". Looked at every
    :data:`CONTACT_CHECK_PERIOD` seconds, logged at most once per :data:`CONTACT_LOG_EVERY`.
    """

    def __init__(self):
        self._started: float | None = None
        self._next = 0.0
        self._auth_seen = 0
        self._last_log = float("-inf")

    def check(self, service, rt, ready: bool, now: float) -> str | None:
        if self._started is None:
            self._started = now
        if now < self._next:
            return None
        self._next = now + CONTACT_CHECK_PERIOD
        try:
            stats = rt.transport.stats()
        except Exception:  # pylint: disable=broad-except
            return None
        auth = int((stats.get("dropped") or {}).get("auth", 0))
        new_auth, self._auth_seen = auth - self._auth_seen, auth
        cfg = service.cfg
        msg = None
        if new_auth > 0:
            msg = (
                f"saltext-raft {cfg.node_id}: {new_auth} frame(s) from other masters failed "
                "authentication: they use a different secret than this master (secret "
                f"{cfg.secret_source}), or they are not masters of cluster {cfg.cluster_id}. "
                "Every master of the cluster must have the same secret_file contents."
            )
        elif not ready and not stats.get("received") and now - self._started >= NO_CONTACT_AFTER:
            others = ", ".join(sorted(p for p in cfg.peers if p != cfg.node_id)) or "none"
            msg = (
                f"saltext-raft {cfg.node_id}: no authenticated frame from any other master in "
                f"{now - self._started:.0f}s (peers: {others}): check that they are running, "
                f"use the same secret as this master (secret {cfg.secret_source}) and can "
                f"reach {cfg.advertise or cfg.listen}"
            )
        if msg and now - self._last_log >= CONTACT_LOG_EVERY:
            self._last_log = now
            log.warning("%s", msg)
            return msg
        return None


class RaftService:
    """One Raft node in a master. ``run()`` blocks until ``stop()`` (or the process ends)."""

    def __init__(
        self,
        opts: dict,
        cfg: EngineConfig,
        *,
        event_bus=None,
        clock=time.monotonic,
        runtime_factory=None,
        control_bus=None,
    ):
        self.opts = opts
        self.cfg = cfg
        self._bus = event_bus
        self._clock = clock
        self._runtime_factory = runtime_factory or self.build_runtime
        self._control_bus = control_bus
        self.runtime = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.readiness = ReadinessWriter(cfg.readiness_path, cfg.readiness_interval)
        self.ready = False
        self.reason = "starting"
        self._last_leader_seen: float | None = None
        self._leader = ""
        self._stop_async: asyncio.Event | None = None
        self._stop_thread = threading.Event()
        self._control_thread: threading.Thread | None = None
        #: The runners' operations (``master/operations.py``), run on the loop.
        self.operations = EngineOperations(self)
        self._last_contact: dict[str, float] = {}
        self._last_match: dict[str, int] = {}
        self.coexisting = core_consensus_active(opts)
        #: Opens Salt 3008's own request gate once ours opens (``master/coregate.py``).
        self.core_gate = (
            CoreGate(opts, cfg.node_id) if self.coexisting and cfg.gate and cfg.core_gate else None
        )
        self._contact_check = PeerContactCheck()
        self.cache = None  # CacheService when this engine hosts the replicated Salt cache
        #: KeyRevocation when the minion keys are replicated too (Salt 3008
        #: ``keys.cache_driver: raft``): revocations reach this master (docs/cache.md).
        self.revocation = None
        if cfg.cache_enabled:
            # pylint: disable=import-outside-toplevel
            from saltext_raft.replicated.config import keys_driver_enabled
            from saltext_raft.replicated.service import new_cache_service

            self.cache = new_cache_service(opts)
            if keys_driver_enabled(opts):
                from saltext_raft.master.revocation import KeyRevocation
                from saltext_raft.replicated.keystore import MIRROR_PREFIX

                self.revocation = KeyRevocation(opts, window=self.cache.settings.rotate_window)
                self.cache.watch(MIRROR_PREFIX, self.revocation.changed)
        #: ClusterSecrets when Salt's cluster secrets are replicated (``cluster_secrets``).
        self.cluster_secrets = None
        if cfg.cluster_secrets and self.cache is not None:
            self.cluster_secrets = self._new_cluster_secrets()
            self.cache.watch(clustersecrets.BANK, self.cluster_secrets.changed)
        #: RootsService when the roots are replicated (``raft_roots``, docs/roots.md).
        self.roots = None
        if self.cache is not None:
            from saltext_raft.roots.config import from_opts as roots_settings

            settings = roots_settings(opts)
            if settings.enabled:
                from saltext_raft.roots.layout import ROOTS_BANK
                from saltext_raft.roots.service import RootsService

                self.roots = RootsService(opts, settings)
                self.cache.watch(ROOTS_BANK, self.roots.changed)
        #: KeyReplication when Salt 3007's key directories are replicated (``keys:
        #: replicate``; docs/keys.md).
        self.keys3007 = None
        if self.cache is not None and cfg.keys:
            # pylint: disable=import-outside-toplevel
            from saltext_raft.master.revocation import rotate_aes_key
            from saltext_raft.replicated.keys3007 import SYNC_OP
            from saltext_raft.replicated.keys3007 import KeyReplication
            from saltext_raft.replicated.keystore import MIRROR_PREFIX

            self.keys3007 = KeyReplication(
                opts, self.cache, cfg.state_dir, rotate=lambda: rotate_aes_key(opts)
            )
            self.cache.watch(MIRROR_PREFIX, self.keys3007.changed)
            self.cache.add_handler(SYNC_OP, self.keys3007.handle_sync)

    # ------------------------------------------------------------------------------------------
    # building
    # ------------------------------------------------------------------------------------------
    def _new_cluster_secrets(self):
        files = clustersecrets.ClusterFiles(
            self.opts["cluster_pki_dir"], str(self.opts.get("id") or "").removesuffix("_master")
        )

        def members():
            node = self.runtime.view() if self.runtime is not None else None
            return node.membership.members if node is not None else ()

        def fire(tag, data):  # Salt's own tag, so not through fire() (saltext/raft/ only)
            try:
                self.bus.fire_event(data, tag)
            except Exception as exc:  # pylint: disable=broad-except
                log.warning("saltext-raft: could not fire %s: %s", tag, exc)

        return clustersecrets.ClusterSecrets(files, self.cache, members, fire)

    def build_runtime(self):
        # pylint: disable=import-outside-toplevel
        from saltext_raft.master.bootepoch import claim_epoch
        from saltext_raft.replicated.config import storage_opts
        from saltext_raft.runtime import DictStateMachine
        from saltext_raft.runtime import RuntimeConfig
        from saltext_raft.runtime.assemble import NodeSpec
        from saltext_raft.runtime.assemble import assemble
        from saltext_raft.storage.store import open_store

        cfg = self.cfg
        spec = NodeSpec(
            node_id=cfg.node_id,
            cluster_id=cfg.cluster_id,
            listen=cfg.listen,
            secret=cfg.secret,
            accept_secrets=cfg.accept_secrets,
            aead=cfg.aead,
            peers=cfg.peers,
            founders=cfg.founders,
            advertise=cfg.advertise,
            join=not cfg.founding,
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
        )
        config = RuntimeConfig(
            tick_seconds=cfg.tick,
            snapshot_interval=cfg.snapshot_entries,
            max_pending_proposals=cfg.max_pending_proposals,
            follower_inline_saves=cfg.follower_inline_saves,
        )
        return assemble(
            spec,
            open_store(storage_opts(self.opts), cfg.cluster_id, cfg.node_id),
            self.cache.state_machine if self.cache is not None else DictStateMachine(),
            config,
            epoch=claim_epoch(cfg.state_dir),
        )

    # ------------------------------------------------------------------------------------------
    # events
    # ------------------------------------------------------------------------------------------
    @property
    def bus(self):
        if self._bus is None:
            import salt.utils.event  # pylint: disable=import-outside-toplevel

            self._bus = salt.utils.event.get_event(
                "master", sock_dir=self.opts["sock_dir"], opts=self.opts, listen=False
            )
        return self._bus

    def fire(self, tag: str, data: dict) -> None:
        if not self.cfg.events:
            return
        data = dict(data, node_id=self.cfg.node_id, cluster_id=self.cfg.cluster_id)
        try:
            self.bus.fire_event(data, tag)
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("saltext-raft: could not fire %s: %s", tag, exc)

    def _on_runtime_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "role":
            leader = event.get("leader") or ""
            if leader and leader != self._leader:
                self.fire(TAG_LEADER, {"leader": leader, "term": event.get("term")})
            if leader:
                self._leader = leader
        elif kind == "membership":
            self.fire(TAG_MEMBERSHIP, {k: v for k, v in event.items() if k != "event"})
            if self.cluster_secrets is not None:
                self.cluster_secrets.membership_changed()
        self.update_readiness()

    # ------------------------------------------------------------------------------------------
    # readiness
    # ------------------------------------------------------------------------------------------
    def update_readiness(self) -> None:
        """Decide readiness now, fire a gate event if it changed, publish the readiness file.
        Called on the loop: by the readiness loop, and on every runtime event."""
        rt = self.runtime
        now = self._clock()
        node = rt.view() if rt is not None else None
        if node is None:
            ready, reason = False, "starting"
            state = {}
        else:
            if node.leader and node.role in ("leader", "follower"):
                self._last_leader_seen = now
            committed = node.committed
            m = node.membership
            caught_up = self._caught_up(rt)
            secrets = self.cluster_secrets
            if secrets is not None:
                secrets.poll()
            ready, reason = evaluate_readiness(
                node_id=self.cfg.node_id,
                running=rt.running,
                role=node.role,
                leader=node.leader,
                voters=m.voters,
                learners=m.learners,
                committed_voters=committed.voters,
                committed_learners=committed.learners,
                last_leader_seen=self._last_leader_seen,
                now=now,
                grace=self.cfg.gate_grace,
                learners_ok=self.cfg.gate_learners,
                removed_at=m.removed_at(self.cfg.node_id),
                caught_up=caught_up,
                refusal=secrets.refusal if secrets is not None and caught_up else "",
            )
            state = {
                "caught_up": caught_up,
                "role": node.role,
                "leader": node.leader,
                "term": node.term,
                "voters": sorted(m.voters),
                "learners": sorted(m.learners),
            }
            self._track_contact(node, now)
            self._contact_check.check(self, rt, ready, now)
        body = dict(
            state,
            ready=ready,
            reason=reason,
            node_id=self.cfg.node_id,
            cluster_id=self.cfg.cluster_id,
            pid=os.getpid(),
            gate=self.cfg.gate,
        )
        if ready != self.ready or reason != self.reason:
            if ready != self.ready:
                log.info(
                    "saltext-raft %s: gate %s (%s)",
                    self.cfg.node_id,
                    "open" if ready else "closed",
                    reason,
                )
                self.fire(TAG_GATE_OPEN if ready else TAG_GATE_CLOSED, {"reason": reason})
            self.ready, self.reason = ready, reason
        if ready and self.core_gate is not None:
            self.core_gate.on_ready()  # acts the first time only
        try:
            self.readiness.publish(body)
            self.readiness.heartbeat()
        except OSError as exc:
            log.warning("saltext-raft: cannot write %s: %s", self.readiness.path, exc)

    def _caught_up(self, rt) -> bool:
        """The runtime passed its barrier after start, and the cache's copy shows it."""
        if self.cache is not None:
            return self.cache.caught_up
        return rt.caught_up_index is not None

    def _track_contact(self, node, now: float) -> None:
        for nid, pr in node.replication.items():  # empty unless this node leads
            if pr.active or pr.match != self._last_match.get(nid):
                self._last_contact[nid] = now
            self._last_match[nid] = pr.match

    async def _readiness_loop(self) -> None:
        while not self._stop_async.is_set():
            self.update_readiness()
            try:
                await asyncio.wait_for(self._stop_async.wait(), READINESS_PERIOD)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------------------------------
    # control operations (called on the control thread)
    # ------------------------------------------------------------------------------------------
    def handle_control(self, op: str, args: dict):
        # Checked before anything is scheduled: a NaN made ``fut.result`` give up at once
        # while the operation went on on the loop, its own wait never ending.
        timeout = client_timeout(args.get("timeout") or None, OP_TIMEOUT)
        fut = asyncio.run_coroutine_threadsafe(self.operations.run(op, args, timeout), self.loop)
        return fut.result(timeout + 2)

    def status(self) -> dict:
        st = self.runtime.status()
        st["gate"] = {
            "enabled": self.cfg.gate,
            "open": self.ready,
            "reason": self.reason,
            "hold": self.cfg.gate_hold,
            "learners": self.cfg.gate_learners,
        }
        st["engine"] = {
            "pid": os.getpid(),
            "cluster_id": self.cfg.cluster_id,
            "listen": self.cfg.listen,
            "advertise": self.cfg.advertise,
            "salt_core_consensus": self.coexisting,
            # Salt's own core request gate: "opened" by us, "already open", "absent", "" (not
            # yet), or None (not ours to touch: no core consensus, gate or core_gate off).
            "salt_core_gate": self.core_gate.outcome if self.core_gate is not None else None,
        }
        if self.cache is not None:  # the replicated Salt cache (docs/cache.md)
            st["cache"] = self.cache.status()
        if self.revocation is not None:  # revocations applied here (docs/cache.md)
            st["keys"] = self.revocation.status()
        if self.cluster_secrets is not None:  # docs/nothing-shared.md
            st["cluster_secrets"] = self.cluster_secrets.status()
        if self.roots is not None:  # the replicated roots on this master (docs/roots.md)
            st["roots"] = self.roots.status()
        if self.keys3007 is not None:  # Salt 3007's key directories (docs/keys.md)
            st["keys"] = self.keys3007.status()
        return st

    def members(self) -> dict:
        node = self.runtime.view()
        now = self._clock()
        m = node.membership
        committed_index, committed = node.committed_index, node.committed
        is_leader = node.is_leader
        out = {}
        for nid in sorted(m.members):
            entry = {
                "role": "voter" if nid in m.voters else "learner",
                "address": m.address_of(nid) or None,
                "match_index": None,
                "lag": None,
                "last_contact": None,
            }
            if nid == node.node_id:
                entry.update(match_index=node.last_index, lag=0, last_contact=0.0)
            elif is_leader and nid in node.replication:
                pr = node.replication[nid]
                seen = self._last_contact.get(nid)
                entry.update(
                    match_index=pr.match,
                    lag=max(node.last_index - pr.match, 0),
                    last_contact=round(now - seen, 3) if seen is not None else None,
                )
            out[nid] = entry
        result = {
            "leader": node.leader or None,
            "term": node.term,
            "voters": sorted(m.voters),
            "learners": sorted(m.learners),
            # learners demoted on purpose: the leader never promotes them by itself
            "demoted": sorted(m.demoted),
            "commit_index": node.commit_index,
            "membership_index": committed_index,
            "committed": sorted(committed.voters) == sorted(m.voters)
            and sorted(committed.learners) == sorted(m.learners),
            "members": out,
            "answered_by": node.node_id,
        }
        if not is_leader:
            result["note"] = (
                "match index, lag and last contact are known on the leader only: "
                f"run this on {node.leader or 'the leader'}"
            )
        return result

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Raises :class:`~saltext_raft.master.fileutil.LockHeld` when another process
        owns this master's Raft storage (another engine, or the offline recovery command)."""
        with ProcessLock(self.cfg.lock_path):
            asyncio.run(self.serve())

    async def serve(self) -> None:
        """Run on the current loop until :meth:`stop` (``run()`` adds the storage lock)."""
        self.loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        cfg = self.cfg
        log.info(
            "saltext-raft %s: starting (cluster %s, listen %s, advertise %s, %s, secret %s)",
            cfg.node_id,
            cfg.cluster_id,
            cfg.listen,
            cfg.advertise,
            f"founding voters {sorted(cfg.peers)}" if cfg.founding else "joining",
            cfg.secret_source,
        )
        if self.coexisting:
            log.warning(
                "saltext-raft %s: Salt's own core consensus is also running (cluster_id and "
                "cluster_peers are set). Both request gates apply; %s. saltext-raft shares none "
                "of its resources (port %d, tags %s*, cache bank saltext_raft/, files %s).",
                cfg.node_id,
                "Salt's is opened once ours opens (core_gate)"
                if self.core_gate is not None
                else "minions are served only when both consensus layers are ready",
                cfg.port,
                EVENT_PREFIX,
                cfg.state_dir,
            )
        self.update_readiness()  # "starting": workers hold requests rather than see a stale file
        self.runtime = self._runtime_factory()
        self.runtime.add_observer(self._on_runtime_event)
        if self.cache is not None:
            self.cache.start_writer(self.loop)
        if self.revocation is not None:
            self.revocation.start()
        if self.roots is not None:
            self.roots.start()
        await self.runtime.start()
        if self.cache is not None:
            await self.cache.start(self.runtime)
        if self.keys3007 is not None:
            self.keys3007.start(self.loop, self.runtime)
        self.fire(TAG_STARTED, {"founding": cfg.founding})
        server = control.ControlRelay(
            self.opts, cfg.node_id, self.handle_control, bus=self._control_bus
        )
        self._control_thread = threading.Thread(
            target=server.serve, args=(self._stop_thread,), name="raft-control", daemon=True
        )
        self._control_thread.start()
        # What Salt, the loaders and the restored state allocated lives as long as the engine
        # process: keep it out of the cyclic GC's full collections, which otherwise walk it
        # every few hundred ms under load and pause the loop (as in standalone.py).
        gc.collect()
        gc.freeze()
        try:
            await self._readiness_loop()
        finally:
            self._stop_thread.set()
            self.readiness.close("engine stopped")
            try:
                if self.keys3007 is not None:  # its thread may be waiting on this loop
                    await asyncio.to_thread(self.keys3007.stop)
                if self.cache is not None:
                    await self.cache.stop()
                if self.revocation is not None:
                    self.revocation.stop()
                if self.roots is not None:
                    self.roots.stop()
                await self.runtime.stop()
            finally:
                if self._control_thread is not None:
                    self._control_thread.join(2)
                server.close()

    def stop(self) -> None:
        """Thread-safe: ask ``run()`` to return."""
        if self.loop is not None and self._stop_async is not None:
            self.loop.call_soon_threadsafe(self._stop_async.set)
