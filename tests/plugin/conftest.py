"""saltext-raft's own use of its shipped pytest plugin, for this directory only.

A user's suite enables the plugin for the whole run (``-p saltext_raft.testing.plugin``,
``pytest_plugins`` in its top-level conftest.py, or ``saltext_raft_plugin = true`` in its ini
file); pytest allows ``pytest_plugins`` in a top-level conftest only, so this directory takes
the plugin's one public fixture by importing it, and the rest of this suite stays without it.

test_plugin_cluster.py is the example users copy (docs/testing.md), so it carries none of this
project's markers: they are added here (it starts real masters).
"""

import pathlib

import pytest

from saltext_raft.testing.plugin import raft_cluster_factory as raft_cluster_factory

EXAMPLE = pathlib.Path(__file__).resolve().parent / "test_plugin_cluster.py"


def pytest_collection_modifyitems(items):
    for item in items:
        if pathlib.Path(str(item.path)).resolve() == EXAMPLE:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)
