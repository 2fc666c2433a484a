"""Salt 3008's core Raft, driven in one process, for reference: section ``salt_core`` of
``python -m saltext_raft bench cluster``.

**One process, in-memory transport, for reference only — not a like-for-like comparison.**
Our figures and PySyncObj's come from three OS processes talking over loopback sockets; these
come from three ``salt.cluster.consensus.raft.Node`` objects in this one process, so every
node's disk writes and CPU work run one after another on one thread, and no byte crosses a
socket. The figures show what the core algorithm and its storage cost, not what a Salt 3008
cluster of masters achieves.

How it is driven (nothing of Salt's is patched or subclassed; only constructor arguments and
the module's public names are used):

- three ``Node`` objects ``s1``–``s3``, each holding the module's own queueing in-memory peer,
  ``ManualPeer``, for the other two (``ManualPeer.node`` is re-pointed when a node restarts);
- a single-threaded pump: deliver the queued requests one at a time, taking turns between
  the links (``ManualPeer.handle_all_requests`` on a one-request queue; it also runs the
  sender's reply callback), then run the 50 ms heartbeat tick that ``RaftService`` runs
  (re-implemented here: heartbeat to caught-up peers, entries to lagging ones), then fire due
  timers, then deliver again. Each node has its own ``TimeoutScheduler`` (the module's
  monotonic-clock scheduler), so a "killed" node's timers simply stop;
- timing as ``RaftService`` configures it: election (follower) timeout 750–1500 ms
  (``cluster_election_min``/``_max`` defaults), candidate timeout and leader beacon at the
  ``Node`` defaults (150–300 ms, 50–100 ms);
- storage as it ships: ``SaltStorage`` over ``salt.cache`` localfs in a temp cachedir (one
  cache file per entry, fsync of file and directory per entry). A second variant without
  storage (``storage=None``: the log lives in memory only) isolates the algorithm's own cost,
  the one SALT-NOTES defect 8 describes;
- the state machine passed to each ``Node`` records when each entry is applied; an entry
  counts as committed when the leader applies it. No founding CONFIG entry is written (the
  membership is the static peer list, as on a first start); proposals go through
  ``Node.log_add``.

Measured: (a) commit latency with one proposal outstanding; (b) throughput with up to
``outstanding`` proposals not yet committed (a burst of proposals, then a pump, repeated);
(c) the same once the log holds ``log_entries`` entries (filled within a time bound; the
entries actually reached are reported); (d) failover with SaltStorage: the leader stops
(its messages and timers are dropped, as if SIGKILLed), timed until a survivor leads and has
applied a proposal of its term (Salt's core appends nothing on election, SALT-NOTES defect 2,
so the bench proposes one as soon as a new leader appears); the stopped node then restarts
from its storage. Every loop is bounded in count and time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import statistics
import tempfile
import time

LABEL = "one process, in-memory transport, for reference only — not a like-for-like comparison"
MODULE = "salt.cluster.consensus.raft"
IDS = ("s1", "s2", "s3")
#: RaftService's election timeout defaults (ms) and heartbeat tick (s), Salt 3008.4.
ELECTION_MS = (750, 1500)
SERVICE_TICK_S = 0.05


def unavailable_reason() -> str | None:
    """Why Salt's core Raft cannot be driven here, or None when it can."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError) as exc:
        spec, why = None, f"{type(exc).__name__}: {exc}"
    else:
        why = "not found"
    if spec is None:
        return (
            f"{MODULE} is not importable ({why}; Salt {_salt_version()}): "
            "Salt's core Raft ships with Salt 3008 and later"
        )
    return None


def _salt_version() -> str:
    try:
        return importlib.import_module("salt.version").__version__
    except Exception:  # pylint: disable=broad-except
        return "not installed"


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


class AppliedTimes:
    """The state machine handed to each Node: when each bench entry was applied."""

    def __init__(self):
        self.applied: dict[int, float] = {}
        self.last_seq = 0  # one leader proposes in sequence order, so entries apply in order

    def apply(self, cmd, client_id=None, sequence_num=None):  # pylint: disable=unused-argument
        if sequence_num is not None:
            self.applied.setdefault(sequence_num, time.perf_counter())
            self.last_seq = max(self.last_seq, sequence_num)
        return len(self.applied)

    def get_snapshot(self):
        return b"{}"

    def restore_snapshot(self, data):  # pylint: disable=unused-argument
        self.applied = {}
        self.last_seq = 0


