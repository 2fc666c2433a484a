"""Execution module ``raft``: health of the saltext-raft node on this host's Salt master.

Runs on a minion that lives on a master host. It reads the master's readiness file (written by
the ``raft`` engine, refreshed every ``readiness_interval``), so it needs no access to the
master's event bus. A missing or stale file means the engine is not running.

.. code-block:: bash

    salt-call raft.is_ready
    salt 'master*' raft.status
"""

from saltext_raft.master import health as _health

__virtualname__ = "raft"


def __virtual__():
    return __virtualname__


def status(master_config="/etc/salt/master"):
    """The raft node's state as the master's engine last published it: ready, reason, role,
    leader, term, voters, learners, and whether the information is fresh.

    master_config
        Path to the master's configuration file (default ``/etc/salt/master``).

    CLI Example: ``salt-call raft.status``
    """
    return _health.status(_health.master_opts(master_config, __opts__))  # pylint: disable=undefined-variable


def is_leader(master_config="/etc/salt/master"):
    """True if this host's master is the raft leader (and its engine is alive).

    CLI Example: ``salt-call raft.is_leader``
    """
    return _health.is_leader(_health.master_opts(master_config, __opts__))  # pylint: disable=undefined-variable


def is_ready(master_config="/etc/salt/master"):
    """True if this host's master serves minion requests (its request gate is open).

    CLI Example: ``salt-call raft.is_ready``
    """
    return _health.is_ready(_health.master_opts(master_config, __opts__))  # pylint: disable=undefined-variable
