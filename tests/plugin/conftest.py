"""The shipped plugin's own tests: its fixtures come from the plugin itself, which this
suite enables the way a user's may (``-p saltext_raft.testing.plugin`` in the ``addopts`` of
pyproject.toml).

test_plugin_cluster.py is the example users copy (docs/testing.md), so it carries none of this
project's markers: they are added here (it starts real masters).
"""

import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent / "test_plugin_cluster.py"


def pytest_collection_modifyitems(items):
    for item in items:
        if pathlib.Path(str(item.path)).resolve() == EXAMPLE:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)