class CoreCluster:
    """Three Salt core Raft nodes in this process, wired by ManualPeer and pumped by hand."""

    def __init__(self, workdir: str | None, size: int = 100):
        self.raft = importlib.import_module(MODULE)
        self.workdir = workdir
        self.payload = ("p" * size)[:size]
        self.nodes: dict = {}
        self.machines: dict[str, AppliedTimes] = {}
        self.schedulers: dict = {}
        self.dead: set[str] = set()
        self.errors: dict[str, int] = {}
        self.seq = 0
        self._next_tick = 0.0
        if workdir is not None:
            import salt.config  # pylint: disable=import-outside-toplevel

            self.opts = dict(salt.config.DEFAULT_MASTER_OPTS, cachedir=workdir, cache="localfs")
        for nid in IDS:
            self._build(nid)
        for nid in IDS:
            self.nodes[nid].become_follower()

    # -- wiring ------------------------------------------------------------------------------
    def _build(self, nid: str):
        storage = None
        if self.workdir is not None:
            storage_mod = importlib.import_module("salt.cluster.consensus.storage")
            storage = storage_mod.SaltStorage(nid, self.opts)
        machine = AppliedTimes()
        node = self.raft.Node(
            nid,
            storage=storage,
            state_machine=machine,
            _follower_min=ELECTION_MS[0],
            _follower_max=ELECTION_MS[1],
        )
        scheduler = self.raft.TimeoutScheduler()
        node.register_schedule_timeout(scheduler.schedule)
        node.peers = [self.raft.ManualPeer(None, node_id=o) for o in IDS if o != nid]
        self.nodes[nid], self.machines[nid], self.schedulers[nid] = node, machine, scheduler
        for other in self.nodes.values():  # (re)point every ManualPeer at the live objects
            for peer in other.peers:
                peer.node = self.nodes.get(peer.node_id)
        return node

    def kill(self, nid: str):
        self.dead.add(nid)

    def restart(self, nid: str):
        """A new Node object over the same storage, as a restarted master would build."""
        self.dead.discard(nid)
        self._build(nid).become_follower()

    def live(self):
        return [(nid, n) for nid, n in self.nodes.items() if nid not in self.dead]

    # -- the pump ----------------------------------------------------------------------------
    def _links(self):
        for nid, node in self.nodes.items():
            for peer in node.peers:
                yield nid, peer

    def _deliver(self, deadline: float) -> tuple[bool, bool]:
        """Deliver queued requests one at a time, taking turns between the links, so that no
        follower waits for another one's whole backlog (it would see a silent leader).
        Returns (anything delivered, every queue drained); stops at ``deadline``."""
        moved = False
        for _ in range(10_000_000):  # bounded; each pass delivers at least one request
            if time.monotonic() > deadline:
                return moved, False
            progressed = False
            for nid, peer in self._links():
                if not peer.requests:
                    continue
                if nid in self.dead or peer.node_id in self.dead:
                    peer.drop_requests()  # a stopped node neither sends nor receives
                    continue
                progressed = True
                # ManualPeer only offers "deliver everything queued": hand it one request,
                # then put the rest back ahead of anything the delivery queued.
                rest = peer.requests[1:]
                del peer.requests[1:]
                try:
                    peer.handle_all_requests()
                except Exception as exc:  # pylint: disable=broad-except
                    name = type(exc).__name__
                    self.errors[name] = self.errors.get(name, 0) + 1
                peer.requests[:0] = rest
            if not progressed:
                break
            moved = True
        return moved, True

    def _service_tick(self):
        """What RaftService's 50 ms heartbeat tick does for a leader: an empty AppendEntries to
        a caught-up peer, the missing entries to a lagging one."""
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + SERVICE_TICK_S
        for _, node in self.live():
            if node.state != "leader":
                continue
            for peer in node.peers:
                ni = node.next_index.get(peer.node_id, node.log.index + 1)
                node.send_append_entries(peer, entries=[] if ni > node.log.index else None)

    def pump(self, deadline: float | None = None) -> bool:
        """Deliver, tick, fire due timers, deliver. Returns whether anything was delivered.

        Delivery comes first: after a long burst of proposals the followers' AppendEntries are
        already queued, and firing their timers first would make a busy leader look silent.
        For the same reason timers are not fired when delivery stopped at ``deadline``."""
        deadline = time.monotonic() + 60.0 if deadline is None else deadline
        moved, drained = self._deliver(deadline)
        if not drained:
            return moved
        self._service_tick()
        for nid, _ in self.live():
            self.schedulers[nid].process_timeouts()
        return self._deliver(deadline)[0] or moved

    def pump_until(self, what: str, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"Salt core cluster: no {what} within {timeout}s")
            if not self.pump(deadline):
                time.sleep(0.0005)

    # -- helpers -----------------------------------------------------------------------------
    def leader(self, exclude_term: int = -1):
        for nid, node in self.live():
            if node.state == "leader" and node.term > exclude_term:
                return nid
        return None

    def propose(self, nid: str) -> int:
        self.seq += 1
        self.nodes[nid].log_add(self.payload, client_id="bench", sequence_num=self.seq)
        return self.seq

    def commit_probe(self, nid: str, timeout: float = 10.0) -> float:
        seq = self.propose(nid)
        machine = self.machines[nid]
        self.pump_until("commit of a probe entry", lambda: seq in machine.applied, timeout)
        return machine.applied[seq]

    def elect(self, timeout: float = 30.0) -> str:
        nid = self.pump_until("leader", self.leader, timeout)
        self.commit_probe(nid)
        return nid

    def settle(self, nid: str, timeout: float = 120.0):
        """Let a stage's backlog commit on every live node before the next stage starts."""
        leader = self.nodes[nid]
        self.pump_until(
            "backlog committed on every node",
            lambda: all(
                n.log.commit_index >= leader.log.index and not any(p.requests for p in n.peers)
                for _, n in self.live()
            ),
            timeout,
        )

    def log_entries(self, nid: str) -> int:
        return self.nodes[nid].log.index + 1


