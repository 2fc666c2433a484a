"""Development sessions for saltext-raft.

Run from a plain Python with only nox installed (``python3 dev.py <session>`` sets that up).
Each session gets its own virtualenv under ``.nox/``; venvs are reused between runs and pip
skips what is already installed.

    nox -s ci                      what CI runs: the tests on both Salt lines (the pure core and
                                   simulator tests on the first only), then the short sim
    nox -s tests                   the test suite against each supported Salt version
    nox -s "tests(3007.16)" -- -k x  one Salt version; arguments after -- go to pytest
    nox -s sim / sim-long          the deterministic simulator, 500 / 20000 seeds
    nox -s sim-kv-long             5000 seeds of the KV workload, each checked for linearizability
    nox -s mutants                 the mutation suite: every planted bug caught within 500 seeds
    nox -s storage-crash-long      the storage SIGKILL crash tests with 200 kills per scenario
    nox -s fuzz-long               the transport frame-decoder fuzz test with 100,000 inputs
    nox -s lint / docs / bench / demo
"""

from __future__ import annotations

import os
import pathlib
import shutil

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = ["ci"]

#: The Salt releases we test against, newest first: the 3008 line (ships its own Raft, which we
#: must coexist with) and the 3007 line (clustering without consensus).
SALT_VERSIONS = ["3008.4", "3007.16"]

#: Test directories over pure Python: the Raft core, the simulator and its KV workload import
#: no Salt (``tests/unit/test_layering.py``) and no other third-party package (one core test
#: encodes messages with msgpack). ``ci`` runs them with the first Salt line only, saving ~2
#: minutes of a run that could differ only in msgpack. ``tests`` alone runs everything.
SALT_FREE_TESTS = ["tests/unit/core", "tests/unit/sim"]
#: What ``ci`` adds to pytest's arguments: the slowest tests of each run, for keeping CI short.
CI_PYTEST_ARGS = ["--durations=30"]

ROOT = pathlib.Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
SIM_PACKAGE = ROOT / "src" / "saltext_raft" / "sim"


def _optional(extra: str) -> list[str]:
    return PYPROJECT["project"]["optional-dependencies"][extra]


def _dependencies_without_salt() -> list[str]:
    return [
        dep
        for dep in PYPROJECT["project"]["dependencies"]
        if not dep.replace("_", "-").lower().startswith("salt")
    ]


def _install_with_salt(session: nox.Session, salt_version: str, extras: str = "") -> None:
    # Pinned in the same resolve: ``salt>=3007`` alone takes whatever the index offers.
    target = f".[{extras}]" if extras else "."
    session.install(f"salt=={salt_version}", "-e", target)


def _install_without_salt(session: nox.Session) -> None:
    """For code that must not need Salt (core, sim): skips the ~70 s Salt install."""
    session.install(*_dependencies_without_salt())
    session.install("--no-deps", "-e", ".")


@nox.session
@nox.parametrize("salt", SALT_VERSIONS, ids=SALT_VERSIONS)
def tests(session: nox.Session, salt: str) -> None:
    """Run the test suite against one Salt version (arguments after -- go to pytest)."""
    _install_with_salt(session, salt, extras="tests")
    session.run("pytest", "tests", "-ra", "-s", *session.posargs)


def _run_sim(session: nox.Session, *runs: list[str]) -> None:
    """Each run is one ``python -m saltext_raft sim`` command line (arguments after -- are
    appended to every run)."""
    if not SIM_PACKAGE.is_dir():
        # Until the simulator lands there is nothing to run. Once the package exists, a missing
        # ``__main__`` is a failure, not a skip.
        session.skip(f"{SIM_PACKAGE} does not exist yet")
    _install_without_salt(session)
    for args in runs:
        session.run("python", "-m", "saltext_raft", "sim", *args, *session.posargs)


#: CI's short form of the mutation suite: each planted bug must be caught within this many seeds
#: (the full budget is 500, ``nox -s mutants``); when measured every one was caught by seed 121,
#: and the run stops at each mutant's first catch, so it takes about a minute.
MUTANTS_CI_BUDGET = 150


@nox.session
def sim(session: nox.Session) -> None:
    """The simulator over 500 seeds, 200 KV seeds checked for linearizability, 200 seeds
    driving Readys the way the runtime does, and the mutation suite's short form (~2 min)."""
    _run_sim(
        session,
        ["--seeds", "500"],
        ["--kv", "--seeds", "200"],
        ["--runtime-refinements", "--seeds", "200", "--start", "500"],
        ["--mutants", "--budget", str(MUTANTS_CI_BUDGET)],
    )


@nox.session
def mutants(session: nox.Session) -> None:
    """The mutation suite: every planted bug of ``saltext_raft.sim.mutants`` must be caught
    within 500 seeds (not part of CI, which runs a shorter budget in ``sim``)."""
    _run_sim(session, ["--mutants", "--budget", "500"])


