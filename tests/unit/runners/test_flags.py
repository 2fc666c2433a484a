"""The ``raft`` runner's yes/no arguments (red team 2026-12-07): ``backup`` took
``overwrite`` with ``bool()``, so the text ``"False"`` (what salt-api and ``salt.client`` pass
on when the caller writes it as text; only the ``salt-run`` command line turns it into a bool)
meant "replace the existing backup", against its documented "never unless overwrite=True"."""

from __future__ import annotations

import pytest

from saltext_raft.runners import raft as runner


@pytest.mark.parametrize("no", (False, "False", "false", "no", "0", 0, None, ""))
def test_a_backup_with_overwrite_given_as_no_never_asks_to_replace_a_file(sent, no):
    runner.backup(path="keep.bak", overwrite=no)
    assert [call[:2] for call in sent] == [
        ("backup", {"path": "keep.bak", "overwrite": False, "timeout": 120.0})
    ]


@pytest.mark.parametrize("yes", (True, "True", "true", "yes", "1", 1))
def test_a_backup_with_overwrite_given_as_yes_asks_to_replace_it(sent, yes):
    runner.backup(path="keep.bak", overwrite=yes)
    assert sent[0][1]["overwrite"] is True
