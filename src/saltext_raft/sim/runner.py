"""Running seeds: ``run_seed`` (one seed -> ``Result``) and ``run_seeds`` (many -> ``Summary``).

Lives here: the library API that tests and the command line use, the replay command, and the
optional multiprocessing fan-out (``jobs``). Results come back in seed order whatever ``jobs``
is, so output is deterministic per seed.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.cluster import SimOptions
from saltext_raft.sim.cluster import Simulation


@dataclass
class Result:
    seed: int
    stats: dict
    invariant: str = ""  # "" when the seed passed
    detail: str = ""
    step: int = 0
    replay: str = ""

    @property
    def ok(self) -> bool:
        return not self.invariant


@dataclass
class Summary:
    seeds: int = 0
    steps: int = 0
    elections: int = 0
    commits: int = 0
    reads: int = 0
    membership_changes: int = 0
    violations: int = 0
    kv_seeds: int = 0
    kv_ops: int = 0
    kv_unknown: int = 0
    kv_local_reads: int = 0
    lin_states: int = 0
    seconds: float = 0.0
    failures: list[Result] = field(default_factory=list)
    faults: dict = field(default_factory=dict)

    def add(self, r: Result) -> None:
        self.seeds += 1
        st = r.stats
        self.steps += st.get("steps", 0)
        self.elections += st.get("elections", 0)
        self.commits += st.get("commits", 0)
        self.reads += st.get("reads", 0)
        self.membership_changes += st.get("membership_changes", 0)
        if "kv_ops" in st:
            self.kv_seeds += 1
            self.kv_ops += st["kv_ops"]
            self.kv_unknown += st["kv_unknown"]
            self.kv_local_reads += st["kv_local_reads"]
            self.lin_states += st["lin_states"]
        for k in st.get("fault_kinds", ()):
            self.faults[k] = self.faults.get(k, 0) + 1
        if not r.ok:
            self.violations += 1
            self.failures.append(r)

    def to_json(self) -> dict:
        kv = {}
        if self.kv_seeds:
            kv = {
                "kv_seeds": self.kv_seeds,
                "kv_ops": self.kv_ops,
                "kv_unknown": self.kv_unknown,
                "kv_local_reads": self.kv_local_reads,
                "linearizability_states": self.lin_states,
            }
        return {
            "seeds": self.seeds,
            "steps": self.steps,
            "elections": self.elections,
            "commits": self.commits,
            "reads": self.reads,
            "membership_changes": self.membership_changes,
            "violations": self.violations,
            **kv,
            "seconds": round(self.seconds, 2),
            "seeds_per_second": round(self.seeds / self.seconds, 2) if self.seconds else 0.0,
            "seeds_with_fault": dict(sorted(self.faults.items())),
        }


def replay_command(seed: int, options: SimOptions | None) -> str:
    cmd = ["python", "-m", "saltext_raft", "sim", "--seed", str(seed)]
    o = options or SimOptions()
    if o.nodes:
        cmd += ["--nodes", str(o.nodes)]
    if o.steps:
        cmd += ["--steps", str(o.steps)]
    if o.faults is not None:
        cmd += ["--fault-mix", ",".join(o.faults) or "none"]
    if o.send_before_persist:
        cmd += ["--send-before-persist"]
    if o.runtime_refinements:
        cmd += ["--runtime-refinements"]
    if o.local_gets:
        cmd += ["--local-gets"]
    elif o.kv_mode:
        cmd += ["--kv"]
    if o.heal_ticks != SimOptions.heal_ticks:
        cmd += ["--heal-ticks", str(o.heal_ticks)]
    if o.mutant:
        cmd += ["--mutant", o.mutant]
    return " ".join(cmd + ["--trace"])


def run_seed(seed: int, options: SimOptions | None = None, trace=None) -> Result:
    """Run one seed. ``trace`` is a callable taking one line of text (or None). With
    ``options.mutant`` the run has that planted bug (``saltext_raft.sim.mutants``)."""
    if options is not None and options.mutant:
        from saltext_raft.sim import mutants  # pylint: disable=import-outside-toplevel

        with mutants.planted(mutants.BY_NAME[options.mutant]):
            return _run_seed(seed, options, trace)
    return _run_seed(seed, options, trace)


def _run_seed(seed: int, options: SimOptions | None, trace) -> Result:
    sim = Simulation(seed, options, trace=trace)
    invariant = detail = ""
    try:
        sim.run()
    except Violation as v:
        invariant, detail = v.invariant, v.detail
    except Exception as exc:  # the core (or the sim) blew up: as bad as a violation
        invariant = "exception"
        detail = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=8)
    st = sim.stats
    st.elections = len(sim.checkers.leaders)
    st.commits = sim.checkers.max_commit
    stats = {
        "steps": st.steps,
        "ticks": st.ticks,
        "elections": st.elections,
        "commits": st.commits,
        "reads": st.reads,
        "membership_changes": st.membership_changes,
        "proposals": st.proposals,
        "crashes": st.crashes,
        "restarts": st.restarts,
        "snapshots": st.snapshots,
        "transfers": st.transfers,
        "partitions": st.partitions,
        "saves_inflight": st.saves_inflight,
        "stepped_while_saving": st.stepped_while_saving,
        "disk_failures": st.disk_failures,
        "torn_writes": st.torn_writes,
        "pauses": st.pauses,
        "lingered": st.lingered,
        "fault_kinds": list(sim.mix.kinds),
    }
    if sim.kv is not None:
        stats.update(
            kv_ops=st.kv_ops,
            kv_unknown=st.kv_unknown,
            kv_local_reads=st.kv_local_reads,
            lin_states=st.lin_states,
        )
    if invariant and trace is not None:
        trace(f"VIOLATION {invariant}: {detail}")
    return Result(
        seed=seed,
        stats=stats,
        invariant=invariant,
        detail=detail,
        step=st.steps,
        replay=replay_command(seed, options) if invariant else "",
    )


def _run_one(args) -> Result:
    seed, options = args
    return run_seed(seed, options)


def run_seeds(
    seeds,
    options: SimOptions | None = None,
    *,
    jobs: int = 1,
    stop_on_first: bool = False,
    on_result=None,
) -> Summary:
    """Run ``seeds`` (any iterable of ints) and summarize. ``on_result`` sees each Result."""
    summary = Summary()
    t0 = time.perf_counter()
    seeds = list(seeds)
    if jobs > 1 and options is not None and options.node_class is not SimOptions.node_class:
        jobs = 1  # a patched node class may not survive pickling into workers
    if jobs <= 1:
        results = (run_seed(s, options) for s in seeds)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(jobs)
        results = pool.imap(_run_one, [(s, options) for s in seeds], chunksize=4)
    try:
        for r in results:
            summary.add(r)
            if on_result is not None:
                on_result(r)
            if stop_on_first and not r.ok:
                break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    summary.seconds = time.perf_counter() - t0
    return summary
