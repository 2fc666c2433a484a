"""The public pytest fixtures of saltext-raft (load with ``-p saltext_raft.testing.plugin``).

Lives here: :func:`raft_cluster_factory`, the one fixture: it builds and starts
:class:`~saltext_raft.testing.cluster.RaftCluster` objects and stops every daemon they started,
by PID, when the test ends. Must not live here: cluster logic (``cluster.py``) and the switch
that decides whether this module is loaded at all (``entry.py``).

Needs pytest-salt-factories (its ``salt_factories`` fixture), which the ``tests`` extra of
saltext-raft installs.
"""

from __future__ import annotations

import pytest

try:
    import saltfactories  # noqa: F401  (only to fail early with a clear message)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "saltext_raft.testing.plugin needs pytest-salt-factories: pip install 'saltext-raft[tests]'"
    ) from exc

from saltext_raft.testing.cluster import START_TIMEOUT
from saltext_raft.testing.cluster import RaftCluster


@pytest.fixture
def raft_cluster_factory(salt_factories, tmp_path_factory):
    """A function that builds a :class:`RaftCluster` of ``size`` masters on 127.0.0.1..N and
    starts them (``start=False`` to start them yourself); its other keyword arguments go to
    :class:`RaftCluster` (``cache``, ``keys_cache_driver``, ``engine``, ``master_config``).
    Every daemon of every cluster it built is stopped when the test ends."""
    clusters: list[RaftCluster] = []

    def make(size: int = 3, *, start: bool = True, start_timeout=START_TIMEOUT, **kwargs):
        cluster = RaftCluster(
            salt_factories, tmp_path_factory.mktemp("raft-secret"), size, **kwargs
        )
        clusters.append(cluster)
        if start:
            cluster.start(timeout=start_timeout)
        return cluster

    yield make
    for cluster in reversed(clusters):
        cluster.close()
