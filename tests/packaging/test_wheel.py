"""The release artefacts: ``python -m build`` makes an sdist and a wheel (the wheel built from
the sdist, so the sdist is complete too), and a fresh virtualenv holding only Salt (the version
this test runs under) and that wheel finds every loader module through Salt's own loaders.

Nothing from this checkout or this test's environment leaks into the check: the venv has no
system site-packages, the probe runs without ``PYTHONPATH`` from a temporary directory, and it
reports where each loaded module's file lives, which must be inside the new venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from tests.ci import skip_or_fail

pytestmark = [pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Every loader module the package ships: loader type -> a function the loader must find.
LOADER_MODULES = {
    "engines": "raft.start",
    "runners": "raft.members",
    "modules": "raft.status",
    "cache": "raft.store",
    "states": "raft.member",
}

#: A function no loader has: the probe must report it missing (a probe that finds everything
#: would prove nothing).
CONTROL = ("runners", "raft.no_such_function")

#: Bounds on each step (a Salt install from an empty pip cache takes about 70 s here).
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 600

PROBE = r"""
import json, sys, tempfile
import salt.config, salt.loader

opts = salt.config.DEFAULT_MINION_OPTS.copy()
opts.update({"cachedir": tempfile.mkdtemp(), "file_client": "local"})
utils = salt.loader.utils(opts)
funcs = salt.loader.minion_mods(opts, utils=utils)
runners = salt.loader.runner(opts, utils=utils)
loaders = {
    "engines": salt.loader.engines(opts, funcs, runners, utils),
    "runners": runners,
    "modules": funcs,
    "cache": salt.loader.cache(opts),
    "states": salt.loader.states(opts, funcs, utils, salt.loader.serializers(opts)),
}
found = {}
for kind, fun in json.loads(sys.argv[1]):
    try:
        f = loaders[kind][fun]
    except KeyError:
        found[fun + "@" + kind] = None
        continue
    found[fun + "@" + kind] = sys.modules[f.__module__].__file__
import saltext_raft
found["package"] = saltext_raft.__file__
from importlib.metadata import entry_points
import importlib
plugin = [e.value for e in entry_points(group="pytest11") if e.name == "saltext-raft"]
found["pytest11"] = [importlib.import_module(v).__file__ for v in plugin]
print(json.dumps(found))
"""


def run(cmd, timeout, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.defpath
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if importlib.util.find_spec("build") is None:
        skip_or_fail("the build package is missing (the tests extra installs it)")
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], BUILD_TIMEOUT)
    return out


def test_build_makes_one_sdist_and_one_wheel_with_every_loader_module(dist):
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        entry_points = next(
            whl.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    for kind in LOADER_MODULES:
        assert f"saltext_raft/{kind}/raft.py" in names, kind
    assert "saltext_raft/statelogic.py" in names
    assert not any(n.startswith("tests/") for n in names), "tests shipped in the wheel"
    assert "[salt.loader]" in entry_points and "saltext-raft = saltext_raft" in entry_points
    # The pytest plugin (docs/testing.md): its switch is the pytest11 entry point.
    assert "saltext_raft/testing/plugin.py" in names
    assert "[pytest11]" in entry_points
    assert "saltext-raft = saltext_raft.testing.entry" in entry_points


def test_a_fresh_venv_with_only_salt_and_the_wheel_finds_every_loader_module(dist, tmp_path):
    import salt.version  # pylint: disable=import-outside-toplevel

    wheel = next(dist.glob("*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], 180, env=clean_env())
    python = str(venv / "bin" / "python")
    run(
        [python, "-m", "pip", "install", f"salt=={salt.version.__version__}", str(wheel)],
        INSTALL_TIMEOUT,
        env=clean_env(),
        cwd=tmp_path,
    )
    wanted = [*LOADER_MODULES.items(), CONTROL]
    proc = run([python, "-c", PROBE, json.dumps(wanted)], 300, env=clean_env(), cwd=tmp_path)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    site = str(venv)
    assert found.pop("package").startswith(site), found
    plugin = found.pop("pytest11")
    assert len(plugin) == 1 and plugin[0].startswith(site), plugin
    assert found.pop(f"{CONTROL[1]}@{CONTROL[0]}") is None, found
    missing = [kind for kind, path in found.items() if path is None]
    assert not missing, f"Salt's loaders did not find raft in {missing}: {found}"
    outside = {kind: path for kind, path in found.items() if not path.startswith(site)}
    assert not outside, f"loaded from outside the venv: {outside}"
