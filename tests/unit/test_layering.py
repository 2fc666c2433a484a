"""The architecture rules of docs/architecture.md, checked on the source tree.

- ``core/`` is a pure state machine: standard library only, and none of the standard modules
  that do I/O, read clocks, draw entropy or start threads. Time arrives as ticks and an RNG is
  passed in, so every run of the simulator is reproducible from its seed.
- ``core/``, ``transport/``, ``runtime/`` and ``sim/`` never import Salt: only the loader
  modules and ``storage/`` touch Salt.
- No package is named after a Salt loader type unless we mean Salt to load it: Salt loads every
  ``saltext_raft/<loader type>/`` directory through the ``salt.loader`` entry point.

Imports are read with ``ast``, so imports inside functions and ``try`` blocks count too.
A checked package that is missing fails the check (a rule over nothing would pass silently).
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

PACKAGE = "saltext_raft"
SRC_DIR = pathlib.Path(__file__).resolve().parents[2] / "src"
PACKAGE_DIR = SRC_DIR / PACKAGE

#: Standard-library modules that the core must not import, and why.
CORE_FORBIDDEN_STDLIB = {
    "asyncio": "the event loop belongs to runtime/",
    "socket": "network I/O belongs to transport/",
    "selectors": "I/O multiplexing belongs to runtime/ and transport/",
    "subprocess": "the core starts no processes",
    "threading": "the core is single-threaded; the driver serializes every call",
    "os": "file and process I/O belong to storage/ and runtime/",
    "time": "time arrives as ticks; the core reads no clock",
    "datetime": "time arrives as ticks; the core reads no clock",
    "random": "an RNG is passed in (import it under TYPE_CHECKING for annotations only)",
    "secrets": "an RNG is passed in",
    "uuid": "ids come from the caller; uuid1/uuid4 read clocks and entropy",
    "importlib": "dynamic imports would hide dependencies from this test",
}

#: Standard-library modules the core may import only under ``if TYPE_CHECKING:``.
CORE_TYPE_CHECKING_ONLY = {"random"}

#: Packages that must never import Salt.
SALT_FREE_PACKAGES = ("core", "transport", "runtime", "sim")

#: Every directory name Salt's loader looks for inside an extension package (from the
#: ``_module_dirs(opts, "<name>", ...)`` calls in salt/loader/__init__.py, 3007.16 and 3008.4).
SALT_LOADER_DIR_NAMES = {
    "auth",
    "beacons",
    "cache",
    "clouds",
    "engines",
    "executors",
    "fileserver",
    "grains",
    "log_handlers",
    "matchers",
    "metaproxy",
    "modules",
    "netapi",
    "output",
    "pillar",
    "pkgdb",
    "pkgfiles",
    "proxy",
    "queues",
    "renderers",
    "resources",
    "returners",
    "roster",
    "runners",
    "sdb",
    "serializers",
    "spm",
    "states",
    "thorium",
    "tokens",
    "tops",
    "utils",
    "wheel",
    "wrapper",
}

#: The loader directories we intend Salt to load.
INTENDED_LOADER_DIRS = {"engines", "runners", "modules", "cache", "states", "returners"}


@dataclass(frozen=True)
class Import:
    path: pathlib.Path
    lineno: int
    module: str  # absolute dotted name
    type_checking_only: bool

    def __str__(self):
        shown = self.path.relative_to(SRC_DIR) if self.path.is_relative_to(SRC_DIR) else self.path
        return f"{shown}:{self.lineno}: imports {self.module}"


def _module_name(path: pathlib.Path, src_dir: pathlib.Path) -> str:
    parts = list(path.relative_to(src_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking_test(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: pathlib.Path, src_dir: pathlib.Path = SRC_DIR) -> list[Import]:
    """Every import statement in ``path``, at any depth, with relative imports made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this_module = _module_name(path, src_dir)
    # The package a relative import is resolved against.
    package = this_module if path.name == "__init__.py" else this_module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking_test(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(path, node.lineno, alias.name, type_checking))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                module = f"{base}.{node.module}" if node.module else base
                if not node.module:
                    # ``from . import x`` imports the submodule x (or a name from base).
                    for alias in node.names:
                        found.append(
                            Import(path, node.lineno, f"{base}.{alias.name}", type_checking)
                        )
                    return
            else:
                module = node.module or ""
            found.append(Import(path, node.lineno, module, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def _python_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def _top(module: str) -> str:
    return module.partition(".")[0]


def _top_two(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _existing_package_dir(name: str) -> pathlib.Path:
    directory = PACKAGE_DIR / name
    assert directory.is_dir() and _python_files(directory), (
        f"src/{PACKAGE}/{name}/ has no Python files: a rule about it would check nothing"
    )
    return directory


def test_core_exists():
    assert _python_files(PACKAGE_DIR / "core"), f"no Python files under {PACKAGE_DIR / 'core'}"


#: The core's parts, each in its own file (issue 19): the purity rule below must cover each.
CORE_MODULES = (
    "node.py",  # the Raft node
    "replication.py",  # log replication and InstallSnapshot (a mixin of the node)
    "readindex.py",  # the ReadIndex rounds
    "confchange.py",  # the membership-change arithmetic and configuration history
    "progress.py",
    "quorum.py",
    "log.py",
    "types.py",
)

#: Longest file allowed (lines) in the packages this test holds to a size, and the exceptions
#: (docs/architecture.md): the core's Raft node and the simulator's cluster.
MAX_FILE_LINES = 600
FILE_LINE_EXCEPTIONS = {"core/node.py": 950, "sim/cluster.py": 720}
SIZED_PACKAGES = ("core", "sim")


@pytest.mark.parametrize("name", CORE_MODULES)
def test_each_part_of_the_core_is_a_file_the_purity_rule_checks(name):
    directory = _existing_package_dir("core")
    assert (directory / name) in _python_files(directory), f"core/{name} is missing"


@pytest.mark.parametrize("package", SIZED_PACKAGES)
def test_files_stay_within_their_size(package):
    too_long = []
    for path in _python_files(_existing_package_dir(package)):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        limit = FILE_LINE_EXCEPTIONS.get(rel, MAX_FILE_LINES)
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            too_long.append(f"{rel}: {n} lines (at most {limit})")
    assert not too_long, "split by concept:\n" + "\n".join(too_long)


def test_core_imports_only_the_standard_library_and_itself():
    directory = _existing_package_dir("core")
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in _python_files(directory):
        for imp in _imports(path):
            top = _top(imp.module)
            if imp.module == "__future__":
                continue
            if top == PACKAGE:
                if _top_two(imp.module) != f"{PACKAGE}.core":
                    problems.append(f"{imp} (only {PACKAGE}.core may be imported from core/)")
                continue
            if top not in stdlib:
                problems.append(f"{imp} (not in the standard library)")
                continue
            if top in CORE_FORBIDDEN_STDLIB:
                if top in CORE_TYPE_CHECKING_ONLY and imp.type_checking_only:
                    continue
                problems.append(f"{imp} ({CORE_FORBIDDEN_STDLIB[top]})")
    assert not problems, "core/ must stay a pure state machine:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", SALT_FREE_PACKAGES)
def test_package_never_imports_salt(name):
    directory = _existing_package_dir(name)
    problems = [
        str(imp)
        for path in _python_files(directory)
        for imp in _imports(path)
        if _top(imp.module) == "salt"
    ]
    assert not problems, (
        f"{name}/ must not import Salt (only loader modules and storage/ do):\n"
        + "\n".join(problems)
    )


#: The parts ``RaftRuntime`` hands its work to (runtime/driver.py keeps the loop).
RUNTIME_PARTS = (
    "admin",
    "apply",
    "envelope",
    "events",
    "host",
    "parts",
    "peers",
    "proposals",
    "reads",
    "remote",
    "snapshots",
    "view",
)

#: Attributes of the core node that only the runtime reads; the Salt side uses
#: ``RaftRuntime.view()`` instead.
CORE_INTERNALS = {"progress", "membership_at", "recent_active"}


@pytest.mark.parametrize("name", RUNTIME_PARTS)
def test_runtime_parts_never_import_the_driver(name):
    """Each part sees the runtime through its port (``runtime.host``, ``RemotePort``), never
    the class itself: importing ``runtime.driver`` would be the way back to reaching into it,
    and an import circle (the driver imports every part)."""
    path = PACKAGE_DIR / "runtime" / f"{name}.py"
    assert path.is_file(), f"{path} is missing: update RUNTIME_PARTS"
    problems = [str(imp) for imp in _imports(path) if imp.module == f"{PACKAGE}.runtime.driver"]
    assert not problems, "\n".join(problems)


def test_the_salt_side_reads_no_core_internals():
    """Outside core/, runtime/, sim/, storage/ and transport/ a node is read through
    ``RaftRuntime.view()`` (runtime/view.py), not the core's progress or membership history."""
    inner = {"core", "runtime", "sim", "storage", "transport"}
    problems = []
    for path in _python_files(PACKAGE_DIR):
        if path.relative_to(PACKAGE_DIR).parts[0] in inner:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        problems += [
            f"{path.relative_to(SRC_DIR)}:{node.lineno}: .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in CORE_INTERNALS
        ]
    assert not problems, "use RaftRuntime.view():\n" + "\n".join(problems)


def test_package_init_imports_nothing_heavy():
    """Salt imports ``saltext_raft`` for every loader it builds: keep ``__init__`` light."""
    allowed = {"__future__", f"{PACKAGE}.version"}
    init = PACKAGE_DIR / "__init__.py"
    problems = [str(imp) for imp in _imports(init) if imp.module not in allowed]
    assert not problems, "\n".join(problems)


def test_importing_core_loads_no_io_and_no_salt():
    """Checked in a fresh interpreter: what ``import saltext_raft.core`` really drags in."""
    _existing_package_dir("core")
    forbidden = ["salt", "asyncio", "socket", "zmq", "msgpack", "selectors", "subprocess"]
    code = f"import json, sys\nimport {PACKAGE}.core\nprint(json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ)
    # Test the source tree, whether or not (and wherever) the package is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=SRC_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"import {PACKAGE}.core failed:\n{proc.stderr}"
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    leaked = sorted(m for m in loaded if _top(m) in forbidden)
    assert not leaked, f"import {PACKAGE}.core loaded {leaked}"
    outside_core = sorted(
        m
        for m in loaded
        if _top(m) == PACKAGE
        and m not in {PACKAGE, f"{PACKAGE}.version"}
        and not m.startswith(f"{PACKAGE}.core")
    )
    assert not outside_core, f"import {PACKAGE}.core loaded {outside_core}"


def test_only_intended_packages_are_named_after_salt_loader_types():
    """Salt would try to load any ``saltext_raft/<loader type>/`` directory."""
    subdirs = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"}
    loader_named = subdirs & SALT_LOADER_DIR_NAMES
    unexpected = loader_named - INTENDED_LOADER_DIRS
    assert not unexpected, (
        f"{sorted(unexpected)} under src/{PACKAGE}/ would be loaded by Salt as loader "
        f"directories; rename them (intended loader dirs: {sorted(INTENDED_LOADER_DIRS)})"
    )
    empty = sorted(
        name
        for name in loader_named
        if not [p for p in (PACKAGE_DIR / name).glob("*.py") if p.name != "__init__.py"]
    )
    assert not empty, f"loader directories without a loader module: {empty}"


def test_import_scanner_sees_nested_relative_and_type_checking_imports(tmp_path):
    """The scanner itself: a rule it cannot see is a rule nobody enforces."""
    src = tmp_path / "src"
    pkg = src / PACKAGE / "core"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import log\n")
    module = pkg / "mod.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .types import Entry\n"
        "from .. import version\n"
        "if TYPE_CHECKING:\n"
        "    import random\n"
        "def f():\n"
        "    try:\n"
        "        import socket\n"
        "    except ImportError:\n"
        "        pass\n"
    )
    found = {(imp.module, imp.type_checking_only) for imp in _imports(module, src)}
    assert found == {
        ("typing", False),
        (f"{PACKAGE}.core.types", False),
        (f"{PACKAGE}.version", False),
        ("random", True),
        ("socket", False),
    }
    assert {imp.module for imp in _imports(pkg / "__init__.py", src)} == {f"{PACKAGE}.core.log"}


def test_every_test_directory_is_a_package():
    """Without ``__init__.py``, two test files with the same name in different directories
    collide at collection time (pytest's default import mode)."""
    tests_dir = pathlib.Path(__file__).resolve().parents[1]
    missing = sorted(
        str(directory.relative_to(tests_dir.parent))
        for directory in [tests_dir, *tests_dir.rglob("*")]
        if directory.is_dir()
        and not directory.name.startswith((".", "__"))
        and any(directory.glob("*.py"))
        and not (directory / "__init__.py").exists()
    )
    assert not missing, f"add an __init__.py to: {missing}"


#: Where a class may be instantiated in src/ (a node is wired in one place: runtime/assemble.py).
CONSTRUCTED_ONLY_IN = {
    "RaftRuntime": {"runtime/assemble.py"},
    # transport/bench.py measures the transport alone, without a node.
    "ZmqTransport": {"runtime/assemble.py", "transport/bench.py"},
}


def _calls_to(path: pathlib.Path, names) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in names:
                found.append((name, node.lineno))
    return found


def test_a_node_is_wired_in_one_place():
    """The engine, the standalone node and the benchmarks build their node through
    ``runtime.assemble``; a second wiring would drift (a setting wired in one, not another)."""
    _existing_package_dir("runtime")
    assert (PACKAGE_DIR / "runtime" / "assemble.py").is_file()
    problems = []
    for path in _python_files(PACKAGE_DIR):
        shown = path.relative_to(PACKAGE_DIR).as_posix()
        for name, lineno in _calls_to(path, CONSTRUCTED_ONLY_IN):
            if shown not in CONSTRUCTED_ONLY_IN[name]:
                problems.append(f"{shown}:{lineno}: constructs {name}")
    assert not problems, "build the node with runtime.assemble:\n" + "\n".join(problems)


def test_storage_reaches_into_no_object_s_private_state():
    """Each part of the store talks through a narrow port (``storage/durable.py``), so there
    is no ``protected-access`` to silence: a suppression here means a new reach-in."""
    directory = _existing_package_dir("storage")
    problems = [
        f"{path.relative_to(SRC_DIR)}:{lineno}"
        for path in _python_files(directory)
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "protected-access" in line
    ]
    assert not problems, "protected-access suppressed in storage/:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# the Salt side: master/ and replicated/
# ----------------------------------------------------------------------------------------------
#: The Salt side's packages: they may import the layers below, never the reverse.
SALT_SIDE_PACKAGES = ("master", "replicated")
#: The layers below the Salt side.
LOWER_PACKAGES = ("core", "transport", "storage", "runtime", "sim", "kv")
#: What ``replicated/`` may import from ``master/``: the engine's contract with the master's
#: other processes (its settings, its readiness file, the file rules). Anything more would tie
#: the cache driver, loaded in every request worker, to the engine's process.
REPLICATED_MAY_IMPORT_FROM_MASTER = {
    f"{PACKAGE}.master.settings",
    f"{PACKAGE}.master.readiness",
    f"{PACKAGE}.master.fileutil",
}


def _known_modules() -> set[str]:
    return {_module_name(p, SRC_DIR) for p in _python_files(PACKAGE_DIR)}


def _module_edges(path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at any depth, naming the module itself when an
    import takes a submodule from its package (``from pkg import mod``)."""
    this = _module_name(path, SRC_DIR)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != this and _top(name) == PACKAGE:
                edges.add(name)
    return edges


def _import_graph() -> dict[str, set[str]]:
    known = _known_modules()
    return {_module_name(p, SRC_DIR): _module_edges(p, known) for p in _python_files(PACKAGE_DIR)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("name", SALT_SIDE_PACKAGES)
def test_the_salt_side_has_no_import_circle(name):
    """No two modules of ``master/`` or ``replicated/`` (or between them) import each other,
    directly or round a loop, function-level imports included."""
    _existing_package_dir(name)
    prefix = f"{PACKAGE}.{name}"
    circles = [c for c in _cycles(_import_graph()) if any(m.startswith(prefix) for m in c)]
    assert not circles, f"import circles through {name}/: {circles}"


def test_the_package_has_no_import_circle():
    """Issue 19's rule for the whole tree: no module imports itself round a loop, function-level
    imports included (``sim.mutants`` and ``sim.runner`` did, through the mutation hunt)."""
    circles = _cycles(_import_graph())
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("name", LOWER_PACKAGES)
def test_lower_layers_never_import_the_salt_side(name):
    _existing_package_dir(name)
    graph = _import_graph()
    salt_side = tuple(
        f"{PACKAGE}.{p}" for p in (*SALT_SIDE_PACKAGES, *sorted(INTENDED_LOADER_DIRS))
    )
    problems = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith(f"{PACKAGE}.{name}")
        for target in targets
        if target.startswith(salt_side)
    )
    assert not problems, f"{name}/ sits below the Salt side:\n" + "\n".join(problems)


def test_replicated_imports_only_the_engines_contract_from_master():
    _existing_package_dir("replicated")
    _existing_package_dir("master")
    graph = _import_graph()
    problems = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith(f"{PACKAGE}.replicated")
        for target in targets
        if target.startswith(f"{PACKAGE}.master")
        and target not in REPLICATED_MAY_IMPORT_FROM_MASTER
    )
    assert not problems, (
        "replicated/ may import only "
        f"{sorted(REPLICATED_MAY_IMPORT_FROM_MASTER)} from master/:\n" + "\n".join(problems)
    )


def test_no_module_is_named_after_the_cache_it_belongs_to():
    """The package a module lives in says what it belongs to: no ``cache*`` module names
    anywhere (inside ``master/`` and ``replicated/`` they collided in spirit with the ``cache/``
    loader directory; ``storage/store.py`` and ``bench/saltwrites.py`` say what they are).
    The loader module ``cache/raft.py`` is a directory Salt looks for, not a module name."""
    named = sorted(
        str(p.relative_to(SRC_DIR))
        for p in _python_files(PACKAGE_DIR)
        if p.stem.startswith("cache")
    )
    assert not named, f"cache-prefixed modules: {named}"
    assert not (PACKAGE_DIR / "integration").exists(), "integration/ became master/ + replicated/"


def test_the_import_graph_sees_submodules_taken_from_their_package():
    """The graph itself: ``from pkg import mod`` is an edge to ``pkg.mod``."""
    path = SRC_DIR / PACKAGE / "replicated" / "keystore.py"
    edges = _module_edges(path, _known_modules())
    assert f"{PACKAGE}.master.settings" in edges  # from saltext_raft.master import settings
    path = SRC_DIR / PACKAGE / "replicated" / "driver.py"
    edges = _module_edges(path, _known_modules())
    assert f"{PACKAGE}.master.fileutil" in edges
    assert f"{PACKAGE}.replicated.sqlite" in edges
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
