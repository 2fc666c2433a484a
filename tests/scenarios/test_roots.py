"""Replicated roots (``raft_roots``) on real masters, Salt 3007 and 3008: each master has its
own ``file_roots`` and ``pillar_roots`` (nothing shared), the trees of master 1 are synced with
``salt-run raft.sync_roots``, and a minion attached to master 3 gets the files and the pillar
from master 3.

Self-contained on purpose (the nothing-shared scenario module may take it in later): the
cluster is the shipped :class:`~saltext_raft.testing.cluster.RaftCluster`, each master's roots
are directories of its own under the test's temporary directory. Every wait is bounded and says
what it waited for; every daemon is stopped by its factory (by PID).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import salt.version

from saltext_raft.testing.cluster import RaftCluster
from tests.scenarios.masters import wait_for

pytest.importorskip("saltfactories")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINION = "roots-minion-1"


def _write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    """Three masters with ``raft_roots: true``; each keeps the ``file_roots`` and
    ``pillar_roots`` pytest-salt-factories gives it under its own root_dir (``base`` and
    ``prod`` environments)."""
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(
            RaftCluster(
                salt_factories,
                tmp_path_factory.mktemp("roots-secret"),
                3,
                master_config={"raft_roots": True},
            )
        )
        c.roots = {
            mid: {
                kind: c.masters[mid].config[f"{kind}_roots"]["base"][0]
                for kind in ("file", "pillar")
            }
            for mid in c.ids
        }
        dirs = [d for mid in c.ids for d in c.roots[mid].values()]
        assert len(set(dirs)) == len(dirs)  # nothing shared
        c.start()
        c.wait_gates_open()
        yield c


def sync(c, mid, *args):
    data = c.salt_run(mid, "raft.sync_roots", *args, timeout=120)
    assert isinstance(data, dict) and data.get("result") is True, data
    return data


def served_by_master_3(c, minion, path):
    """What ``cp.get_file_str`` on the minion attached to master 3 returns for ``path``."""
    ret = minion.salt_call_cli(timeout=60).run("cp.get_file_str", f"salt://{path}", _timeout=60)
    return ret.data if ret.returncode == 0 else ("error", ret.stdout[-300:], ret.stderr[-300:])


def test_a_file_synced_on_master_1_is_served_by_master_3_and_a_delete_propagates(cluster):
    c = cluster
    first, second, third = c.ids
    src = c.roots[first]
    _write(os.path.join(src["file"], "roots", "hello.txt"), "hello from master 1\n")
    _write(os.path.join(src["file"], "roots", "gone.txt"), "soon deleted\n")
    _write(os.path.join(src["pillar"], "top.sls"), "base:\n  '*':\n    - data\n")
    _write(os.path.join(src["pillar"], "data.sls"), "roots_value: replicated pillar\n")

    preview = sync(c, first, "test=True")
    assert preview["test"] is True and len(preview["added"]) == 4
    report = sync(c, first)
    assert report["test"] is False
    assert sorted(report["added"]) == [
        "file_roots/base/roots/gone.txt",
        "file_roots/base/roots/hello.txt",
        "pillar_roots/base/data.sls",
        "pillar_roots/base/top.sls",
    ]
    assert sync(c, first)["sent_bytes"] == 0  # the second sync sends nothing

    minion = c.minion(third, MINION)
    wait_for(
        lambda: served_by_master_3(c, minion, "roots/hello.txt") == "hello from master 1\n",
        60,
        "master 3 to serve roots/hello.txt as written on master 1",
    )
    # Salt 3008 masks pillar values in output unless asked not to; 3007 has no such argument
    unmask = ["unmask=True"] if salt.version.__saltstack_version__.major >= 3008 else []
    ret = minion.salt_call_cli(timeout=60).run("pillar.get", "roots_value", *unmask, _timeout=60)
    assert ret.returncode == 0 and ret.data == "replicated pillar", ret
    assert _read(os.path.join(c.roots[second]["file"], "roots", "gone.txt")) == "soon deleted\n"

    os.unlink(os.path.join(src["file"], "roots", "gone.txt"))
    assert sync(c, first)["deleted"] == ["file_roots/base/roots/gone.txt"]
    wait_for(
        lambda: served_by_master_3(c, minion, "roots/gone.txt") in ("", False),
        60,
        "master 3 to stop serving roots/gone.txt",
    )
    for mid in (second, third):
        wait_for(
            lambda mid=mid: _read(os.path.join(c.roots[mid]["file"], "roots", "gone.txt")) is None,
            30,
            f"roots/gone.txt removed from {mid}'s file_roots",
        )


def test_a_master_down_during_the_sync_gets_the_change_on_restart(cluster):
    c = cluster
    first, second, _ = c.ids
    path = os.path.join(c.roots[first]["file"], "roots", "hello.txt")
    c.stop(second)
    _write(path, "changed while master 2 was down\n")
    report = sync(c, first)  # masters 1 and 3 are a quorum
    assert report["changed"] == ["file_roots/base/roots/hello.txt"]
    target = os.path.join(c.roots[second]["file"], "roots", "hello.txt")
    assert _read(target) != "changed while master 2 was down\n"
    c.restart(second)
    wait_for(
        lambda: _read(target) == "changed while master 2 was down\n",
        90,
        "master 2 to write the change into its file_roots after its restart",
    )
    status = c.salt_run(second, "raft.status")
    assert status["roots"]["last_pass"]["counts"]["failed"] == 0, status["roots"]
