"""``python -m saltext_raft recover`` on a master's real Raft storage (Salt's
localfs cache): a dry run by default, the recovery with --force-new-cluster, and clear refusals
(engine running, engine not configured, no config)."""

from __future__ import annotations

import json
import os

import pytest
import salt.config

from saltext_raft.core import ConfChange
from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import EntryKind
from saltext_raft.core import HardState
from saltext_raft.core import Membership
from saltext_raft.core import Snapshot
from saltext_raft.core import SnapshotMeta
from saltext_raft.master.config import from_opts
from saltext_raft.master.fileutil import ProcessLock
from saltext_raft.master.recover import write_backup
from saltext_raft.master.settings import engine_options
from saltext_raft.replicated.config import storage_opts
from saltext_raft.runtime.backup import Backup
from saltext_raft.storage.store import open_store
from tests.childpython import run_python

PEERS = {"m1": "127.0.0.1:47001", "m2": "127.0.0.1:47002", "m3": "127.0.0.1:47003"}


#: Every master of these tests shares this secret (the backup file is authenticated with it).
SECRET_HEX = "5e" * 32


def write_config(root, engine: bool = True) -> None:
    lines = [
        f"root_dir: {root}",
        f"cachedir: {root}/cache",
        f"pki_dir: {root}/pki",
        f"sock_dir: {root}/sock",
        f"log_file: {root}/master.log",
        "id: m1",
    ]
    if engine:
        secret = os.path.join(root, "raft.secret")
        with open(secret, "w", encoding="utf-8") as fh:
            fh.write(SECRET_HEX)
        os.chmod(secret, 0o600)
        lines += ["engines:", "  - raft:", f"      secret_file: {secret}", "      peers:"]
        lines += [f"        {nid}: {addr}" for nid, addr in PEERS.items()]
    with open(os.path.join(root, "master"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def master_opts(root) -> dict:
    return salt.config.master_config(os.path.join(root, "master"))


def engine_cfg(opts):
    return from_opts(opts, engine_options(opts), load_secret=False)


def load(opts):
    cfg = engine_cfg(opts)
    store = open_store(storage_opts(opts), cfg.cluster_id, cfg.node_id)
    try:
        return store.load()
    finally:
        store.close()


@pytest.fixture
def master(tmp_path):
    """A stopped master m1 of m1-m3 whose log holds 5 entries, 3 of them known committed."""
    root = str(tmp_path)
    write_config(root)
    opts = master_opts(root)
    cfg = engine_cfg(opts)
    founding = Membership(voters=frozenset(PEERS), addresses=tuple(sorted(PEERS.items())))
    entries = [
        Entry(1, 1, EntryKind.CONF, ConfChange(ConfOp.BOOTSTRAP, "", result=founding).encode()),
        *(Entry(2, i, data=b"w%d" % i) for i in range(2, 6)),
    ]
    store = open_store(storage_opts(opts), cfg.cluster_id, cfg.node_id)
    try:
        store.load()
        store.save(HardState(2, "m2", 3), entries)
    finally:
        store.close()
    return root


def recover(root, *args):
    return run_python(["-m", "saltext_raft", "recover", "-c", root, *args], timeout=120)


def test_a_dry_run_reports_and_writes_nothing(master):
    before = load(master_opts(master))
    proc = recover(master)
    assert proc.returncode == 0, proc.stderr
    assert "voters now:   m1, m2, m3" in proc.stdout
    assert "last index 5, commit index 3, 2 entries after it that count as committed" in proc.stdout
    assert "Dry run: nothing was written" in proc.stdout
    assert load(master_opts(master)) == before


def test_force_new_cluster_makes_this_master_the_only_voter(master):
    proc = recover(master, "--force-new-cluster", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["written"] is True and report["node_id"] == "m1" and report["warnings"] == []
    assert report["membership"] == {
        "voters": ["m1"],
        "learners": [],
        "addresses": {"m1": PEERS["m1"]},
    }
    assert report["previous_commit_index"] == 3 and report["commit_index"] == 6
    assert report["last_index"] == 5 and report["entries_committed_by_recovery"] == 2
    assert any("secret_file" in step for step in report["next_steps"])
    hs, snap, entries = load(master_opts(master))
    assert snap is None and [e.index for e in entries] == [1, 2, 3, 4, 5, 6]
    last = ConfChange.decode(entries[-1].data)
    assert last.op is ConfOp.FORCE_NEW_CLUSTER and last.result.voters == {"m1"}
    assert hs == HardState(3, "m1", 6)
    # Text output of the same command names what to do next.
    text = recover(master, "--force-new-cluster", "--address", "127.0.0.1:47009")
    assert text.returncode == 0, text.stderr
    assert "Written. Next:" in text.stdout and "join: true" in text.stdout
    assert load(master_opts(master)).entries[-1].index == 7  # a second run appends again


def test_refuses_while_the_engine_holds_the_lock(master):
    before = load(master_opts(master))
    lock = ProcessLock(engine_cfg(master_opts(master)).lock_path).acquire()
    try:
        proc = recover(master, "--force-new-cluster")
    finally:
        lock.release()
    assert proc.returncode == 2
    assert f"the raft engine is running on this master (process {os.getpid()}" in proc.stderr
    assert "stop salt-master first" in proc.stderr
    assert load(master_opts(master)) == before


def test_refuses_without_the_engine_or_without_a_config(tmp_path):
    write_config(str(tmp_path), engine=False)
    proc = recover(str(tmp_path))
    assert proc.returncode == 2 and "the raft engine is not configured" in proc.stderr
    missing = recover(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no master config at" in missing.stderr


def test_refuses_on_a_master_with_no_raft_data(tmp_path):
    write_config(str(tmp_path))
    proc = recover(str(tmp_path), "--force-new-cluster")
    assert proc.returncode == 2 and "holds no log and no snapshot" in proc.stderr


OLD = Membership(voters=frozenset({"a", "b", "c"}), addresses=(("a", "10.9.0.1:4606"),))


def backup_file(tmp_path) -> str:
    path, _ = write_backup(
        "raft.bak",
        Backup("saltext-raft", "a", 1_795_000_000.0, Snapshot(SnapshotMeta(40, 6, OLD), b"state")),
        secret=SECRET_HEX.encode(),
        backup_dir=str(tmp_path / "backups"),
    )
    return path


def test_a_backup_is_restored_into_an_empty_master(tmp_path):
    root = str(tmp_path / "m1")
    os.makedirs(root)
    write_config(root)
    path = backup_file(tmp_path)
    dry = recover(root, "--restore", path)
    assert dry.returncode == 0, dry.stderr
    assert (
        f"restoring {path}: the state of cluster saltext-raft at index 40, taken on a" in dry.stdout
    )
    assert "voters in the backup:   a, b, c" in dry.stdout
    assert "Run again with --force-new-cluster to restore the backup here" in dry.stdout
    assert load(master_opts(root)) == (HardState(), None, [])

    proc = recover(root, "--restore", path, "--force-new-cluster", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (
        report["restored_from"]["snapshot_index"] == 40 and report["restored_from"]["path"] == path
    )
    # m1 is not in the backup's membership: its address comes from its engine configuration.
    assert report["membership"]["addresses"] == {"m1": PEERS["m1"]}
    hs, snap, entries = load(master_opts(root))
    assert snap == Snapshot(SnapshotMeta(40, 6, OLD), b"state")
    assert [e.index for e in entries] == [41] and hs == HardState(7, "m1", 41)
    assert ConfChange.decode(entries[0].data).result.voters == {"m1"}


def test_a_restore_refuses_a_master_with_raft_data_or_a_damaged_backup(master, tmp_path):
    before = load(master_opts(master))
    good = backup_file(tmp_path)
    proc = recover(master, "--restore", good, "--force-new-cluster")
    assert proc.returncode == 2 and "m1 already holds Raft data (log up to index 5)" in proc.stderr
    assert load(master_opts(master)) == before

    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    write_config(empty)
    torn = str(tmp_path / "torn.bak")
    with open(good, "rb") as src, open(torn, "wb") as dst:
        dst.write(src.read()[:-10])
    proc = recover(empty, "--restore", torn, "--force-new-cluster")
    assert proc.returncode == 2 and "torn.bak is damaged or incomplete" in proc.stderr
    assert load(master_opts(empty)) == (HardState(), None, [])


def test_a_survivor_that_was_not_a_voter_is_warned_about(master, tmp_path):
    """m1's log says m1 was removed (the entry the leader wrote before m1 stopped hearing)."""
    opts = master_opts(master)
    cfg = engine_cfg(opts)
    others = {k: v for k, v in PEERS.items() if k != "m1"}
    removed = Membership(voters=frozenset(others), addresses=tuple(sorted(others.items())))
    entry = Entry(2, 6, EntryKind.CONF, ConfChange(ConfOp.REMOVE, "m1", result=removed).encode())
    store = open_store(storage_opts(opts), cfg.cluster_id, cfg.node_id)
    try:
        store.load()
        store.save(None, [entry])
    finally:
        store.close()
    proc = recover(master, "--address", PEERS["m1"])
    assert proc.returncode == 0, proc.stderr
    assert "voters now:   m2, m3" in proc.stdout
    assert "warning: m1 is not a member in its own log" in proc.stdout
    report = json.loads(recover(master, "--address", PEERS["m1"], "--json").stdout)
    assert len(report["warnings"]) == 1 and report["written"] is False


def test_a_backup_of_another_cluster_is_refused_with_both_ids(tmp_path):
    """Red team 2026-12-07: a backup is authenticated by the secret alone, and the restore did
    not compare its cluster id: a backup of cluster ``prod`` (taken under the same secret
    file, or passed with that cluster's ``--backup-secret``) was restored into a master of
    another cluster, which then served prod's cache and minion keys."""
    root = str(tmp_path / "m1")
    os.makedirs(root)
    write_config(root)
    path, _ = write_backup(
        "prod.bak",
        Backup("prod", "a", 1_795_000_000.0, Snapshot(SnapshotMeta(40, 6, OLD), b"prod state")),
        secret=SECRET_HEX.encode(),
        backup_dir=str(tmp_path / "backups"),
    )
    for args in ((), ("--force-new-cluster",)):
        proc = recover(root, "--restore", path, *args)
        assert proc.returncode == 2, proc.stdout
        assert "is a backup of cluster 'prod'" in proc.stderr
        assert "this master is of cluster 'saltext-raft'" in proc.stderr
    assert load(master_opts(root)) == (HardState(), None, [])


@pytest.mark.parametrize("address", ("garbage:", "10.0.0.4:99999", "a b:4606"))
def test_an_address_that_is_not_host_port_is_refused_before_anything_is_written(master, address):
    """Red team 2026-12-07: ``--address`` was the one way into a membership that did not pass
    the address rule (docs/security.md, "Node addresses"); ``garbage:`` was written as the only
    voter's address, which every master that joins it would then fail to connect to."""
    before = load(master_opts(master))
    for args in ((), ("--force-new-cluster",)):
        proc = recover(master, "--address", address, *args)
        assert proc.returncode == 2, proc.stdout
        assert "the address given for m1" in proc.stderr and address in proc.stderr
    assert load(master_opts(master)) == before