def latency(c: CoreCluster, nid: str, count: int, seconds: float) -> dict:
    lat = []
    start = time.perf_counter()
    while len(lat) < count and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        lat.append(c.commit_probe(nid, timeout=10.0) - t0)
    lat_ms = [x * 1000 for x in lat]
    return {
        "committed": len(lat),
        "seconds": time.perf_counter() - start,
        "p50_ms": _pct(lat_ms, 0.5),
        "p99_ms": _pct(lat_ms, 0.99),
        "mean_ms": statistics.fmean(lat_ms) if lat_ms else None,
    }


def throughput(c: CoreCluster, nid: str, count: int, outstanding: int, seconds: float) -> dict:
    """Keep up to ``outstanding`` proposals uncommitted (propose a burst, pump, repeat) until
    ``count`` are issued or ``seconds`` pass; then let the issued ones commit (bounded) and
    divide the committed count by the time to the last commit."""
    machine = c.machines[nid]
    first = c.seq + 1
    issued = 0
    start = time.perf_counter()
    stop_at = start + seconds
    deadline = time.monotonic() + seconds

    def done():
        return max(0, min(machine.last_seq, first + issued - 1) - first + 1)

    while issued < count and time.perf_counter() < stop_at:
        while issued - done() < outstanding and issued < count and time.perf_counter() < stop_at:
            c.propose(nid)
            issued += 1
        if not c.pump(deadline):
            time.sleep(0.0005)
    drain = max(10.0, 3 * seconds)
    try:
        c.pump_until("commit of the issued proposals", lambda: done() >= issued, drain)
    except TimeoutError:
        pass  # reported as committed < issued
    committed = done()
    last = machine.applied.get(first + committed - 1, start) if committed else start
    elapsed = max(last - start, 1e-9)
    return {
        "committed": committed,
        "issued": issued,
        "outstanding": outstanding,
        "seconds": elapsed,
        "per_second": committed / elapsed if committed else 0.0,
    }


