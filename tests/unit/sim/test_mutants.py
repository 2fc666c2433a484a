"""The mutation suite: planted bugs are caught, the unmodified core is clean on the same seeds,
and planting restores what it replaced.

The whole suite (every mutant, 500 seeds each) runs in ``nox -s mutants`` and in CI's ``sim``
session; here a few mutants with the seeds that caught them when measured (docs/simulator.md),
so this file stays fast.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from saltext_raft.core.node import RaftNode
from saltext_raft.sim import SimOptions
from saltext_raft.sim import mutants
from saltext_raft.sim import run_seeds
from saltext_raft.sim.hunt import hunt
from saltext_raft.sim.hunt import options_for
from tests.childpython import run_python


def test_every_mutant_has_a_unique_name_and_patches_something():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names)) >= 15
    for m in mutants.MUTANTS:
        assert m.patches and m.bug


def test_planting_replaces_and_then_restores_the_methods():
    m = mutants.BY_NAME["vote-reply-before-persist"]
    before = (RaftNode.__dict__["_hard_state"], RaftNode.__dict__["_mark_early_sends"])
    with mutants.planted(m):
        assert RaftNode.__dict__["_mark_early_sends"] is not before[1]
        assert RaftNode.__dict__["_hard_state"] is before[0]
    assert (RaftNode.__dict__["_hard_state"], RaftNode.__dict__["_mark_early_sends"]) == before
    # restored even when the block raises
    with pytest.raises(RuntimeError), mutants.planted(mutants.BY_NAME["vote-not-persisted"]):
        raise RuntimeError("boom")
    assert RaftNode.__dict__["_hard_state"] is before[0]


@pytest.mark.parametrize(
    ("name", "seeds", "expected"),
    [
        ("vote-reply-before-persist", range(3), {"durable_when_sent"}),
        ("leader-counts-unsaved-entries", range(3), {"commit_durable"}),
        ("no-check-quorum-step-down", range(6), {"leader_steps_down"}),
        ("snapshot-ack-inflated", range(100), {"match_index_true"}),
    ],
)
def test_mutant_caught_and_unmodified_clean_on_the_same_seeds(name, seeds, expected):
    mutant = mutants.BY_NAME[name]
    found = hunt(mutant, seeds)
    assert found.caught, f"{name} not caught in seeds {seeds}"
    assert found.invariant in expected, (found.seed, found.invariant, found.detail)
    # the same options (a mutant may need the runtime's Ready order), without the planted bug
    unmodified = dataclasses.replace(options_for(mutant), mutant="")
    clean = run_seeds(range(seeds.start, found.seed + 1), unmodified)
    assert clean.violations == 0, [(f.seed, f.invariant, f.detail) for f in clean.failures]


def test_options_for_adds_the_mutants_options():
    opts = options_for(mutants.BY_NAME["leader-counts-unsaved-entries"], SimOptions(kv=True))
    assert opts.runtime_refinements and opts.kv


def test_cli_runs_the_named_mutants_and_exits_zero_when_all_are_caught():
    proc = run_python(
        [
            "-m",
            "saltext_raft.sim",
            "--mutants",
            "--mutant",
            "two-pending-conf-changes",
            "--budget",
            "5",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert lines[0]["mutant"] == "two-pending-conf-changes" and lines[0]["caught"]
    assert lines[-1]["caught"] == lines[-1]["mutants"] == 1


def test_cli_exits_one_when_a_mutant_escapes_the_budget():
    # a budget of one seed is too small for this one (first caught at a later seed)
    proc = run_python(
        [
            "-m",
            "saltext_raft.sim",
            "--mutants",
            "--mutant",
            "snapshot-ack-inflated",
            "--budget",
            "1",
        ]
    )
    assert proc.returncode == 1
    assert "NOT CAUGHT mutant=snapshot-ack-inflated" in proc.stderr


def test_a_mutants_replay_command_reproduces_its_violation():
    found = hunt(mutants.BY_NAME["leader-counts-unsaved-entries"], range(3))
    assert found.caught
    assert "--mutant leader-counts-unsaved-entries" in found.replay
    assert "--runtime-refinements" in found.replay
    proc = run_python(found.replay.split()[1:], timeout=60)
    assert proc.returncode == 1
    assert f"VIOLATION {found.invariant}" in proc.stdout
    # the same seed without the planted bug is clean
    clean = run_python(
        found.replay.replace(" --mutant leader-counts-unsaved-entries", "").split()[1:]
    )
    assert clean.returncode == 0, clean.stderr
