"""The simulator against the real core: clean seeds, determinism, the command line, and that
every fault kind is exercised."""

from __future__ import annotations

import json

from saltext_raft.sim import FAULT_KINDS
from saltext_raft.sim import SimOptions
from saltext_raft.sim import run_seed
from saltext_raft.sim import run_seeds
from tests.childpython import run_python
from tests.unit.sim.helpers import outputs_under_hash_seeds


def test_a_handful_of_seeds_run_clean():
    summary = run_seeds(range(12))
    assert summary.violations == 0, [(f.seed, f.invariant, f.detail) for f in summary.failures]
    assert summary.commits > 0 and summary.elections > 0


def test_every_fault_kind_clean():
    # every kind at once keeps a 3-node cluster down much of the time (crashes inside 3 % of
    # Readys, partitions, pauses, failing disks): longer runs, so that some reads get served
    summary = run_seeds(range(100, 106), SimOptions(faults=FAULT_KINDS, steps=2500))
    assert summary.violations == 0, [(f.seed, f.invariant, f.detail) for f in summary.failures]
    assert summary.reads > 0 and summary.membership_changes > 0


def test_every_fault_kind_is_chosen_by_some_seed():
    summary = run_seeds(range(40), SimOptions(steps=200, heal_ticks=400))
    assert set(summary.faults) == set(FAULT_KINDS)


def test_a_seed_replays_exactly():
    lines_a, lines_b = [], []
    a = run_seed(7, trace=lines_a.append)
    b = run_seed(7, trace=lines_b.append)
    assert a.stats == b.stats
    assert lines_a == lines_b


def test_results_do_not_depend_on_the_string_hash_seed():
    code = (
        "from saltext_raft.sim import run_seed;"
        "print([run_seed(s).stats['steps'] for s in range(3)])"
    )
    outs = outputs_under_hash_seeds(code)
    assert len(outs) == 1, outs


def test_jobs_give_the_same_results_in_seed_order():
    one, two = [], []
    run_seeds(range(6), jobs=1, on_result=lambda r: one.append((r.seed, r.stats)))
    run_seeds(range(6), jobs=2, on_result=lambda r: two.append((r.seed, r.stats)))
    assert one == two


def test_cli_prints_one_json_summary_line_and_exits_zero():
    proc = run_python(["-m", "saltext_raft", "sim", "--seeds", "3"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    for key in ("seeds", "steps", "elections", "commits", "reads", "membership_changes"):
        assert key in summary
    assert summary["seeds"] == 3 and summary["violations"] == 0
    assert summary["seeds_per_second"] > 0


def test_cli_reports_seed_invariant_and_replay_command_on_a_violation():
    # the broken driver (send before persist) with crashes inside Ready handling
    args = [
        "--seeds",
        "60",
        "--fault-mix",
        "crash-ready",
        "--send-before-persist",
        "--stop-on-first",
    ]
    proc = run_python(["-m", "saltext_raft", "sim", *args])
    assert proc.returncode == 1
    assert "VIOLATION seed=" in proc.stderr
    replay = proc.stderr.split("replay: ", 1)[1].splitlines()[0]
    assert replay.startswith("python -m saltext_raft sim --seed ")
    assert "--send-before-persist" in replay and replay.endswith("--trace")
    # the replay command reproduces the violation, with a readable trace
    rerun = run_python(replay.split()[1:], timeout=60)
    assert rerun.returncode == 1
    assert "deliver " in rerun.stdout and "VIOLATION" in rerun.stdout


def test_runtime_refinements_of_the_ready_contract_keep_every_invariant():
    """The runtime sends a leader's appends before its own save and saves commit-only hard
    states after applying; the simulator drives Readys that way with crashes between stages."""
    summary = run_seeds(range(60), SimOptions(runtime_refinements=True, faults=FAULT_KINDS))
    assert summary.violations == 0, summary


def test_runtime_refinements_use_both_shortcuts():
    from saltext_raft.sim import driver as drv

    seen = set()
    orig = drv.Driver.stages_for

    def spy(self, rd):
        stages = orig(self, rd)
        seen.add(stages)
        return stages

    drv.Driver.stages_for = spy
    try:
        run_seed(3, SimOptions(runtime_refinements=True))
    finally:
        drv.Driver.stages_for = orig
    assert {drv.EARLY_SEND, drv.COMMIT_ONLY_BACKGROUND, drv.CONTRACT} <= seen
