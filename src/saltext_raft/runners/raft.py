"""Runner ``raft``: inspect and change a saltext-raft cluster from a master.

A thin loader module over :mod:`saltext_raft.master.control`: each function sends one
request to the ``raft`` engine of *this* master over the master event bus and renders the reply.
On failure (engine not running, no reply in time, operation refused) the returned mapping has
``result: False``, an ``error`` message and ``retcode: 1``, so ``salt-run`` exits non-zero.

.. code-block:: bash

    salt-run raft.members
    salt-run raft.members --out json
    salt-run raft.add node=m4 address=10.0.0.4:4606
    salt-run raft.remove node=m2
    salt-run raft.import_cache          # once, after switching the masters to cache: raft

``import_cache`` is the exception to the above: it writes through this master's ``raft`` cache
driver (the engine's cache socket), as any cache write does.
"""

from saltext_raft.core.nodeid import node_id_problem as _node_id_problem
from saltext_raft.master import control as _control
from saltext_raft.runtime.config import seconds_argument as _seconds
from saltext_raft.runtime.errors import Rejected as _Rejected

__virtualname__ = "raft"


def __virtual__():
    return __virtualname__


def _refused_node(op, node):
    """An error mapping if ``node`` is no valid node id (docs/security.md, "Node ids")."""
    problem = _node_id_problem(str(node) if isinstance(node, (int, float)) else node)
    if problem:
        return {"result": False, "error": f"raft.{op}: {problem}", "retcode": 1}
    return None


def _flag(value) -> bool:
    """A yes/no argument: ``salt-run`` hands over a bool, salt-api and ``salt.client`` the
    text as the caller wrote it, where ``bool("False")`` would be True."""
    return str(value).strip().lower() in ("true", "1", "yes")


def _refused(runner, message):
    return {"result": False, "error": f"raft.{runner}: {message}", "retcode": 1}


def _call(op, timeout, runner=None, **args):
    """Send ``op`` to the engine; ``runner``: the function's name in errors if not ``op``."""
    try:
        timeout = _seconds(timeout)
    except _Rejected as exc:
        return _refused(runner or op, exc)
    args = {k: v for k, v in args.items() if v is not None}
    args["timeout"] = timeout
    try:
        client = _control.ControlClient(__opts__)  # pylint: disable=undefined-variable
        result = client.call(op, args, timeout=timeout + 3)
    except _control.ControlError as exc:
        return {"result": False, "error": f"raft.{runner or op}: {exc}", "retcode": 1}
    if not isinstance(result, dict):
        result = {"value": result}
    return result


def members(timeout=10):
    """Voters, learners, leader, term, and each member's match index, lag and last contact
    (the last three are known on the leader; elsewhere they are null).

    CLI Example: ``salt-run raft.members``
    """
    return _call("members", timeout)


def status(timeout=10):
    """This master's Raft node: role, term, indexes, membership, gate, transport counters.

    CLI Example: ``salt-run raft.status``
    """
    return _call("status", timeout)


def leader(timeout=10):
    """The current leader and term as this master sees them.

    CLI Example: ``salt-run raft.leader``
    """
    return _call("leader", timeout)


def add(node, address, timeout=30):
    """Add a master as a learner (it is promoted to voter once it has caught up): the
    ``add_learner`` operation, under the short name operators type.

    node
        The new master's id (its ``id``, or the engine's ``node_id``).
    address
        ``host:port`` of the new master's raft port.

    CLI Example: ``salt-run raft.add node=m4 address=10.0.0.4:4606``
    """
    return _refused_node("add", node) or _call(
        "add_learner", timeout, runner="add", node=str(node), address=address
    )


def promote(node, timeout=30):
    """Promote a learner to voter.

    CLI Example: ``salt-run raft.promote node=m4``
    """
    return _refused_node("promote", node) or _call("promote", timeout, node=str(node))


def demote(node, timeout=30):
    """Demote a voter to learner (it keeps the log but no longer votes).

    CLI Example: ``salt-run raft.demote node=m2``
    """
    return _refused_node("demote", node) or _call("demote", timeout, node=str(node))


def remove(node, timeout=30):
    """Remove a master from the cluster. Its request gate closes.

    The engine refuses an invalid node id unless it is a member already (an id committed by a
    version that did not check ids can still be removed).

    CLI Example: ``salt-run raft.remove node=m2``
    """
    if isinstance(node, bool) or not isinstance(node, (str, int, float)) or not str(node).strip():
        return _refused("remove", f"node must name the master to remove (got {node!r})")
    return _call("remove", timeout, node=node)


def transfer_leader(node, timeout=30):
    """Hand leadership to another voter.

    CLI Example: ``salt-run raft.transfer_leader node=m2``
    """
    return _refused_node("transfer_leader", node) or _call(
        "transfer_leader", timeout, node=str(node)
    )


