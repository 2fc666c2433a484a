"""The deterministic Raft simulator and its invariant checkers.

Standard library and ``saltext_raft.core`` only: no Salt, asyncio or sockets. Entry points:
``python -m saltext_raft sim`` (see ``__main__``) and, for tests, ``run_seed`` /
``run_seeds``. See docs/simulator.md.
"""

from saltext_raft.sim.checkers import Checkers
from saltext_raft.sim.checkers import Violation
from saltext_raft.sim.cluster import SimOptions
from saltext_raft.sim.cluster import Simulation
from saltext_raft.sim.faults import FAULT_KINDS
from saltext_raft.sim.runner import Result
from saltext_raft.sim.runner import Summary
from saltext_raft.sim.runner import run_seed
from saltext_raft.sim.runner import run_seeds

__all__ = [
    "FAULT_KINDS",
    "Checkers",
    "Result",
    "SimOptions",
    "Simulation",
    "Summary",
    "Violation",
    "run_seed",
    "run_seeds",
]
