"""The ``pytest11`` entry point: off unless enabled.

Lives here: the ini option ``saltext_raft_plugin`` and the switch that loads
:mod:`saltext_raft.testing.plugin` when it is true. Must not live here: fixtures (a plugin
loaded through an entry point loads into every test suite of the environment, so this module
adds no fixture, no command-line option and no hook that acts unless the option is set).
"""

from __future__ import annotations

#: The module holding the public fixtures (also what ``-p`` names).
PLUGIN = "saltext_raft.testing.plugin"
#: The ini option that turns the fixtures on.
INI_OPTION = "saltext_raft_plugin"


def pytest_addoption(parser):
    parser.addini(
        INI_OPTION,
        type="bool",
        default=False,
        help=f"load saltext-raft's cluster fixtures ({PLUGIN}); same as -p {PLUGIN}",
    )


def pytest_configure(config):
    if config.getini(INI_OPTION):
        config.pluginmanager.import_plugin(PLUGIN)
