"""Running the simulator in a child Python, as a user would (``python -m saltext_raft.sim``)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

SRC = str(pathlib.Path(__file__).resolve().parents[3] / "src")


def run_python(args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """``python <args>`` with ``src/`` on its path and ``env`` added to the environment; its
    output captured as text. Bounded by ``timeout`` seconds."""
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def outputs_under_hash_seeds(code: str, hash_seeds=("0", "12345")) -> set[str]:
    """The distinct outputs of ``python -c code`` under each ``PYTHONHASHSEED``: one element if
    the output does not depend on string hashing."""
    outs = set()
    for seed in hash_seeds:
        proc = run_python(["-c", code], PYTHONHASHSEED=seed)
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout)
    return outs