@nox.session(name="sim-long")
def sim_long(session: nox.Session) -> None:
    """The simulator over 20000 seeds, one process per CPU (not part of CI)."""
    _run_sim(session, ["--seeds", "20000", "--jobs", "0"])


@nox.session(name="sim-kv-long")
def sim_kv_long(session: nox.Session) -> None:
    """5000 KV seeds checked for linearizability, one process per CPU (not part of CI)."""
    _run_sim(session, ["--kv", "--seeds", "5000", "--jobs", "0"])


@nox.session(name="storage-crash-long")
def storage_crash_long(session: nox.Session) -> None:
    """Storage crash tests: 200 SIGKILLs per scenario (append, truncation, compaction)."""
    _install_with_salt(session, SALT_VERSIONS[0], extras="tests")
    session.run(
        "pytest",
        "tests/functional/storage/test_crash.py",
        "-ra",
        "-s",
        *session.posargs,
        env={"SALTEXT_RAFT_CRASH_KILLS": "200"},
    )


@nox.session(name="scenario-layouts")
@nox.parametrize("salt", SALT_VERSIONS, ids=SALT_VERSIONS)
def scenario_layouts(session: nox.Session, salt: str) -> None:
    """The cache scenarios on real masters once per layout of the local copies, every master
    in it (not part of CI, which runs them once on a cluster of mixed layouts; ~3 min each)."""
    _install_with_salt(session, salt, extras="tests")
    session.run(
        "pytest",
        "tests/scenarios/test_cache.py",
        "-ra",
        "-s",
        *session.posargs,
        env={"SALTEXT_RAFT_SCENARIO_LAYOUTS": "localfs,sqlite"},
    )


@nox.session(name="fuzz-long")
def fuzz_long(session: nox.Session) -> None:
    """The transport decoder fuzz test with 100,000 hypothesis inputs per target."""
    _install_with_salt(session, SALT_VERSIONS[0], extras="tests")
    session.run(
        "pytest",
        "tests/unit/transport/test_fuzz.py",
        "-ra",
        *session.posargs,
        env={"SALTEXT_RAFT_FUZZ_EXAMPLES": "100000"},
    )


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """Everything CI checks: the tests on every supported Salt version, then the short sim.

    This session only queues the others; nox runs each one even if an earlier one failed, and
    exits non-zero if any of them failed. Arguments after -- go to pytest.
    """
    for i, salt in enumerate(SALT_VERSIONS):
        once = [] if i == 0 else [f"--ignore={path}" for path in SALT_FREE_TESTS]
        session.notify(f"tests({salt})", posargs=[*CI_PYTEST_ARGS, *once, *session.posargs])
    session.notify("sim", posargs=[])


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check (pass paths after -- to lint only those)."""
    session.install(*_optional("lint"))
    paths = session.posargs or ["."]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", "--diff", *paths)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs; any Sphinx warning is an error."""
    session.install(*_optional("docs"))
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (arguments after -- go to ``python -m saltext_raft bench``).

    Installs Salt 3008 (so ``bench cluster`` includes Salt's core Raft for reference) and the
    ``bench`` extra: PySyncObj, and matplotlib for ``bench plot``, e.g.
    ``nox -s bench -- plot docs/bench/cluster-<date>.json -o docs/bench/cluster.png``.
    For ``bench cluster``'s etcd section it installs Debian's ``etcd-server`` when ``etcd`` is
    missing and it runs as root with apt-get; otherwise it says in one line that the section
    will be skipped.
    """
    _install_with_salt(session, SALT_VERSIONS[0], extras="bench")
    # ``bench plot`` needs matplotlib; the extra lists it, this keeps the session whole if the
    # extra changes (pip skips it when already installed).
    session.install("matplotlib>=3.7")
    if session.posargs[:1] == ["cluster"] and "--no-etcd" not in session.posargs:
        _etcd_for_bench(session)
    session.run("python", "-m", "saltext_raft", "bench", *session.posargs)


def _etcd_for_bench(session: nox.Session) -> None:
    if shutil.which("etcd"):
        return
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        session.run(
            "apt-get", "install", "-y", "etcd-server", external=True, success_codes=[0, 100]
        )
    if not shutil.which("etcd"):
        session.log("etcd not installed: bench cluster will skip its etcd section "
                    "(apt-get install etcd-server)")  # fmt: skip


@nox.session
def demo(session: nox.Session) -> None:
    """The demo (arguments after -- go to ``python -m saltext_raft demo``)."""
    _install_with_salt(session, SALT_VERSIONS[0])
    session.run("python", "-m", "saltext_raft", "demo", *session.posargs)
