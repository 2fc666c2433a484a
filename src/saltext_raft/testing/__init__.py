"""Helpers and a pytest plugin for testing code that runs on a saltext-raft cluster.

Lives here: :mod:`.cluster` (:class:`~.cluster.RaftCluster`: real masters with the raft engine
on 127.0.0.x addresses, built on pytest-salt-factories, and the bounded waits and by-PID kills a
scenario needs), :mod:`.plugin` (the public pytest fixtures) and :mod:`.entry` (the ``pytest11``
entry point, which loads :mod:`.plugin` only when the user asks for it). Must not live here:
anything the masters themselves run (the engine, the gate, the loader modules); this package is
imported by test suites only.

Enable the fixtures in a test suite with ``-p saltext_raft.testing.plugin``, with
``pytest_plugins = ["saltext_raft.testing.plugin"]`` in a top-level ``conftest.py``, or with
``saltext_raft_plugin = true`` in the pytest ini file. See docs/testing.md.
"""
