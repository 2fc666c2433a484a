"""Running this project's code in a child Python, as a user would (``python -m ...``)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

SRC = str(pathlib.Path(__file__).resolve().parents[1] / "src")


def run_python(args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """``python <args>`` with ``src/`` on its path and ``env`` added to the environment; its
    output captured as text. Bounded by ``timeout`` seconds."""
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )
