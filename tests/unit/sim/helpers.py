"""Running the simulator in a child Python, as a user would (``python -m saltext_raft sim``)."""

from __future__ import annotations

from tests.childpython import run_python


def outputs_under_hash_seeds(code: str, hash_seeds=("0", "12345")) -> set[str]:
    """The distinct outputs of ``python -c code`` under each ``PYTHONHASHSEED``: one element if
    the output does not depend on string hashing."""
    outs = set()
    for seed in hash_seeds:
        proc = run_python(["-c", code], PYTHONHASHSEED=seed)
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout)
    return outs
