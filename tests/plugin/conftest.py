"""saltext-raft's own use of its shipped pytest plugin, for this directory only.

A user's suite enables the plugin for the whole run (``-p saltext_raft.testing.plugin``,
``pytest_plugins`` in its top-level conftest.py, or ``saltext_raft_plugin = true`` in its ini
file); pytest allows ``pytest_plugins`` in a top-level conftest only, so this directory takes
the plugin's one public fixture by importing it, and the rest of this suite stays without it.
"""

from saltext_raft.testing.plugin import raft_cluster_factory as raft_cluster_factory