def reload_secrets(timeout=30):
    """Re-read this master's ``secret_file`` and ``accept_secret_files`` and switch its Raft
    transport to them, without a restart: one step of a secret rotation (docs/operations.md,
    "Rotating the cluster secret"). Run it on every master after each step.

    CLI Example: ``salt-run raft.reload_secrets``
    """
    return _call("reload_secrets", timeout)


def snapshot(timeout=30):
    """Take a snapshot of this master's state machine now and compact its log.

    CLI Example: ``salt-run raft.snapshot``
    """
    return _call("snapshot", timeout)


def backup(path=None, overwrite=False, timeout=120):
    """Write a backup of the cluster's state, as this master has applied it, to a file in the
    engine's backup directory on this master (engine option ``backup_dir``, default
    ``<cachedir>/saltext_raft_backups``): a snapshot of the state machine, the replicated cache
    included, and the membership, in one file authenticated with the cluster secret. ``path``:
    a file name in that directory, or an absolute path of a file directly in it (default:
    ``<cluster>-<node>-<UTC time>.bak``); anything else is refused. Restore it with
    ``python -m saltext_raft recover --restore <path>`` (docs/operations.md).

    CLI Example: ``salt-run raft.backup path=salt-raft.bak``
    """
    if path is None:
        path = ""
    elif isinstance(path, bool) or not isinstance(path, (str, int, float)):
        # salt-run reads the value as YAML: path=2026 is a number, path=[1] a list
        return _refused("backup", f"path must be a file name (got {path!r})")
    return _call("backup", timeout, path=str(path), overwrite=_flag(overwrite))


def import_cache(banks=None, source="localfs", overwrite=False, workers=8):
    """Copy an existing Salt cache into the replicated one (``cache: raft``), through the
    cluster, so that every master has it. Run once, on one master, after switching every master
    to ``cache: raft`` with the engine running. Keys the replicated cache already has, or gets
    while the import runs, are kept (they are newer) unless ``overwrite=True``; running it
    again copies nothing more.

    ``banks``: comma-separated banks to copy, sub-banks included (default: the minion data
    banks present: ``grains``, ``pillar``, ``mine`` on Salt 3008, ``minions`` on 3007).
    ``source``: the cache driver to copy from (default ``localfs``, in this master's cachedir).
    ``workers``: writes in flight at a time (1 to 64).

    CLI Example: ``salt-run raft.import_cache`` or ``salt-run raft.import_cache banks=mine``
    """
    from salt.exceptions import SaltCacheError  # pylint: disable=import-outside-toplevel

    from saltext_raft.replicated import importer  # pylint: disable=import-outside-toplevel

    if isinstance(banks, str):
        banks = [b.strip() for b in banks.split(",") if b.strip()]
    elif banks is not None and not isinstance(banks, (list, tuple)):
        return _refused(
            "import_cache", f"banks must be bank names, comma-separated (got {banks!r})"
        )
    if isinstance(workers, str):  # salt-api's text; anything else goes as it came
        try:
            workers = int(workers.strip())
        except ValueError:
            pass
    try:
        report = importer.import_cache(
            __opts__,  # pylint: disable=undefined-variable
            banks,
            source,
            overwrite=_flag(overwrite),
            workers=workers,
        )
    except (importer.ImportRefused, SaltCacheError, ValueError) as exc:
        return {"result": False, "error": f"raft.import_cache: {exc}", "retcode": 1}
    report["result"] = not report["unreadable"]
    if report["unreadable"]:
        report["retcode"] = 1
    return report


def sync_roots(test=False):
    """Replicate this master's ``file_roots`` / ``pillar_roots`` trees (the first directory of
    each environment) to every master through the cluster: new and changed files are sent in
    chunks (only content the cluster does not have yet), files gone from this tree are deleted
    on the others. Needs ``raft_roots`` on every master. Reports the paths ``added``,
    ``changed`` and ``deleted`` and what was sent; ``test=True`` reports without sending.
    A tree holding anything that cannot be replicated (a symbolic link, a FIFO, a file over
    ``raft_roots_max_file_bytes``) is refused as a whole, each path listed with the reason,
    and nothing is sent (docs/roots.md).

    CLI Example: ``salt-run raft.sync_roots`` or ``salt-run raft.sync_roots test=True``
    """
    from salt.exceptions import SaltCacheError  # pylint: disable=import-outside-toplevel

    from saltext_raft.roots import config as rootsconfig  # pylint: disable=import-outside-toplevel
    from saltext_raft.roots import sync  # pylint: disable=import-outside-toplevel

    try:
        report = sync.sync_from_opts(
            __opts__,  # pylint: disable=undefined-variable
            test=_flag(test),
        )
    except sync.SyncRefused as exc:
        ret = {"result": False, "error": f"raft.sync_roots: {exc}", "retcode": 1}
        if exc.refused:
            ret["refused"] = dict(exc.refused)
        return ret
    except (rootsconfig.RootsConfigError, SaltCacheError, OSError) as exc:
        return {"result": False, "error": f"raft.sync_roots: {exc}", "retcode": 1}
    report["result"] = True
    return report
