"""Salt 3007's key directories kept in step through the log (``keys: replicate``): the
reconciler's rules with several masters sharing one (fake) log, faults injected."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest

from saltext_raft.replicated import keys3007
from saltext_raft.replicated.keys3007 import KeyLogError
from saltext_raft.replicated.keys3007 import LogPort
from saltext_raft.replicated.keys3007 import Reconciler
from saltext_raft.replicated.keyview import APPLIED_FILE
from saltext_raft.replicated.keyview import AppliedView
from saltext_raft.replicated.keyview import KeyDirs

PEM = "-----BEGIN PUBLIC KEY-----\nMIIB{}\n-----END PUBLIC KEY-----\n"


def pem(n) -> str:
    return PEM.format(n)


class FakeLog(LogPort):
    """One committed key state for every master: ``entries`` in commit order. ``down`` makes
    every barrier and proposal fail; ``before_propose`` runs first (to interleave masters)."""

    def __init__(self):
        self.banks = {"keys": {}, "denied_keys": {}}
        self.entries = []
        self.down = False
        self.before_propose = None

    def read(self, bank, minion_id):
        return self.banks[bank].get(minion_id)

    def ids(self, bank):
        return list(self.banks[bank])

    def barrier(self):
        if self.down:
            raise KeyLogError("no leader")

    def propose(self, op, bank, minion_id, value):
        if self.down:
            raise KeyLogError("no leader")
        hook, self.before_propose = self.before_propose, None
        if hook is not None:
            hook()
        self.entries.append((op, bank, minion_id, value))
        if op == "add":
            if minion_id in self.banks[bank]:
                return False
            self.banks[bank][minion_id] = value
        elif op == "store":
            self.banks[bank][minion_id] = value
        else:
            self.banks[bank].pop(minion_id, None)
        return True


class Master:
    """One master: its own pki dir and state dir (nothing shared), a reconciler that can be
    restarted (a new instance loading the persisted record, as after an engine restart)."""

    def __init__(self, base, name, fake_log):
        self.root = base / name / "pki"
        self.state = base / name / "state"
        self.state.mkdir(parents=True)
        self.log = fake_log
        self.opts = {"pki_dir": str(self.root), "id": name}
        self.dirs = KeyDirs(self.opts)
        self.restart()

    def restart(self) -> str:
        self.rec = Reconciler(self.dirs, AppliedView(str(self.state / APPLIED_FILE)), self.log)
        return self.rec.start()

    def pass_(self, ids=None):
        return self.rec.reconcile(ids)

    def poll(self):
        """What the engine does every poll interval: the entries that changed, plus retries."""
        return self.rec.reconcile(self.rec.scan())

    def file(self, sub, minion_id):
        return self.root / sub / minion_id

    def has(self, sub, minion_id) -> bool:
        return self.file(sub, minion_id).exists()

    def states(self, minion_id) -> list:
        return [s for s in ("minions", "minions_pre", "minions_rejected") if self.has(s, minion_id)]

    # what Salt does on this master ----------------------------------------------------------
    def auth_writes_pending(self, minion_id, key):
        self.file("minions_pre", minion_id).write_text(key)

    def salt_key_accept(self, minion_id):
        os.rename(self.file("minions_pre", minion_id), self.file("minions", minion_id))

    def salt_key_reject(self, minion_id):
        os.rename(self.file("minions_pre", minion_id), self.file("minions_rejected", minion_id))

    def salt_key_delete(self, minion_id):
        for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
            if self.has(sub, minion_id):
                self.file(sub, minion_id).unlink()


@pytest.fixture
def cluster(tmp_path):
    fake = FakeLog()
    return fake, [Master(tmp_path, f"m{i}", fake) for i in (1, 2, 3)]


def accepted_everywhere(fake, masters, minion_id="web1", key=None):
    m1 = masters[0]
    m1.auth_writes_pending(minion_id, key or pem(1))
    m1.pass_()
    m1.salt_key_accept(minion_id)
    m1.pass_()
    for m in masters:
        m.pass_()
    assert fake.banks["keys"][minion_id]["state"] == "accepted"


def test_a_pending_key_then_its_acceptance_reach_every_master(cluster):
    fake, (m1, m2, m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    assert fake.entries == [("add", "keys", "web1", {"state": "pending", "pub": pem(1)})]
    for m in (m2, m3):
        m.pass_()
        assert m.states("web1") == ["minions_pre"]
        assert m.file("minions_pre", "web1").read_text() == pem(1)
    m1.salt_key_accept("web1")
    m1.pass_()
    assert fake.banks["keys"]["web1"]["state"] == "accepted"
    for m in (m2, m3):
        m.pass_()
        assert m.states("web1") == ["minions"]  # and the pending file is gone


def test_a_master_down_during_an_accept_learns_it_at_restart(cluster):
    fake, (m1, m2, m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    for m in (m1, m2, m3):
        m.pass_()
    # m3 is down: it runs no pass while the key is accepted through m1
    m1.salt_key_accept("web1")
    m1.pass_()
    m2.pass_()
    assert m3.states("web1") == ["minions_pre"]
    assert m3.restart() == "ok"
    m3.pass_()
    assert m3.states("web1") == ["minions"]
    assert fake.banks["keys"]["web1"]["state"] == "accepted"


def test_a_key_deleted_while_a_master_was_down_stays_deleted_there(cluster):
    """The resurrection case: m3's directory still has the file and its record says accepted;
    the log says deleted. m3 removes the file and proposes nothing."""
    fake, (m1, m2, m3) = cluster
    accepted_everywhere(fake, (m1, m2, m3))
    m1.salt_key_delete("web1")
    m1.pass_()
    m2.pass_()
    assert "web1" not in fake.banks["keys"]
    proposed = len(fake.entries)
    m3.restart()
    m3.pass_()
    assert m3.states("web1") == []
    assert "web1" not in fake.banks["keys"]
    assert len(fake.entries) == proposed  # nothing proposed by m3
    m3.pass_()
    assert "web1" not in fake.banks["keys"] and m3.states("web1") == []


def test_an_accepted_key_taken_away_through_the_log_is_reported_as_revoked(cluster):
    """Where the minion may hold a session (its key was accepted here), not where the change
    was made (salt-key rotates there itself)."""
    fake, (m1, m2, m3) = cluster
    accepted_everywhere(fake, (m1, m2, m3))
    for m in (m1, m2, m3):
        m.rec.revoked.clear()
    m1.salt_key_delete("web1")
    m1.pass_()
    m2.pass_()
    assert m1.rec.revoked == [] and m2.rec.revoked == ["web1"]
    m3.restart()  # down during the delete: revoked at its first pass
    m3.pass_()
    assert m3.rec.revoked == ["web1"]


def test_a_local_accept_made_while_the_key_was_deleted_elsewhere_is_not_proposed(cluster):
    """A change made on a master that had not applied the log's newer state: the log wins."""
    fake, (m1, m2, _m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    m2.pass_()
    m1.salt_key_delete("web1")
    m1.pass_()
    m2.salt_key_accept("web1")  # m2 has not applied the delete yet
    m2.pass_()
    assert "web1" not in fake.banks["keys"]
    assert m2.states("web1") == []


def test_a_crash_between_applying_and_saving_the_record_converges_on_rerun(cluster, monkeypatch):
    fake, (m1, m2, _m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    m2.pass_()
    m1.salt_key_accept("web1")
    m1.pass_()

    def crash(self):
        raise SystemExit("killed between the directory write and the record")

    monkeypatch.setattr(AppliedView, "save", crash)
    with pytest.raises(SystemExit):
        m2.pass_()
    monkeypatch.undo()
    assert m2.states("web1") == ["minions"]  # written, but the record still says pending
    record = json.loads((m2.state / APPLIED_FILE).read_text())
    assert record["ids"]["web1"]["keys"][0] == "pending"
    before = list(fake.entries)
    m2.restart()
    m2.pass_()
    assert fake.entries == before  # the written state is adopted, not proposed again
    record = json.loads((m2.state / APPLIED_FILE).read_text())
    assert record["ids"]["web1"]["keys"][0] == "accepted"


def test_a_torn_record_restores_the_log_state_and_proposes_nothing(cluster):
    fake, (m1, m2, _m3) = cluster
    accepted_everywhere(fake, cluster[1])
    # while m2's engine is down: its record is torn and a stale file is deleted by hand
    data = (m2.state / APPLIED_FILE).read_bytes()
    (m2.state / APPLIED_FILE).write_bytes(data[: len(data) // 2])
    m2.salt_key_delete("web1")
    before = list(fake.entries)
    assert m2.restart() == "torn"
    m2.pass_()
    assert fake.entries == before
    assert m2.states("web1") == ["minions"]
    assert json.loads((m2.state / APPLIED_FILE).read_text())["ids"]["web1"]
    m1.pass_()
    assert m1.states("web1") == ["minions"]


def test_concurrent_conflicting_changes_log_order_wins_and_every_view_converges(cluster):
    """m1 accepts and m2 rejects the same pending key at once; both pass the barrier check,
    m2's proposal commits first, m1's after it: m1's acceptance is the final state."""
    fake, (m1, m2, m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    for m in (m1, m2, m3):
        m.pass_()
    m1.salt_key_accept("web1")
    m2.salt_key_reject("web1")
    fake.before_propose = m2.pass_  # m2's whole pass commits inside m1's proposal
    m1.pass_()
    ops = [(e[0], e[3]["state"]) for e in fake.entries[-2:]]
    assert ops == [("store", "rejected"), ("store", "accepted")]
    for m in (m1, m2, m3):
        m.pass_()
    for m in (m1, m2, m3):
        assert m.states("web1") == ["minions"], m.root


def test_the_change_detected_second_is_discarded_when_the_first_committed(cluster):
    fake, (m1, m2, m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    for m in (m1, m2, m3):
        m.pass_()
    m1.salt_key_accept("web1")
    m2.salt_key_reject("web1")
    m1.pass_()
    m2.pass_()  # m2's reject was based on "pending": the log moved, it wins
    m3.pass_()
    assert fake.banks["keys"]["web1"]["state"] == "accepted"
    for m in (m1, m2, m3):
        assert m.states("web1") == ["minions"]


def test_a_new_pending_key_for_an_accepted_minion_is_not_proposed(cluster):
    """_auth on m2 before m2 applied the acceptance: the key is not demoted."""
    fake, (m1, m2, _m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    m1.salt_key_accept("web1")
    m1.pass_()
    m2.auth_writes_pending("web1", pem(1))  # m2 never applied web1
    m2.pass_()
    assert fake.banks["keys"]["web1"]["state"] == "accepted"
    assert [e[0] for e in fake.entries] == ["add", "store"]
    assert m2.states("web1") == ["minions"]


def test_a_new_pending_key_for_a_denied_id_is_not_proposed(cluster):
    fake, (_m1, m2, _m3) = cluster
    fake.banks["denied_keys"]["web1"] = [pem(9)]
    m2.auth_writes_pending("web1", pem(1))
    m2.pass_(["web1"])
    assert "web1" not in fake.banks["keys"]
    assert m2.states("web1") == []
    assert m2.file("minions_denied", "web1").read_text() == pem(9)


def test_a_denied_key_is_replicated(cluster):
    fake, (m1, m2, m3) = cluster
    accepted_everywhere(fake, (m1, m2, m3))
    m2.file("minions_denied", "web1").write_text(pem(7))  # _auth: a key that did not match
    m2.pass_()
    assert fake.banks["denied_keys"]["web1"] == [pem(7)]
    m3.pass_()
    assert m3.file("minions_denied", "web1").read_text() == pem(7)
    assert m3.states("web1") == ["minions"]


def test_without_quorum_a_local_change_waits_and_is_proposed_later(cluster):
    fake, (m1, m2, _m3) = cluster
    fake.down = True
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    assert "web1" not in fake.banks["keys"]
    assert m1.rec.counters["failed"] >= 1
    assert m1.states("web1") == ["minions_pre"]  # left alone, not "restored"
    fake.down = False
    m1.pass_()
    m2.pass_()
    assert fake.banks["keys"]["web1"]["state"] == "pending"
    assert m2.states("web1") == ["minions_pre"]


def test_a_failed_proposal_is_retried_by_the_next_polls_without_a_new_change(cluster):
    fake, (m1, m2, _m3) = cluster
    m1.poll()
    fake.down = True
    m1.auth_writes_pending("web1", pem(1))
    m1.poll()
    assert "web1" not in fake.banks["keys"] and m1.rec.retry == {"web1"}
    fake.down = False
    m1.poll()  # nothing changed in the directory since: only the retry brings web1 back
    assert fake.banks["keys"]["web1"]["state"] == "pending"
    assert m1.rec.retry == set()
    m2.pass_()
    assert m2.states("web1") == ["minions_pre"]


def test_the_first_start_imports_keys_the_log_does_not_have(tmp_path):
    fake = FakeLog()
    fake.banks["keys"]["old"] = {"state": "rejected", "pub": pem(2)}
    root = tmp_path / "m1" / "pki"
    for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        (root / sub).mkdir(parents=True, mode=0o700)
    (root / "minions" / "web1").write_text(pem(1))
    (root / "minions" / "old").write_text(pem(2))
    m1 = Master(tmp_path, "m1", fake)
    assert m1.rec.applied.status == "missing"
    m1.pass_()
    assert fake.banks["keys"]["web1"] == {"state": "accepted", "pub": pem(1)}
    assert fake.banks["keys"]["old"]["state"] == "rejected"  # the log's entry won
    assert m1.states("old") == ["minions_rejected"]


# --- security: the reconciler reads only what it should -------------------------------------
def test_a_symlink_is_not_followed_nor_proposed(cluster, tmp_path):
    fake, (m1, _m2, _m3) = cluster
    secret = tmp_path / "secret"
    secret.write_text("not a key")
    m1.pass_()
    os.symlink(secret, m1.file("minions_pre", "evil"))
    m1.pass_()
    assert "evil" not in fake.banks["keys"]
    assert m1.rec.counters["refused"] == 1
    assert m1.file("minions_pre", "evil").is_symlink()  # left for the operator
    m1.pass_()
    assert m1.rec.counters["refused"] == 1  # reported once


def test_a_fifo_is_refused_without_blocking(cluster):
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    os.mkfifo(m1.file("minions_pre", "pipe"))
    m1.pass_()  # would block forever in a plain open() of the FIFO
    assert "pipe" not in fake.banks["keys"]
    assert m1.rec.counters["refused"] == 1


def test_an_oversized_file_is_refused(cluster):
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    with open(m1.file("minions_pre", "big"), "wb") as fh:
        fh.write(b"A" * (16 << 20))
    m1.pass_()
    assert "big" not in fake.banks["keys"]
    assert m1.rec.counters["refused"] == 1


def test_an_invalid_minion_id_is_refused(cluster):
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    name = "x\\..\\..\\evil"  # a file name, not a minion id (no leading dot: Salt skips those)
    m1.file("minions_pre", name).write_text(pem(1))
    m1.pass_()
    assert fake.banks["keys"] == {}
    assert m1.rec.counters["refused"] == 1
    with pytest.raises(keys3007.Refused):
        m1.dirs.write("../../etc/evil", "keys", "accepted", pem(1))
    assert not (m1.root.parent / "etc").exists()


def test_a_log_entry_for_an_invalid_id_is_not_written(cluster):
    fake, (m1, _m2, _m3) = cluster
    fake.banks["keys"]["..\\x"] = {"state": "accepted", "pub": pem(1)}
    m1.pass_()
    assert sorted(os.listdir(m1.root / "minions")) == []


def test_the_view_is_written_over_a_planted_symlink_without_following_it(cluster, tmp_path):
    _fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    target = tmp_path / "target"
    target.write_text("untouched")
    os.symlink(target, m1.file("minions", "web1"))
    m1.dirs.write("web1", "keys", "accepted", pem(1))
    assert target.read_text() == "untouched"
    assert not m1.file("minions", "web1").is_symlink()
    assert m1.file("minions", "web1").read_text() == pem(1)


def test_a_symlinked_key_directory_is_refused(tmp_path):
    from saltext_raft.master.fileutil import UnsafeDirectory  # pylint: disable=C0415

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "m1" / "pki"
    root.mkdir(parents=True, mode=0o700)
    os.symlink(elsewhere, root / "minions")
    with pytest.raises(UnsafeDirectory):
        Master(tmp_path, "m1", FakeLog())


# --- the option -----------------------------------------------------------------------------
def test_the_option_is_checked(monkeypatch):
    monkeypatch.setattr(keys3007, "salt_has_key_cache", lambda: False)
    assert keys3007.check_option(None, cache=None) == ""
    assert keys3007.check_option("replicate", cache=None) == "replicate"
    with pytest.raises(ValueError, match="'replicate' or unset"):
        keys3007.check_option("yes", cache=None)
    with pytest.raises(ValueError, match="cache: false"):
        keys3007.check_option("replicate", cache=False)
    monkeypatch.setattr(keys3007, "salt_has_key_cache", lambda: True)
    with pytest.raises(ValueError, match="keys.cache_driver: raft"):
        keys3007.check_option("replicate", cache=None)


def test_the_engine_config_turns_the_cache_on_and_names_the_option(monkeypatch, tmp_path):
    from saltext_raft.master.config import EngineConfigError  # pylint: disable=C0415
    from saltext_raft.master.config import from_opts  # pylint: disable=C0415

    monkeypatch.setattr(keys3007, "salt_has_key_cache", lambda: False)
    opts = {"id": "m1", "cachedir": str(tmp_path), "sock_dir": str(tmp_path)}
    options = {"peers": {"m1": "127.0.0.1:4606"}, "bind": "127.0.0.1"}
    cfg = from_opts(opts, dict(options, keys="replicate"), load_secret=False)
    assert cfg.keys == "replicate" and cfg.cache_enabled
    assert not from_opts(opts, options, load_secret=False).cache_enabled
    with pytest.raises(EngineConfigError, match="'keys'"):
        from_opts(opts, dict(options, keys="on"), load_secret=False)
    with pytest.raises(EngineConfigError, match="cache: false"):
        from_opts(opts, dict(options, keys="replicate", cache=False), load_secret=False)


def test_workers_read_the_option_from_the_engine_entry():
    from saltext_raft.master import settings  # pylint: disable=C0415

    assert settings.read({"engines": [{"raft": {"keys": "replicate"}}]}).keys_replicate
    assert not settings.read({"engines": [{"raft": {}}]}).keys_replicate
    assert not settings.read({"keys": "replicate"}).keys_replicate  # not the engine's option


def _pass_killed_before_rename(master) -> None:
    """In a forked child: a reconcile pass whose process is SIGKILLed the moment it renames a
    temp file into place (the temp file is written and fsynced by then)."""

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = os.rename = die
    master.pass_()
    os._exit(3)  # not reached: the pass must rename


def test_a_write_killed_mid_way_leaves_no_temp_file_after_the_restart(cluster):
    """The engine is killed between writing a key's temp file and renaming it: the restarted
    engine removes the leftover (and no file that is not its own), then writes the key."""
    _, masters = cluster
    m1, m2 = masters[0], masters[1]
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    child = multiprocessing.get_context("fork").Process(
        target=_pass_killed_before_rename, args=(m2,)
    )
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join(5)
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    leftovers = [p for p in (m2.root / "minions_pre").iterdir() if p.name.startswith(".")]
    assert leftovers, "the kill left no temp file: the test would check nothing"
    foreign = m2.root / "minions" / ".operator-notes"  # a dotfile that is not ours stays
    foreign.write_text("x")
    m2.restart()
    assert not [p for p in (m2.root / "minions_pre").iterdir() if p.name.startswith(".")]
    assert foreign.exists()
    m2.pass_()
    assert m2.states("web1") == ["minions_pre"]


def _rewrite_in_place_keeping_the_signature(path, text) -> None:
    """What a same-size rewrite within one mtime tick looks like to a listing: same inode
    (written in place), same size, same mtime (set back here: the clock tick did not move)."""
    st = os.stat(path)
    assert len(text) == st.st_size
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )


def test_a_same_size_rewrite_within_one_mtime_tick_is_still_seen(cluster):
    """A pending key replaced by another of the same size (every 2048-bit RSA public key
    file is) right after it was written keeps inode, size and mtime: a listing alone cannot
    see it. The reconciler reads again every entry whose mtime is near its last listing."""
    fake, (m1, m2, _) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.poll()
    assert fake.banks["keys"]["web1"]["pub"] == pem(1)
    _rewrite_in_place_keeping_the_signature(m1.file("minions_pre", "web1"), pem(2))
    m1.poll()
    assert fake.banks["keys"]["web1"] == {"state": "pending", "pub": pem(2)}
    m2.pass_()  # what an applied change of the key bank makes the engine run
    assert m2.file("minions_pre", "web1").read_text() == pem(2)


def test_an_old_unchanged_entry_is_not_read_again_at_every_listing(cluster):
    _, (m1, _, _) = cluster
    m1.auth_writes_pending("web1", pem(1))
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(m1.file("minions_pre", "web1"), ns=(hour_ago, hour_ago))
    assert m1.rec.scan() == {"web1"}  # the first listing reports everything
    assert m1.rec.scan() == set()
    m1.auth_writes_pending("web2", pem(2))  # just written: near the listing
    assert m1.rec.scan() == {"web2"}
    assert m1.rec.scan() == {"web2"}  # still within the window: read again
