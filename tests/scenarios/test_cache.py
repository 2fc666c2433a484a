"""The ``raft`` cache driver on real masters (pytest-salt-factories), Salt 3007 and 3008.

One three-master cluster (127.0.0.1-3, ``cache: raft`` on every master, no shared filesystem:
each master has its own root_dir, cachedir and pki_dir) is shared by the whole module; the tests
run in file order and the last ones stop masters. A minion is attached to master 1 only.

Layouts of the local copies (``raft_cache_backend``): by default one run, ``mixed``, where
masters 1 and 3 keep the shipped ``sqlite`` layout and master 2 ``localfs``, as in a cluster
half-way through an upgrade. Every write crosses layouts, and each layout takes part in the
recovery tail (master 1 forced into a new cluster and master 3 restored from a backup:
``sqlite``; master 2 rebuilt empty: ``localfs``). One cluster instead of one per layout saves
a cluster start and the module's real-master time (about 2.5 of CI's ~45 minutes).
``SALTEXT_RAFT_SCENARIO_LAYOUTS=localfs,sqlite`` runs the module once per named layout instead
(every master in that layout; ``nox -s scenario-layouts``).

Every test runs alone (``pytest -k``) as well as in file order. The destructive tail builds the
situation it needs when no earlier test left it: :func:`ensure_backup` (a backup older than the
degraded write), :func:`ensure_quorum_lost` (masters 3 then 2 stopped after one write with
master 3 down) and :func:`ensure_recovered` (master 1 made the only voter offline). These never
recover a master while another master of the old cluster runs (that would build a split brain):
what they cannot build from the state they find, they refuse, naming the missing precondition
(tests/preconditions.py).

Every wait is bounded and says what it waited for; daemons are stopped by their factories
(by PID).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

import pytest
import salt.cache
import yaml

from saltext_raft.replicated.config import BACKENDS
from saltext_raft.replicated.config import DEFAULT_BACKEND
from saltext_raft.testing.cluster import RaftCluster
from tests.childpython import run_python
from tests.preconditions import require
from tests.scenarios.masters import IDS
from tests.scenarios.masters import run
from tests.scenarios.masters import start_cluster
from tests.scenarios.masters import wait_for

pytest.importorskip("saltfactories")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINION = "cache-minion-1"  # + the run: each run has its own minion (and minion pki_dir)

#: Runs of the module, comma-separated: a layout's name (every master in it) or ``mixed``.
LAYOUTS_ENV = "SALTEXT_RAFT_SCENARIO_LAYOUTS"
#: ``mixed``: each master's layout (the shipped default on master 1, which the minion uses).
MIXED = {IDS[0]: DEFAULT_BACKEND, IDS[1]: "localfs", IDS[2]: DEFAULT_BACKEND}


def layout_runs() -> list[str]:
    runs = [r.strip() for r in os.environ.get(LAYOUTS_ENV, "mixed").split(",") if r.strip()]
    unknown = sorted(set(runs) - set(BACKENDS) - {"mixed"})
    if unknown or not runs:
        raise pytest.UsageError(
            f"{LAYOUTS_ENV}={os.environ.get(LAYOUTS_ENV)!r}: name runs from"
            f" {', '.join(['mixed', *BACKENDS])}, comma-separated"
        )
    return runs


def layout_of(run_name: str, mid: str) -> str:
    return MIXED[mid] if run_name == "mixed" else run_name


def fetch(master, bank, key):
    rc, data, ret = run(master, "cache.fetch", bank, key)
    assert rc == 0, ret
    return data


def fetch_until(master, bank, key, want, timeout, what):
    """Wait until ``cache.fetch`` on ``master`` returns ``want``; the failure shows the last."""
    seen = []

    def check():
        rc, data, ret = run(master, "cache.fetch", bank, key)
        seen[:] = [(rc, data, ret.stdout[-300:], ret.stderr[-300:])]
        return rc == 0 and data == want

    try:
        wait_for(check, timeout, what)
    except BaseException:
        print(f"last cache.fetch on {master.id}: {seen}")
        raise


@pytest.fixture(scope="module", params=layout_runs())
def cluster(salt_factories, tmp_path_factory, request):
    """The cluster, once per run of :func:`layout_runs` (layouts of the local copies)."""
    with contextlib.ExitStack() as stack:
        masters = start_cluster(
            stack.enter_context(
                RaftCluster(
                    salt_factories,
                    tmp_path_factory.mktemp(f"cache-{request.param}-secret"),
                    cache="raft",
                    master_config=lambda mid: {
                        "raft_cache_timeout": 3,
                        "auto_accept": mid == IDS[0],
                        "raft_cache_backend": layout_of(request.param, mid),
                    },
                    name=f"cache-{request.param}",
                )
            )
        )
        m1 = masters[IDS[0]]
        minion = m1.salt_minion_daemon(
            f"{MINION}-{request.param}",
            overrides={"master": IDS[0], "master_port": m1.config["ret_port"]},
        )
        keep = os.environ.get("RAFT_CACHE_KEEP_DIR")  # debugging: keep the daemons' files
        if keep:
            stack.callback(
                shutil.copytree,
                os.path.dirname(m1.config["root_dir"]),
                keep,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.sock", "*.ipc"),
            )
        stack.enter_context(minion.started(start_timeout=60, max_start_attempts=1))
        yield masters, minion


def test_a_value_stored_on_master_1_is_read_on_masters_2_and_3(cluster):
    masters, _ = cluster
    m1 = masters[IDS[0]]
    rc, _, ret = run(m1, "cache.store", "scenario/shared", "greeting", '{"hello": "world"}')
    assert rc == 0, ret
    assert fetch(m1, "scenario/shared", "greeting") == {"hello": "world"}  # read-your-writes
    for mid in IDS[1:]:
        wait_for(
            lambda mid=mid: (
                fetch(masters[mid], "scenario/shared", "greeting") == {"hello": "world"}
            ),
            15,
            f"the value on {mid}",
        )
    # The operator's view of each local copy: its own layout, and no failed mirror writes.
    for mid in IDS:
        rc, status, ret = run(masters[mid], "raft.status")
        assert rc == 0, ret
        cache = status["cache"]
        assert cache["layout"] == masters[mid].config["raft_cache_backend"], (mid, cache)
        assert cache["mirror_counters"]["errors"] == 0, (mid, cache)
        assert cache["applied_commands"] >= 2, (mid, cache)


def backup_path(master) -> str:
    """Where this cluster's backup goes: master 1's backup directory (the engine's default,
    ``<cachedir>/saltext_raft_backups``; each run of the module, one per layout, has its own
    masters)."""
    return os.path.join(master.config["cachedir"], "saltext_raft_backups", "raft-scenario.bak")


def ensure_shared(masters):
    """``scenario/shared/greeting`` committed, as the first test writes it."""
    m1 = masters[IDS[0]]
    if fetch(m1, "scenario/shared", "greeting") != {"hello": "world"}:
        rc, _, ret = run(m1, "cache.store", "scenario/shared", "greeting", '{"hello": "world"}')
        assert rc == 0, ret


def ensure_backup(masters) -> str:
    """Master 1's backup file, written now (after ``scenario/shared``, before any degraded
    write) unless the backup test wrote it. Returns its path."""
    m1 = masters[IDS[0]]
    path = backup_path(m1)
    if os.path.isfile(path):
        return path
    provider = "test_a_backup_is_written_with_the_runner"
    require(
        all(m.is_running() for m in masters.values()),
        f"the backup file {path}, or all three masters running to write it",
        provider,
    )
    require(
        not fetch(m1, "scenario/degraded", "k"),
        f"the backup file {path}, or no scenario/degraded/k yet (a backup written now would"
        " hold the degraded write that the restore test expects it not to hold)",
        provider,
    )
    ensure_shared(masters)
    rc, _, ret = run(m1, "raft.backup", f"path={path}")
    assert rc == 0, ret
    return path


def lose_quorum(masters):
    """Stop master 3, commit ``scenario/degraded/k = one-down`` through master 1 and see it on
    master 2, then stop master 2: master 1 is left alone, without a quorum."""
    m1 = masters[IDS[0]]
    masters[IDS[2]].terminate()
    rc, _, ret = run(m1, "cache.store", "scenario/degraded", "k", "one-down")
    assert rc == 0, ret
    fetch_until(
        masters[IDS[1]], "scenario/degraded", "k", "one-down", 15, "the write on the survivor"
    )
    masters[IDS[1]].terminate()


QUORUM_TEST = "test_writes_succeed_with_one_master_down_and_fail_clearly_without_quorum"


def ensure_quorum_lost(masters):
    """Masters 2 and 3 stopped and master 1 running, after ``scenario/shared`` and the
    degraded write: as the quorum test leaves them, or brought there now from a running
    cluster."""
    m1, m2, m3 = (masters[mid] for mid in IDS)
    if m1.is_running() and not m2.is_running() and not m3.is_running():
        return
    require(
        all(m.is_running() for m in (m1, m2, m3)),
        "all three masters running (to lose the quorum from), or masters 2 and 3 stopped with"
        f" master 1 running (found: running {[m.id for m in (m1, m2, m3) if m.is_running()]})",
        QUORUM_TEST,
    )
    ensure_shared(masters)
    lose_quorum(masters)


RECOVERY_TEST = "test_the_last_master_recovers_with_force_new_cluster_and_keeps_the_cache"


def ensure_recovered(masters):
    """Master 1 recovered offline as a cluster without master 3 (as the recovery test leaves
    it, or recovered now after :func:`ensure_quorum_lost`); master 3 stopped."""
    m1, m3 = masters[IDS[0]], masters[IDS[2]]
    if m1.is_running() and not m3.is_running():
        rc, members, _ = run(m1, "raft.members")
        if rc == 0 and IDS[2] not in members["voters"]:
            return
    ensure_quorum_lost(masters)
    m1.terminate()
    recover_and_start(m1, "scenario/recovered", "alone")


def test_a_backup_is_written_with_the_runner(cluster):
    masters, _ = cluster
    m1 = masters[IDS[0]]
    path = backup_path(m1)
    rc, data, ret = run(m1, "raft.backup", f"path={path}")
    assert rc == 0, ret
    assert data["path"] == path and data["bytes"] == os.path.getsize(path), data
    assert data["snapshot_index"] > 0 and sorted(data["membership"]["voters"]) == IDS, data
    rc, data, ret = run(m1, "raft.backup", f"path={path}")  # never overwritten by accident
    assert rc != 0 and "exists; pass overwrite=True" in f"{ret.stdout}{ret.stderr}", ret


def test_a_localfs_cache_from_before_the_switch_is_imported_with_the_runner(cluster):
    masters, _ = cluster
    m1 = masters[IDS[0]]
    # What master 1 cached before it was switched to cache: raft: Salt's localfs files in its
    # cachedir, which the raft driver does not read.
    old = salt.cache.Cache(dict(m1.config, cache="localfs"))
    old.store("scenario_import/sub", "k", {"from": "localfs"})
    rc, data, ret = run(m1, "raft.import_cache", "banks=scenario_import")
    assert rc == 0, ret
    assert (data["imported"], data["unreadable"], data["result"]) == (1, 0, True), data
    for mid in IDS:
        fetch_until(
            masters[mid], "scenario_import/sub", "k", {"from": "localfs"}, 15, f"import on {mid}"
        )
    rc, data, ret = run(m1, "raft.import_cache", "banks=scenario_import")
    assert rc == 0 and (data["imported"], data["already_present"]) == (0, 1), ret


def test_minion_data_cached_on_master_1_is_visible_on_the_others(cluster):
    masters, minion = cluster
    call = minion.salt_call_cli(timeout=60)
    ret = call.run("saltutil.sync_grains")
    assert ret.returncode == 0, ret
    ret = call.run("pillar.items")  # the master caches grains + pillar in minions/<id>/data
    assert ret.returncode == 0, ret
    ret = call.run("mine.send", "test.ping")  # the master stores minions/<id>/mine
    assert ret.returncode == 0, ret
    for mid in IDS:
        grains = wait_for(
            lambda mid=mid: minion_grains(masters[mid], minion.id),
            30,
            f"{minion.id}'s grains in the cache on {mid}",
        )
        assert grains["id"] == minion.id
        mine = wait_for(
            lambda mid=mid: minion_mine(masters[mid], minion.id),
            30,
            f"{minion.id}'s mine data on {mid}",
        )
        assert "test.ping" in mine


def minion_grains(master, mid):
    # Salt 3008 keeps minion data in banks grains/, pillar/, mine/ (key: minion id); 3007 in
    # minions/<id> (keys data = {grains, pillar}, mine).
    grains = fetch(master, "grains", mid)
    if not grains:
        grains = (fetch(master, f"minions/{mid}", "data") or {}).get("grains")
    return grains


def minion_mine(master, mid):
    return fetch(master, "mine", mid) or fetch(master, f"minions/{mid}", "mine")


def test_writes_succeed_with_one_master_down_and_fail_clearly_without_quorum(cluster):
    masters, _ = cluster
    m1 = masters[IDS[0]]
    down = [mid for mid in IDS if not masters[mid].is_running()]
    # Only the recovery tests after this one stop masters, and nothing restarts a master of a
    # recovered cluster into the old one.
    require(not down, f"all three masters running (stopped: {down})")
    lose_quorum(masters)  # master 1 is now alone: no quorum
    t0 = time.monotonic()
    rc, _, ret = run(m1, "cache.store", "scenario/degraded", "k", "alone")
    elapsed = time.monotonic() - t0
    out = f"{ret.stdout}\n{ret.stderr}"
    assert "raft cache: store scenario/degraded/k failed" in out, out
    assert "quorum" in out, out
    assert elapsed < 30, f"the refusal took {elapsed:.1f}s (raft_cache_timeout is 3s)"
    # reads keep working from the local copy, and show the last committed value
    assert fetch(m1, "scenario/degraded", "k") == "one-down"


def recover_and_start(master, bank, value, *args):
    """Run the offline recovery (``args``: e.g. ``--restore FILE``) on the stopped ``master``,
    start it, and wait until it commits a cache write alone. Returns the command's result."""
    proc = run_python(
        [
            "-m", "saltext_raft", "recover", "-c", master.config_dir,
            *args, "--force-new-cluster",
        ],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    master.start(start_timeout=120)
    wait_for(
        lambda: run(master, "cache.store", bank, "k", value)[0] == 0,
        60,
        f"a cache write on {master.id} alone after the recovery",
        interval=0.5,
    )
    return proc


def test_the_last_master_recovers_with_force_new_cluster_and_keeps_the_cache(cluster):
    """Masters 2 and 3 are lost for good (stopped by the test before, or here by
    :func:`ensure_quorum_lost` when this test runs alone). Master 1, stopped,
    is made the only voter offline; started again it serves writes alone and still has every
    value the cluster committed."""
    masters, _ = cluster
    m1 = masters[IDS[0]]
    ensure_quorum_lost(masters)
    require(
        not masters[IDS[1]].is_running() and not masters[IDS[2]].is_running(),
        "masters 2 and 3 stopped (recovering master 1 beside them would split the cluster)",
        QUORUM_TEST,
    )
    require(fetch(m1, "scenario/degraded", "k") == "one-down", "scenario/degraded/k", QUORUM_TEST)
    shared = "test_a_value_stored_on_master_1_is_read_on_masters_2_and_3"
    require(fetch(m1, "scenario/shared", "greeting"), "scenario/shared/greeting", shared)
    m1.terminate()
    proc = recover_and_start(m1, "scenario/recovered", "alone")
    assert "Written. Next:" in proc.stdout, proc.stdout
    rc, members, ret = run(m1, "raft.members")
    assert rc == 0, ret
    assert members["voters"] == [IDS[0]] and members["leader"] == IDS[0], members
    assert fetch(m1, "scenario/degraded", "k") == "one-down"
    assert fetch(m1, "scenario/shared", "greeting") == {"hello": "world"}
    assert fetch(m1, "scenario/recovered", "k") == "alone"


def test_a_lost_master_rebuilt_empty_rejoins_the_recovered_master(cluster):
    """The runbook's last step: master 2 comes back with its Raft data removed and
    ``join: true``; it joins master 1 as a learner, is promoted and reads the cache."""
    masters, _ = cluster
    m1, m2 = masters[IDS[0]], masters[IDS[1]]
    ensure_recovered(masters)
    require(not m2.is_running(), "master 2 stopped", RECOVERY_TEST)
    rc, members, _ = run(m1, "raft.members")
    require(
        rc == 0 and members["voters"] == [IDS[0]],
        "master 1 running as the only voter (recovered)",
        RECOVERY_TEST,
    )
    shutil.rmtree(os.path.join(m2.config["cachedir"], "saltext_raft"))
    with open(m2.config_file, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["engines"][0]["raft"]["join"] = True
    with open(m2.config_file, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh)
    m2.start(start_timeout=120)

    def m2_is_a_voter():
        rc, members, _ = run(m1, "raft.members")
        return rc == 0 and IDS[1] in members["voters"]

    wait_for(m2_is_a_voter, 90, "master 2 to join master 1 and be promoted")
    fetch_until(m2, "scenario/recovered", "k", "alone", 30, "the recovered value on master 2")
    assert fetch(m2, "scenario/degraded", "k") == "one-down"
    rc, _, ret = run(m2, "cache.store", "scenario/rejoined", "k", "two")  # a quorum of two
    assert rc == 0, ret
    fetch_until(m1, "scenario/rejoined", "k", "two", 15, "master 2's write on master 1")


def test_a_backup_restored_on_a_wiped_master_serves_the_state_it_holds(cluster):
    """Master 3 (stopped since the quorum test) is wiped and restored from the backup taken
    after the first test: alone, it serves the values of that moment and none written later.
    Master 1 (recovered) and master 2 (rejoined to it) form a cluster without master 3, so
    nothing running counts master 3 as a member while it is restored."""
    masters, _ = cluster
    m3 = masters[IDS[2]]
    backup = ensure_backup(masters)
    ensure_recovered(masters)
    require(not m3.is_running(), "master 3 stopped", QUORUM_TEST)
    shutil.rmtree(os.path.join(m3.config["cachedir"], "saltext_raft"))
    recover_and_start(m3, "scenario/restored", "three", "--restore", backup)
    assert fetch(m3, "scenario/shared", "greeting") == {"hello": "world"}  # in the backup
    assert not fetch(m3, "scenario/degraded", "k")  # written after the backup
    rc, members, ret = run(m3, "raft.members")
    assert rc == 0 and members["voters"] == [IDS[2]], ret
