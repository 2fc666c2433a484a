#!/usr/bin/env python3
"""Bootstrap for a fresh machine that has only python3.

    python3 dev.py demo            run the demo
    python3 dev.py test            run the full test suite (nox -s ci)
    python3 dev.py <session> ...   any other nox session: lint, docs, sim, sim-long, bench, ...

Arguments after the session name go to the session (nox posargs); ``--`` before them is
optional. The first run creates ``.venv-dev/`` with nox in it; nox then builds one virtualenv
per session under ``.nox/`` and reuses them. Exits with nox's exit code.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent
VENV = ROOT / ".venv-dev"
NOX_REQUIREMENT = "nox>=2024.10.9"
ALIASES = {"test": "ci", "tests": "ci"}


def _venv_python() -> pathlib.Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def _has_nox(python: pathlib.Path) -> bool:
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", "import nox"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return check.returncode == 0


def _ensure_venv() -> pathlib.Path:
    python = _venv_python()
    if _has_nox(python):
        return python
    if VENV.exists():
        print(f"dev.py: {VENV.name}/ is incomplete or broken; recreating it", flush=True)
        shutil.rmtree(VENV)
    print(f"dev.py: creating {VENV.name}/ with {sys.executable}", flush=True)
    created = subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=False)
    if created.returncode != 0:
        sys.exit(
            f"dev.py: could not create a virtualenv with '{sys.executable} -m venv'. On Debian or "
            "Ubuntu install the venv module first: apt-get install python3-venv"
        )
    print(f"dev.py: installing {NOX_REQUIREMENT} into {VENV.name}/", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", NOX_REQUIREMENT],
        check=True,
    )
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__.strip())
        return 0 if argv else 2
    session, args = ALIASES.get(argv[0], argv[0]), argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    python = _ensure_venv()
    command = [str(python), "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", session]
    if args:
        command += ["--", *args]
    print("dev.py: " + " ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