def fill(c: CoreCluster, nid: str, entries: int, outstanding: int, seconds: float) -> dict:
    start = time.perf_counter()
    while c.log_entries(nid) < entries and time.perf_counter() - start < seconds:
        need = entries - c.log_entries(nid)
        budget = seconds - (time.perf_counter() - start)
        r = throughput(c, nid, min(need, 5000), outstanding, max(budget, 0.1))
        if not r["committed"]:
            break
    return {
        "target": entries,
        "reached": c.log_entries(nid),
        "seconds": round(time.perf_counter() - start, 2),
    }


def failover(c: CoreCluster, trials: int, seconds: float) -> dict:
    times = []
    start = time.monotonic()
    leader = c.elect()
    for _ in range(trials):
        if time.monotonic() - start > seconds:
            break
        old_term = c.nodes[leader].term
        c.kill(leader)
        t0 = time.perf_counter()
        new = c.pump_until("new leader", lambda t=old_term: c.leader(exclude_term=t), 30.0)
        times.append(c.commit_probe(new, timeout=30.0) - t0)
        c.restart(leader)
        # Rejoin: follow the new leader and hold its whole log before the next trial.
        c.pump_until(
            "restarted node caught up",
            lambda o=leader, n=new: (
                c.nodes[o].leader == n and c.nodes[o].log.index == c.nodes[n].log.index
            ),
            30.0,
        )
        leader = new
    return {
        "trials": len(times),
        "p50_s": _pct(times, 0.5),
        "p99_s": _pct(times, 0.99),
        "max_s": max(times) if times else None,
        "all_s": [round(t, 4) for t in times],
    }


# -- the section -----------------------------------------------------------------------------


def one_run(c: CoreCluster, o, plan: dict) -> dict:
    """(a), (b), then fill the log and (c), on one fresh cluster; each stage time-bounded."""
    nid = c.elect(timeout=30.0)
    stage = plan["stage_seconds"]
    run = {"latency": latency(c, nid, plan["latency_count"], stage)}
    run["throughput"] = throughput(c, nid, plan["throughput_count"], o.outstanding, stage)
    c.settle(nid)
    run["fill"] = fill(c, nid, plan["log_entries"], 1, plan["fill_seconds"])
    c.settle(nid)
    entries = c.log_entries(nid)
    big = throughput(c, nid, plan["throughput_count"], o.outstanding, stage)
    c.settle(nid)
    big_lat = latency(c, nid, plan["big_latency_count"], stage / 3)
    run["big_log"] = dict(big, log_entries_before=entries, latency=big_lat)
    run["leader_term"] = c.nodes[nid].term
    return run


def summarize(runs: list[dict]) -> dict:
    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    return {
        "latency_p50_ms": med(r["latency"]["p50_ms"] for r in runs),
        "latency_p99_ms": med(r["latency"]["p99_ms"] for r in runs),
        "throughput_one_outstanding_per_s": med(
            r["latency"]["committed"] / r["latency"]["seconds"] for r in runs
        ),
        "throughput_per_s": med(r["throughput"]["per_second"] for r in runs),
        "big_log": {
            "log_entries": med(r["big_log"]["log_entries_before"] for r in runs),
            "throughput_per_s": med(r["big_log"]["per_second"] for r in runs),
            "latency_p50_ms": med(r["big_log"]["latency"]["p50_ms"] for r in runs),
        },
        "runs": runs,
    }


def plan_for(o) -> dict:
    """Counts and time bounds for this section, from the cluster bench's options. A run (both
    storage variants) starts only while the section's budget still covers one more run as
    long as the last one."""
    quick = bool(getattr(o, "quick", False))
    entries = o.salt_core_log_entries
    plan = {
        "runs": o.runs,
        "latency_count": min(o.latency_count, 200 if quick else 2000),
        "throughput_count": min(o.throughput_count, 300 if quick else 3 * o.outstanding),
        "log_entries": entries,
        "in_memory_log_entries": 3 * entries,
        "stage_seconds": 4.0 if quick else 15.0,
        "fill_seconds": 8.0 if quick else 60.0,
        "big_latency_count": min(o.latency_count, 100 if quick else 200),
        "failover_trials": min(o.trials, 3) if quick else o.trials,
        "failover_seconds": min(o.failover_seconds, 12.0 if quick else 120.0),
        "budget_seconds": o.salt_core_seconds,
    }
    return plan


