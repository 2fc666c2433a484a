"""State module ``raft``: declare the masters of a saltext-raft cluster.

A thin loader module over :mod:`saltext_raft.statelogic`, which plans each state from
``raft.members`` and carries it out through the ``raft`` runners. Run it on a master with
``salt-run state.orchestrate``: the runners ask this master's ``raft`` engine, which forwards
membership changes to the leader. Every state reads the membership first and changes only
what differs (idempotent); with ``test=True`` it only reports what it would change.

.. code-block:: yaml

    127.0.0.4:
      raft.member:
        - address: 127.0.0.4:4606
        - role: voter

    127.0.0.5:
      raft.absent

    127.0.0.1:
      raft.leader

A state fails (``result: False``) without changing anything when the cluster has no leader
within ``wait`` seconds (no quorum), when a membership change stays uncommitted for ``wait``
seconds (a change already pending), or when what it declares cannot be reached one master at a
time (a new address for a member, removing the last voter or the master the orchestration runs
on, leadership on a master that is no voter). docs/states.md has a complete orchestration.
"""

from saltext_raft import statelogic as _logic
from saltext_raft.runtime.config import seconds_argument as _seconds
from saltext_raft.runtime.errors import Rejected as _Rejected

__virtualname__ = "raft"


def __virtual__():
    return __virtualname__


def _cluster(wait):
    def call(op, **kwargs):
        return __salt__["saltutil.runner"](f"raft.{op}", kwarg=kwargs)  # pylint: disable=undefined-variable

    return _logic.Cluster(call, _seconds(wait, "wait"))


def _refused(name, exc):
    """A state whose arguments are refused: nothing is asked, nothing changes."""
    return {"name": name, "result": False, "changes": {}, "comment": f"raft: {exc}"}


def _test():
    return bool(__opts__.get("test", False))  # pylint: disable=undefined-variable


def member(name, address, role="voter", wait=120):
    """The master ``name`` is a member of the cluster at ``address`` with ``role``.

    name
        The master's node id (its ``id``, or the engine's ``node_id``).
    address
        ``host:port`` of its raft port. A member's address cannot change in place.
    role
        ``voter`` (default) or ``learner``. A master that is no member is added as a learner;
        as a voter it is then promoted by the leader once it has caught up (the state waits for
        that, so its master must be running). A voter declared a learner is demoted (and then
        stays a learner); a demoted learner declared a voter is promoted.
    wait
        Seconds to wait for a leader and a committed membership before planning, and again for
        the change to show on this master (a promotion included). Default 120.
    """
    try:
        cluster = _cluster(wait)
    except _Rejected as exc:
        return _refused(name, exc)
    return _logic.member(cluster, name, address, role, test=_test())


def absent(name, wait=60):
    """The master ``name`` is no member of the cluster: it is removed (its gate closes; stop
    it afterwards). Refused for the last voter and for the master the orchestration runs on.

    wait
        Seconds to wait for a leader and a committed membership, and for the removal to show
        on this master. Default 60.
    """
    try:
        cluster = _cluster(wait)
    except _Rejected as exc:
        return _refused(name, exc)
    return _logic.absent(cluster, name, test=_test())


def leader(name, wait=60):
    """The master ``name`` (a voter) is the leader: leadership is transferred to it if another
    master leads.

    wait
        Seconds to wait for a leader and a committed membership, and for the new leader to show
        on this master. Default 60.
    """
    try:
        cluster = _cluster(wait)
    except _Rejected as exc:
        return _refused(name, exc)
    return _logic.leader(cluster, name, test=_test())
