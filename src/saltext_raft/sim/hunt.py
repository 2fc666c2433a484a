"""Hunting a planted bug: run seeds with one mutant planted until the simulator objects.

Lives here: ``hunt`` (seeds in order until a violation, with the command that replays it),
``HuntResult`` and ``options_for`` (a mutant's simulator options on top of a base).
Must not live here: the planted bugs themselves (``mutants``), running one seed (``runner``),
invariants (``checkers``). Kept apart from ``mutants`` so that ``runner`` (which plants a
mutant for ``--mutant``) and the catalogue do not import each other.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from saltext_raft.sim.cluster import SimOptions
from saltext_raft.sim.mutants import Mutant
from saltext_raft.sim.mutants import planted
from saltext_raft.sim.runner import replay_command
from saltext_raft.sim.runner import run_seed


@dataclass
class HuntResult:
    name: str
    seeds_run: int
    seconds: float
    seed: int | None = None  # the first seed that caught it (None: not caught)
    invariant: str = ""
    detail: str = ""
    replay: str = ""

    @property
    def caught(self) -> bool:
        return self.seed is not None

    def to_json(self) -> dict:
        return {
            "mutant": self.name,
            "caught": self.caught,
            "seed": self.seed,
            "invariant": self.invariant,
            "seeds_run": self.seeds_run,
            "seconds": round(self.seconds, 2),
            "replay": self.replay,
        }


def options_for(mutant: Mutant, base: SimOptions | None = None) -> SimOptions:
    """``base`` (default options) with the mutant planted and its own options on top."""
    fields = dict((base or SimOptions()).__dict__)
    fields.update(mutant.options)
    fields["mutant"] = mutant.name
    return SimOptions(**fields)


def hunt(mutant: Mutant, seeds, base: SimOptions | None = None) -> HuntResult:
    """Run ``seeds`` in order with ``mutant`` planted until one reports a violation."""
    opts = options_for(mutant, base)
    t0 = time.perf_counter()
    n = 0
    with planted(mutant):  # once for all seeds (run_seed would plant it per seed)
        plain = dataclasses.replace(opts, mutant="")
        for seed in seeds:
            n += 1
            r = run_seed(seed, plain)
            if not r.ok:
                return HuntResult(
                    mutant.name,
                    n,
                    time.perf_counter() - t0,
                    seed,
                    r.invariant,
                    r.detail,
                    replay_command(seed, opts),
                )
    return HuntResult(mutant.name, n, time.perf_counter() - t0)
