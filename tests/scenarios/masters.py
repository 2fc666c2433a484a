"""What the scenario modules add to the shipped plugin's
:class:`~saltext_raft.testing.cluster.RaftCluster` (which builds, starts and stops their three
masters on 127.0.0.1-3, ``cache: raft`` unless a module says otherwise).

Lives here: the scenarios' own readiness check (:func:`start_cluster`: a first cache write
through master 1 has committed; :func:`start_masters`, the same for a module that only states
its masters' configuration), their ``salt-run`` wrapper that keeps a bare string answer, a
wait that fails the test, and :func:`starting` (a minion started while its key is accepted).
Must not live here: building, starting or stopping masters (the plugin's ``RaftCluster``).
"""

from __future__ import annotations

import contextlib
import threading

import pytest

from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import master_ids
from saltext_raft.testing.cluster import run_json
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until

IDS = master_ids(3)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    try:
        return wait_until(predicate, timeout, what, interval)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def run(master, *args, timeout=60):
    """``salt-run --out json`` on ``master``: (returncode, data or None, raw result); a bare
    string (printed without JSON quotes) is returned as that string."""
    rc, data, ret = run_json(master, *args, timeout=timeout)
    if data is None and ret.stdout:
        data = ret.stdout.strip()
    return rc, data, ret


def start_cluster(cluster) -> dict:
    """Start every master of ``cluster`` (all before any wait: a master alone has no quorum)
    and return ``{id: factory}`` once a first cache write through master 1 has committed."""
    cluster.start()
    wait_for(
        lambda: run(cluster.masters[IDS[0]], "cache.store", "scenario", "ready", "yes")[0] == 0,
        60,
        "a first cache write to commit",
        interval=0.5,
    )
    return cluster.masters


def start_masters(
    salt_factories, tmp_path_factory, stack, prefix: str, config, **factory_kwargs
) -> dict:
    """:func:`start_cluster` on a ``RaftCluster`` of three masters with ``cache: raft``,
    ``config`` (a dict, or a function of the master id) over their configuration and
    ``factory_kwargs`` to pytest-salt-factories; the cluster is entered into ``stack``."""
    cluster = RaftCluster(
        salt_factories,
        tmp_path_factory.mktemp(f"{prefix}-secret"),
        len(IDS),
        cache="raft",
        master_config=config,
        factory_kwargs=factory_kwargs,
        name=prefix,
    )
    return start_cluster(stack.enter_context(cluster))


@contextlib.contextmanager
def starting(minion, timeout=120):
    """Start ``minion`` in a thread: it finishes starting only once its key is accepted, which
    the test does meanwhile. ``join()`` waits for the start and returns its errors (``["not
    running"]`` if the minion is not running then). If the block raises, the minion is stopped
    by its factory (PID); otherwise stopping it is the caller's."""
    errors = []

    def target():
        try:
            minion.start(start_timeout=timeout, max_start_attempts=1)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"start-{minion.id}", daemon=True)
    thread.start()

    def join():
        thread.join(timeout + 30)
        return errors or ([] if minion.is_running() else ["not running"])

    try:
        yield join
    except BaseException:
        minion.terminate()
        raise
