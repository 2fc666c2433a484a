"""Attacks and faults against ``keys: replicate`` (Salt 3007 key directories kept in step
through the log): each test performs the attack or injects the fault against the reconciler,
the key view or the record, and checks what a master does about it."""

from __future__ import annotations

import errno
import os

import pytest

from saltext_raft.replicated import keyview
from saltext_raft.replicated.keys3007 import KeyLogError
from saltext_raft.replicated.keyview import APPLIED_FILE
from saltext_raft.replicated.keyview import AppliedView
from tests.unit.replicated.test_keys3007 import FakeLog
from tests.unit.replicated.test_keys3007 import Master
from tests.unit.replicated.test_keys3007 import pem

PRIVATE = "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture
def cluster(tmp_path):
    fake = FakeLog()
    return fake, [Master(tmp_path, f"m{i}", fake) for i in (1, 2, 3)]


class FlakyReads(FakeLog):
    """A log whose reads fail while ``stalled`` (the engine's loop busy past the timeout)."""

    stalled = False

    def read(self, bank, minion_id):
        if self.stalled:
            raise KeyLogError("TimeoutError: the loop did not answer")
        return super().read(bank, minion_id)


# --- files planted in the key directories ---------------------------------------------------
def test_a_hard_link_to_the_master_private_key_is_not_replicated(cluster):
    """A hard link in minions/ to the master's own key pair: no O_NOFOLLOW stops it, and its
    text would be written (0644) into every master's minions/."""
    fake, (m1, m2, _m3) = cluster
    m1.pass_()
    private = m1.root / "master.pem"
    private.write_text(PRIVATE)
    os.link(private, m1.file("minions", "evil"))
    m1.poll()
    m2.pass_()
    assert "evil" not in fake.banks["keys"]
    assert not m2.has("minions", "evil")
    assert m1.rec.counters["refused"] >= 1
    assert m1.file("minions", "evil").exists()  # left for the operator, not deleted


def test_a_hard_link_to_the_master_public_key_is_refused(cluster):
    """A hard link whose text is a public key (``master.pub``): not a file Salt wrote for a
    minion; refused by its link count, never deleted."""
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    public = m1.root / "master.pub"
    public.write_text(pem(9))
    os.link(public, m1.file("minions", "evil"))
    m1.poll()
    assert "evil" not in fake.banks["keys"]
    assert m1.rec.counters["refused"] == 1
    assert public.read_text() == pem(9) and m1.file("minions", "evil").exists()


def test_a_private_key_copied_into_minions_pre_is_not_replicated(cluster):
    fake, (m1, m2, _m3) = cluster
    m1.pass_()
    m1.auth_writes_pending("evil", PRIVATE)
    m1.poll()
    m2.pass_()
    assert "evil" not in fake.banks["keys"]
    assert not m2.has("minions_pre", "evil")


def test_a_file_swapped_for_a_fifo_between_scan_and_read_is_refused(cluster):
    """Race: the scan sees a regular file, the pass opens a FIFO planted after it."""
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    m1.auth_writes_pending("web1", pem(1))
    ids = m1.rec.scan()
    m1.file("minions_pre", "web1").unlink()
    os.mkfifo(m1.file("minions_pre", "web1"))
    m1.rec.reconcile(ids)  # must not block on the FIFO
    assert "web1" not in fake.banks["keys"]


# --- faults during a pass -------------------------------------------------------------------
def test_a_change_seen_by_a_pass_that_failed_is_not_forgotten(tmp_path):
    """The scan records the new signature, then the pass fails (the log read times out): the
    change must still be proposed by a later poll, with nothing new in the directory."""
    fake = FlakyReads()
    m1 = Master(tmp_path, "m1", fake)
    m1.poll()
    m1.auth_writes_pending("web1", pem(1))
    fake.stalled = True
    with pytest.raises(KeyLogError):
        m1.poll()
    fake.stalled = False
    m1.poll()
    m1.poll()
    assert fake.banks["keys"].get("web1") == {"state": "pending", "pub": pem(1)}


def test_a_retry_survives_a_pass_that_failed(tmp_path):
    fake = FlakyReads()
    m1 = Master(tmp_path, "m1", fake)
    m1.poll()
    fake.down = True
    m1.auth_writes_pending("web1", pem(1))
    m1.poll()
    assert m1.rec.retry == {"web1"}
    fake.down = False
    fake.stalled = True
    with pytest.raises(KeyLogError):
        m1.poll()
    fake.stalled = False
    m1.poll()
    assert fake.banks["keys"].get("web1", {}).get("state") == "pending"


# --- the persisted record -------------------------------------------------------------------
@pytest.mark.parametrize(
    "garbage",
    [
        b"[" * 200000,  # the disk lies: deeply nested
        b'{"format": 1, "ids": {"web1": {"keys": ["accepted"]}}}',
        b'{"format": 1, "ids": {"web1": ["keys"]}}',
        b'{"format": 1, "ids": []}',
        b"\xff\xfe\x00garbage",
        b'{"format": 1, "ids": {"web1": {"keys": "ab"}}}',
    ],
)
def test_a_torn_record_is_reported_torn_not_raised(tmp_path, garbage):
    path = tmp_path / APPLIED_FILE
    path.write_bytes(garbage)
    view = AppliedView(str(path)).load()
    assert view.status == "torn" and view.ids == {}


