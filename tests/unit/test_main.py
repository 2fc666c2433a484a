"""The operator command ``python -m saltext_raft <command>`` (``saltext_raft.__main__``)."""

from __future__ import annotations

import importlib
import json

import pytest

from saltext_raft import __main__ as command
from saltext_raft.bench import __main__ as bench_command
from tests.childpython import run_python

EXPECTED = {"recover", "import", "keys", "secret", "node", "sim", "demo", "bench"}


def test_help_lists_every_command_with_one_line_each(capsys):
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert set(command.COMMANDS) == EXPECTED
    for name, (_, what) in command.COMMANDS.items():
        assert f"  {name} " in out and what in out


def test_no_command_is_a_usage_error(capsys):
    assert command.main([]) == 2
    assert "usage: python -m saltext_raft <command>" in capsys.readouterr().err


def test_an_unknown_command_says_so_and_exits_2(capsys):
    assert command.main(["recovr", "--force-new-cluster"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'recovr'" in err and "recover" in err


@pytest.mark.parametrize(
    "table", [command.COMMANDS, bench_command.COMMANDS], ids=["operator", "bench"]
)
def test_every_row_names_a_module_with_main(table):
    for name, (module, _) in table.items():
        assert callable(getattr(importlib.import_module(module), "main", None)), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_command_answers_help_with_its_own_options(name, capsys):
    try:
        status = command.main([name, "--help"])  # a table of its own (bench) returns
    except SystemExit as exc:  # argparse exits
        status = exc.code
    assert status == 0
    assert f"usage: python -m saltext_raft {name}" in capsys.readouterr().out


def test_the_command_runs_as_a_module_and_old_module_paths_still_work():
    new = run_python(["-m", "saltext_raft", "sim", "--seeds", "2"])
    assert new.returncode == 0, new.stderr
    old = run_python(["-m", "saltext_raft.sim", "--seeds", "2"])
    assert old.returncode == 0, old.stderr
    timing = {"seconds", "seeds_per_second"}
    summaries = [json.loads(proc.stdout.splitlines()[0]) for proc in (new, old)]
    assert [{k: v for k, v in s.items() if k not in timing} for s in summaries] == [
        {k: v for k, v in summaries[1].items() if k not in timing}
    ] * 2


@pytest.mark.parametrize(
    "name",
    ["this", "saltext_raft.master.secret", "saltext_raft.standalone", "__class__", "keys "],
)
@pytest.mark.parametrize("table", [command, bench_command], ids=["operator", "bench"])
def test_a_command_name_is_only_looked_up_never_imported(name, table, capsys, monkeypatch):
    """Attack: make the dispatcher import a module of the caller's choosing by naming it (a
    dotted path, a dunder, a name with a space). Only the table's keys are commands: nothing is
    imported, the exit status is 2."""
    imported = []
    monkeypatch.setattr(
        importlib, "import_module", lambda mod, *a: imported.append(mod) or pytest.fail(mod)
    )
    assert table.main([name, "--help"]) == 2
    assert imported == []
    assert f"unknown command {name!r}" in capsys.readouterr().err
