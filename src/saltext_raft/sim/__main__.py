"""Command line: ``python -m saltext_raft sim [--seeds N | --seed S] [--trace] ...``.

Prints one JSON summary line on stdout and exits 0 when no invariant broke; otherwise prints,
for each failing seed, the invariant, what happened, and the command that replays it with a
readable trace, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from saltext_raft.sim.cluster import SimOptions
from saltext_raft.sim.faults import FAULT_KINDS
from saltext_raft.sim.runner import Summary
from saltext_raft.sim.runner import run_seed
from saltext_raft.sim.runner import run_seeds


def _parse_mix(text: str) -> tuple[str, ...] | None:
    if text in ("random", ""):
        return None
    if text == "all":
        return FAULT_KINDS
    if text == "none":
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fault kinds {bad}; known: {list(FAULT_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m saltext_raft sim",
        description="Deterministic Raft simulator: seeded faults, invariants checked every step.",
    )
    p.add_argument("--seeds", type=int, default=100, help="run seeds START..START+N-1")
    p.add_argument("--start", type=int, default=0, help="first seed for --seeds (default 0)")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--trace", action="store_true", help="print every event (one seed)")
    p.add_argument("--nodes", type=int, help="founding nodes (default: 3..5 by seed)")
    p.add_argument("--steps", type=int, help="events before the heal phase (default 1000..2500)")
    p.add_argument(
        "--fault-mix",
        type=_parse_mix,
        default=None,
        help="comma-separated fault kinds, 'all', 'none' or 'random' (default: random per "
        f"seed); kinds: {','.join(FAULT_KINDS)}",
    )
    p.add_argument("--heal-ticks", type=int, default=SimOptions.heal_ticks)
    p.add_argument(
        "--send-before-persist",
        action="store_true",
        help="run the broken driver that sends before persisting (the checkers must object)",
    )
    p.add_argument(
        "--runtime-refinements",
        action="store_true",
        help="drive Readys as saltext_raft.runtime does (leader sends appends before its own "
        "save; commit-only hard state saved after apply)",
    )
    p.add_argument(
        "--kv",
        action="store_true",
        help="KV workload: clients put/delete/get through Raft on KVStateMachine replicas; "
        "each seed's history must be linearizable",
    )
    p.add_argument(
        "--local-gets",
        action="store_true",
        help="run the broken KV client whose gets read the local copy without ReadIndex "
        "(implies --kv; the linearizability check must object)",
    )
    p.add_argument(
        "--mutants",
        action="store_true",
        help="the mutation suite: plant each bug of saltext_raft.sim.mutants and run seeds "
        "START.. until a violation; exit 1 if one is not caught within --budget seeds",
    )
    p.add_argument(
        "--mutant",
        action="append",
        default=None,
        metavar="NAME",
        help="with --mutants: only this mutant (repeatable); without: run the seeds with this "
        "planted bug (the replay command of a mutant's violation uses it)",
    )
    p.add_argument(
        "--budget", type=int, default=None, help="with --mutants: seeds per mutant (default 500)"
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes (0: one per CPU)")
    p.add_argument("--stop-on-first", action="store_true", help="stop at the first violation")
    p.add_argument("--json", action="store_true", help="also print each seed's result as JSON")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mutants:
        return _run_mutants(parser, args)
    mutant = ""
    if args.mutant:
        from saltext_raft.sim import mutants  # pylint: disable=import-outside-toplevel

        if len(args.mutant) > 1 or args.mutant[0] not in mutants.BY_NAME:
            parser.error(
                f"--mutant without --mutants takes one of {sorted(mutants.BY_NAME)}; got "
                f"{args.mutant}"
            )
        mutant = args.mutant[0]
    options = SimOptions(
        nodes=args.nodes,
        steps=args.steps,
        faults=args.fault_mix,
        send_before_persist=args.send_before_persist,
        runtime_refinements=args.runtime_refinements,
        heal_ticks=args.heal_ticks,
        kv=args.kv,
        local_gets=args.local_gets,
        mutant=mutant,
    )

    def show(r) -> None:
        if args.json:
            print(json.dumps({"seed": r.seed, "invariant": r.invariant, **r.stats}), flush=True)
        if not r.ok:
            _report(r)

    if args.seed is not None:
        trace = print if args.trace else None
        summary = Summary()
        t0 = time.perf_counter()
        r = run_seed(args.seed, options, trace=trace)
        summary.seconds = time.perf_counter() - t0
        summary.add(r)
        show(r)
    else:
        seeds = range(args.start, args.start + args.seeds)
        jobs = args.jobs or os.cpu_count() or 1
        summary = run_seeds(
            seeds, options, jobs=jobs, stop_on_first=args.stop_on_first, on_result=show
        )
    print(json.dumps(summary.to_json()), flush=True)
    return 1 if summary.violations else 0


def _run_mutants(parser, args) -> int:
    from saltext_raft.sim import mutants  # pylint: disable=import-outside-toplevel
    from saltext_raft.sim.hunt import hunt  # pylint: disable=import-outside-toplevel

    names = args.mutant or [m.name for m in mutants.MUTANTS]
    unknown = [n for n in names if n not in mutants.BY_NAME]
    if unknown:
        parser.error(f"unknown mutants {unknown}; known: {sorted(mutants.BY_NAME)}")
    budget = args.budget or mutants.BUDGET
    seeds = range(args.start, args.start + budget)
    missed = []
    t0 = time.perf_counter()
    for name in names:
        r = hunt(mutants.BY_NAME[name], seeds)
        print(json.dumps(r.to_json()), flush=True)
        if not r.caught:
            missed.append(name)
            print(
                f"NOT CAUGHT mutant={name} in seeds {seeds.start}..{seeds.stop - 1}",
                file=sys.stderr,
                flush=True,
            )
    summary = {
        "mutants": len(names),
        "caught": len(names) - len(missed),
        "missed": missed,
        "budget": budget,
        "start": args.start,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary), flush=True)
    return 1 if missed else 0


def _report(r) -> None:
    print(
        f"VIOLATION seed={r.seed} invariant={r.invariant} at step {r.step}\n  {r.detail}\n"
        f"  replay: {r.replay}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
