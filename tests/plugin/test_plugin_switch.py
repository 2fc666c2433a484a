"""The plugin is off unless enabled: the ``pytest11`` entry point module adds no fixture to an
unrelated test suite, and each documented switch (ini option, ``-p``) turns the fixtures on.

Each check runs pytest in a child process on a throw-away suite outside this repository (so
neither this repository's ini file nor its conftest files take part), with this checkout's
``src`` first on the import path. The entry point module is loaded with ``-p``, as the
``pytest11`` entry point loads it where the package is installed (an installed copy's entry
point is blocked with ``-p no:saltext-raft`` first, so each run loads this checkout's module
exactly once, or not at all).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from saltext_raft.testing.entry import INI_OPTION
from saltext_raft.testing.entry import PLUGIN

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
ENTRY = "saltext_raft.testing.entry"
FIXTURE = "raft_cluster_factory"
#: The entry point's name in pyproject.toml; ``-p no:<name>`` keeps an installed copy out.
ENTRY_POINT = "saltext-raft"
PYPROJECT = SRC.parent / "pyproject.toml"


@pytest.fixture
def suite(tmp_path):
    """An unrelated test suite: one test, no ini file, no conftest."""
    (tmp_path / "test_unrelated.py").write_text("def test_sum():\n    assert 1 + 1 == 2\n")
    return tmp_path


def pytest_in(suite, *args) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", f"no:{ENTRY_POINT}"]
        + ["--rootdir", str(suite), *args],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def fixtures(suite, *args) -> str:
    out = pytest_in(suite, "--fixtures", *args)
    return "\n".join(line for line in out.splitlines() if "no tests ran" not in line)


def test_the_entry_point_module_alone_adds_no_fixture(suite):
    without = fixtures(suite)
    with_entry = fixtures(suite, "-p", ENTRY)
    assert FIXTURE not in with_entry
    assert with_entry == without  # nothing else either
    assert "1 passed" in pytest_in(suite, "-p", ENTRY)


def test_the_ini_option_turns_the_fixtures_on(suite):
    (suite / "pytest.ini").write_text(f"[pytest]\n{INI_OPTION} = true\n")
    assert FIXTURE in fixtures(suite, "-p", ENTRY)


def test_the_ini_option_false_keeps_them_off(suite):
    (suite / "pytest.ini").write_text(f"[pytest]\n{INI_OPTION} = false\n")
    assert FIXTURE not in fixtures(suite, "-p", ENTRY)


def test_dash_p_turns_the_fixtures_on(suite):
    assert FIXTURE in fixtures(suite, "-p", PLUGIN)


def test_the_entry_point_module_imports_neither_salt_nor_saltfactories():
    code = (
        f"import sys, {ENTRY}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('salt', 'saltfactories')))"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert out == "[]", out


def test_pyproject_declares_the_entry_point_module():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {ENTRY_POINT: ENTRY}