def test_a_master_restarted_on_a_torn_record_converges_to_the_log(cluster):
    fake, (m1, m2, _m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    m1.salt_key_accept("web1")
    m1.pass_()
    m2.pass_()
    (m2.state / APPLIED_FILE).write_bytes(b"[" * 200000)
    m2.file("minions", "web1").unlink()  # a stale view the torn record cannot explain
    m2.restart()
    m2.pass_()
    assert m2.states("web1") == ["minions"]
    assert fake.banks["keys"]["web1"]["state"] == "accepted"


# --- the log side ---------------------------------------------------------------------------
def test_a_log_entry_larger_than_a_key_does_not_block_a_later_revocation(cluster):
    """An entry the reader would refuse (a peer on another Salt, a removed master's last
    proposal): written here, the id must still follow the log when the key is deleted."""
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    fake.banks["keys"]["big"] = {"state": "accepted", "pub": "A" * (64 * 1024)}
    m1.pass_({"big"})
    fake.banks["keys"].pop("big")
    m1.pass_({"big"})
    assert m1.states("big") == []


# --- ids from the network -------------------------------------------------------------------
def test_an_id_too_long_for_a_file_name_does_not_stop_the_other_ids(cluster):
    """``_auth`` asks the engine about any id Salt's ``valid_id`` passes, unauthenticated: one
    of 300 characters (valid for Salt, too long for a file name) must not make every pass
    fail, for this id and every other."""
    fake, (m1, _m2, _m3) = cluster
    m1.poll()
    long_id = "a" * 300
    m1.auth_writes_pending("web1", pem(1))
    for _ in range(3):
        try:
            m1.rec.reconcile(m1.rec.scan() | {long_id})
        except OSError:
            pass
    assert fake.banks["keys"].get("web1", {}).get("state") == "pending"
    m1.auth_writes_pending("web2", pem(2))
    m1.poll()
    assert fake.banks["keys"].get("web2", {}).get("state") == "pending"


def test_an_unreadable_key_file_does_not_stop_the_other_ids(cluster, monkeypatch):
    """A key file that cannot be opened (the disk answers EIO; mode 000 for a master not run
    as root): refused, not a pass that fails for every id."""
    fake, (m1, _m2, _m3) = cluster
    m1.poll()
    m1.auth_writes_pending("aaa", pem(3))
    m1.auth_writes_pending("web1", pem(1))
    bad = str(m1.file("minions_pre", "aaa"))
    real_open = os.open

    def failing_open(path, *args, **kwargs):
        if str(path) == bad:
            raise OSError(errno.EIO, "Input/output error", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(keyview.os, "open", failing_open)
    for _ in range(2):
        try:
            m1.poll()
        except OSError:
            pass
    assert fake.banks["keys"].get("web1", {}).get("state") == "pending"
    assert "aaa" not in fake.banks["keys"]


# --- crashes and conflicts across masters ---------------------------------------------------
def test_a_crash_after_a_committed_proposal_neither_reproposes_nor_undoes_a_later_delete(
    cluster, monkeypatch
):
    """m1's accept is committed, m1 dies before its record is saved; m2 then deletes the key.
    At restart m1 must not propose its accept again (the log moved on): the delete stays."""
    fake, (m1, m2, _m3) = cluster
    m1.auth_writes_pending("web1", pem(1))
    m1.pass_()
    m2.pass_()
    m1.salt_key_accept("web1")

    def crash(self):
        raise SystemExit("killed after the proposal, before the record")

    monkeypatch.setattr(AppliedView, "save", crash)
    with pytest.raises(SystemExit):
        m1.pass_()
    monkeypatch.undo()
    assert fake.banks["keys"]["web1"]["state"] == "accepted"
    m2.pass_()
    m2.salt_key_delete("web1")
    m2.pass_()
    assert "web1" not in fake.banks["keys"]
    before = list(fake.entries)
    m1.restart()
    m1.pass_()
    assert fake.entries == before
    assert m1.states("web1") == []


def test_two_masters_filing_one_new_id_with_different_keys_converge_on_the_first(cluster):
    """An impostor names a new minion's id on m2 while the minion signs in on m1: both file a
    pending key; the log keeps the first add, and m2's file is replaced by it, not proposed."""
    fake, (m1, m2, m3) = cluster
    for m in (m1, m2, m3):
        m.pass_()
    m1.auth_writes_pending("web1", pem(1))
    m2.auth_writes_pending("web1", pem(666))
    m1.poll()
    m2.poll()
    for m in (m1, m2, m3):
        m.pass_()
    assert fake.banks["keys"]["web1"] == {"state": "pending", "pub": pem(1)}
    assert [e[0] for e in fake.entries if e[2] == "web1"] in (["add"], ["add", "add"])
    for m in (m1, m2, m3):
        assert m.file("minions_pre", "web1").read_text() == pem(1)


def test_a_temp_file_left_by_a_killed_write_is_neither_proposed_nor_refused(cluster):
    """A write killed between its temp file and the rename leaves ``.saltext-raft-*`` in the
    key directory: skipped like Salt skips it (a dotfile), never proposed."""
    fake, (m1, _m2, _m3) = cluster
    m1.pass_()
    (m1.root / "minions" / ".saltext-raft-k1ll3d").write_text(pem(1))
    m1.poll()
    m1.pass_()
    assert fake.entries == []
    assert m1.rec.counters["refused"] == 0