def _variant(workdir: str, name: str, k: int, o, plan: dict, errors: dict):
    """One run of one storage variant in a fresh cluster; None when it failed (counted)."""
    path = os.path.join(workdir, f"{name}{k}") if name == "salt_cache" else None
    if path:
        os.makedirs(path, exist_ok=True)
    try:
        c = CoreCluster(path, o.size)
        return one_run(c, o, plan)
    except Exception as exc:  # pylint: disable=broad-except
        errors[f"{name}: {type(exc).__name__}: {exc}"[:200]] = 1
        return None
    finally:
        if path:
            shutil.rmtree(path, ignore_errors=True)


def section(o, workdir: str | None = None) -> dict:
    """The ``salt_core`` section of the cluster bench's JSON (``skipped`` with a reason when
    Salt's core Raft cannot be imported)."""
    out: dict = {"label": LABEL}
    reason = unavailable_reason()
    if reason:
        out["skipped"] = reason
        return out
    started = time.monotonic()
    plan = plan_for(o)
    budget_end = started + plan["budget_seconds"]
    own_dir = workdir is None
    workdir = tempfile.mkdtemp(prefix="raft-bench-saltcore-") if own_dir else workdir
    errors: dict[str, int] = {}
    out.update(
        {
            "salt_version": _salt_version(),
            "driven": (
                "3 salt.cluster.consensus.raft.Node objects in one process, ManualPeer queues "
                "pumped by one thread, TimeoutScheduler per node, RaftService's 50 ms tick "
                "re-implemented; nothing patched (see bench/saltcore.py)"
            ),
            "storage": "SaltStorage over salt.cache localfs, temp cachedir (fsync per entry)",
            "timing_ms": {
                "election": list(ELECTION_MS),
                "candidate": "Node default 150-300",
                "leader_beacon": "Node default 50-100",
                "service_tick": SERVICE_TICK_S * 1000,
            },
            "plan": plan,
        }
    )
    try:
        fail_dir = os.path.join(workdir, "failover")
        os.makedirs(fail_dir, exist_ok=True)
        try:
            c = CoreCluster(fail_dir, o.size)
            out["failover"] = failover(c, plan["failover_trials"], plan["failover_seconds"])
            out["failover"]["transport_errors"] = c.errors
        except Exception as exc:  # pylint: disable=broad-except
            errors[f"failover: {type(exc).__name__}: {exc}"[:200]] = 1
            out["failover"] = {"trials": 0, "p50_s": None, "p99_s": None, "max_s": None}
        finally:
            shutil.rmtree(fail_dir, ignore_errors=True)
        cache_runs, memory_runs = [], []
        memory_plan = dict(plan, log_entries=plan["in_memory_log_entries"])
        last_run = 0.0
        for k in range(plan["runs"]):
            # Start another run only if one more like the last still fits in the budget.
            if k and time.monotonic() + 1.2 * last_run > budget_end:
                out["runs_skipped"] = (
                    f"runs {k + 1}-{plan['runs']}: the budget of {plan['budget_seconds']} s "
                    f"would not cover another run (the last took {last_run:.0f} s)"
                )
                break
            run_started = time.monotonic()
            run = _variant(workdir, "salt_cache", k, o, plan, errors)
            if run:
                cache_runs.append(run)
            run = _variant(workdir, "in_memory", k, o, memory_plan, errors)
            if run:
                memory_runs.append(run)
            last_run = time.monotonic() - run_started
        if cache_runs:
            out.update(summarize(cache_runs))
        if memory_runs:
            out["in_memory"] = dict(
                summarize(memory_runs),
                storage="none (storage=None: the log in memory only; isolates the algorithm)",
            )
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    out["errors"] = errors
    out["seconds"] = round(time.monotonic() - started, 1)
    return out
