"""The ``raft`` runner's arguments as they arrive from ``salt-run`` (YAML: ``None``, ``null``
and ``~`` become None, ``-5`` a number) and from salt-api or ``salt.client`` (text as typed):
every odd value gets a clear error and nothing is sent to the engine (red team 2026-12-07)."""

from __future__ import annotations

import pytest

from saltext_raft.replicated import importer
from saltext_raft.runners import raft as runner

RUNNERS = [
    ("members", {}),
    ("status", {}),
    ("leader", {}),
    ("add", {"node": "m4", "address": "10.0.0.4:4606"}),
    ("promote", {"node": "m4"}),
    ("demote", {"node": "m4"}),
    ("remove", {"node": "m4"}),
    ("transfer_leader", {"node": "m4"}),
    ("reload_secrets", {}),
    ("snapshot", {}),
    ("backup", {"path": "b.bak"}),
]


@pytest.mark.parametrize("name,kwargs", RUNNERS, ids=[r[0] for r in RUNNERS])
@pytest.mark.parametrize(
    "timeout", [None, "None", "none", "", "nan", "inf", "30s", [30], True, 0, "0", -5, "-5"]
)
def test_a_timeout_that_is_no_positive_number_is_refused_before_anything_is_sent(
    sent, name, kwargs, timeout
):
    """Regression: ``timeout=0`` and ``timeout=-5`` were sent. The engine took 0 as its own
    default (10 s) while the runner waited 3 s: without a quorum the runner reported no reply
    while the engine went on trying the change for 7 s more. -5 came back as "not done within
    -5s". None and text were refused, without saying that leaving it out gives the default."""
    ret = getattr(runner, name)(timeout=timeout, **kwargs)
    assert sent == []
    assert ret["result"] is False and ret["retcode"] == 1
    assert f"raft.{name}: timeout" in ret["error"] and repr(timeout) in ret["error"]
    assert "leave it out" in ret["error"]


@pytest.mark.parametrize(
    "timeout,seconds", [(30, 30.0), ("30", 30.0), (" 2.5 ", 2.5), (1e-3, 1e-3)]
)
def test_a_positive_number_of_seconds_is_sent_as_given_number_or_text(sent, timeout, seconds):
    runner.status(timeout=timeout)
    assert sent == [("status", {"timeout": seconds}, seconds + 3)]


@pytest.mark.parametrize("node", [None, "", "  ", [1], {"a": 1}, True])
def test_remove_without_a_master_named_is_refused_by_the_runner(sent, node):
    """Regression: ``remove`` passes ids the others refuse (an older build's member may have
    one), and so sent ``node=None`` (``salt-run raft.remove node=None``) or a list on."""
    ret = runner.remove(node=node)
    assert sent == [] and ret["retcode"] == 1
    assert "raft.remove: node" in ret["error"]


def test_remove_still_sends_an_id_the_other_runners_refuse(sent):
    runner.remove(node="bad id!")
    assert sent[0][1]["node"] == "bad id!"


@pytest.mark.parametrize("path", [[1], {"a": 1}, True])
def test_a_backup_path_that_is_no_file_name_is_refused(sent, path):
    """Regression: ``path=[1]`` reached the engine, which wrote the backup to a file named
    ``[1]``."""
    ret = runner.backup(path=path)
    assert sent == [] and ret["retcode"] == 1 and "raft.backup: path" in ret["error"]


@pytest.mark.parametrize("path,name", [(None, ""), (2026, "2026"), ("b.bak", "b.bak")])
def test_a_backup_path_given_as_a_number_is_that_file_name(sent, path, name):
    runner.backup(path=path)
    assert sent[0][1]["path"] == name


@pytest.mark.parametrize("workers", [None, "None", "x", 1.9, "1.9", True, 0, 65])
def test_import_workers_that_are_no_whole_number_in_range_get_a_clear_error(sent, workers):
    """Regression: ``workers=None`` raised a ``TypeError`` out of the runner (a traceback),
    ``workers=1.9`` was taken as 1 past the importer's own rule."""
    ret = runner.import_cache(workers=workers)
    assert ret["retcode"] == 1
    assert "workers must be a whole number from 1 to 64" in ret["error"]


@pytest.mark.parametrize("banks", [123, True, {"a": 1}])
def test_import_banks_that_are_no_names_get_a_clear_error(sent, monkeypatch, banks):
    """Regression: ``banks=123`` (``salt-run`` makes it a number) raised a ``TypeError`` out of
    the runner."""
    monkeypatch.setattr(importer, "target_cache", lambda opts: None)
    monkeypatch.setattr(importer, "source_cache", lambda opts, driver: None)
    ret = runner.import_cache(banks=banks)
    assert ret["retcode"] == 1 and "raft.import_cache: banks" in ret["error"]
