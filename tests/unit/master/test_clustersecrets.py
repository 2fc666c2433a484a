"""Salt's cluster secrets kept the same in each master's own ``cluster_pki_dir``
(:mod:`saltext_raft.master.clustersecrets`), three masters over one in-memory replicated state.

The cache port is a :class:`SharedLog`: proposals are applied in order to one
:class:`KVStateMachine` when the test calls :meth:`SharedLog.settle`, and every master's watcher
is told of each change, as the cache service does once its copy shows it. The files are real
directories in ``tmp_path``, one ``cluster_pki_dir`` per master.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import secrets

import pytest

from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import KVStateMachine
from saltext_raft.master import clustersecrets as cs
from saltext_raft.master import fileutil
from saltext_raft.master import service

IDS = ("m1", "m2", "m3")
PUB = "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n"


def aes_key() -> str:
    return base64.b64encode(secrets.token_bytes(56)).decode()


class SharedLog:
    def __init__(self):
        self.kv = KVStateMachine()
        self.queue = []
        self.watchers = []

    def port(self):
        log = self

        class Port:
            def propose(self, op, bank, key, value=b""):
                fut = concurrent.futures.Future()
                log.queue.append((Command(op, bank, key, value), fut))
                return fut

            def fetch(self, bank, key):
                return log.kv.fetch(bank, key)

            def list(self, bank):
                return log.kv.list(bank)

        return Port()

    def settle(self):
        while self.queue:
            cmd, fut = self.queue.pop(0)
            fut.set_result(self.kv.apply_command(cmd))
            for w in self.watchers:
                w(cmd.bank, cmd.key)


class Master:
    def __init__(self, root, nid, log, members, pub=None):
        self.id = nid
        self.now = 0.0  # the engine's clock (seconds), moved by the tests
        self.pki = root / nid
        (self.pki / "peers").mkdir(parents=True, mode=0o700)
        self.pki.chmod(0o700)
        (self.pki / "cluster.pub").write_text(pub or PUB.format("CLUSTER"))
        (self.pki / ".aes").write_text(aes_key())
        (self.pki / "peers" / f"{nid}.pub").write_text(PUB.format(nid))
        self.fired = []
        self.members = members
        self.secrets = cs.ClusterSecrets(
            cs.ClusterFiles(str(self.pki), nid),
            log.port(),
            lambda: self.members,
            lambda tag, data: self.fired.append((tag, data)),
            clock=lambda: self.now,
        )
        log.watchers.append(self.secrets.changed)

    def aes(self):
        return (self.pki / ".aes").read_text().strip()

    def peers(self):
        return sorted(p.name for p in (self.pki / "peers").iterdir())


@pytest.fixture
def cluster(tmp_path):
    log = SharedLog()
    members = set(IDS)
    masters = {nid: Master(tmp_path, nid, log, members) for nid in IDS}
    return log, masters


def catch_up(log, masters):
    for m in masters:
        m.secrets.changed(None, None)
        log.settle()


def test_first_values_win_and_every_master_converges(cluster):
    log, masters = cluster
    first_aes = masters["m1"].aes()
    assert len({m.aes() for m in masters.values()}) == 3  # each master generated its own
    catch_up(log, masters.values())
    assert {m.aes() for m in masters.values()} == {first_aes}
    for m in masters.values():
        assert m.secrets.refusal == ""
        assert m.peers() == [f"{n}.pub" for n in IDS]
        if m.id != "m1":  # rewritten by the engine: owner-only
            assert oct(os.stat(m.pki / ".aes").st_mode & 0o777) == "0o600"
        # Salt's event monitor re-reads .aes on this event (a peer's rotation)
        assert (cs.RELOAD_TAG, {"rotate_cluster_aes_key": True, "__peer_id": m.id}) in m.fired
    for nid in IDS:
        assert (masters["m1"].pki / "peers" / f"{nid}.pub").read_text() == PUB.format(nid)


def test_a_master_with_another_cluster_key_is_refused_with_a_reason(tmp_path):
    log = SharedLog()
    members = set(IDS)
    m1 = Master(tmp_path, "m1", log, members)
    m2 = Master(tmp_path, "m2", log, members)
    m3 = Master(tmp_path, "m3", log, members, pub=PUB.format("ANOTHER"))
    catch_up(log, [m1, m2, m3])
    assert m1.secrets.refusal == "" and m2.secrets.refusal == ""
    assert "differs from the cluster's" in m3.secrets.refusal
    assert cs.fingerprint((m1.pki / "cluster.pub").read_bytes()) in m3.secrets.refusal
    # the gate's decision: closed with that reason even as a voter with a leader
    ready, reason = service.evaluate_readiness(
        node_id="m3",
        running=True,
        role="follower",
        leader="m1",
        voters=set(IDS),
        learners=set(),
        committed_voters=set(IDS),
        committed_learners=set(),
        last_leader_seen=1.0,
        now=1.0,
        grace=5,
        learners_ok=False,
        refusal=m3.secrets.refusal,
    )
    assert not ready and reason == m3.secrets.refusal
    # the operator copies the cluster's key pair: the next look finds it matching
    (m3.pki / "cluster.pub").write_bytes((m1.pki / "cluster.pub").read_bytes())
    m3.secrets.changed(None, None)
    log.settle()
    assert m3.secrets.refusal == ""


def test_a_master_without_cluster_pub_is_refused(cluster):
    log, masters = cluster
    os.unlink(masters["m2"].pki / "cluster.pub")
    catch_up(log, masters.values())
    m2 = masters["m2"]
    assert "being replaced" in m2.secrets.refusal  # Salt may be rewriting it: looked at again
    m2.now += fileutil.CLUSTER_KEY_SETTLE
    m2.secrets.poll()
    assert "has no cluster.pub" in m2.secrets.refusal
    m2.now += 60
    (m2.pki / "cluster.pub").write_text(PUB.format("CLUSTER"))
    m2.secrets.poll()  # no longer looked at: Salt's processes started without the cluster's key
    assert "has no cluster.pub" in m2.secrets.refusal


@pytest.mark.parametrize("gap", ["missing", "cut short"])
def test_a_cluster_pub_being_rewritten_when_the_engine_looks_does_not_close_the_gate(cluster, gap):
    """Salt 3008.4's join handshake unlinks ``cluster.pub`` and writes it again on a master
    joining the cluster, around the time the engine catches up and compares it. A look in that
    gap refused the master for good ("has no cluster.pub", or "differs" for a file cut short)
    until a restart, with the right key on disk a moment later."""
    log, masters = cluster
    m3 = masters["m3"]
    path = m3.pki / "cluster.pub"
    whole = path.read_text()
    if gap == "missing":
        os.unlink(path)
    else:
        path.write_text(whole[: len(whole) // 2])
    catch_up(log, masters.values())
    assert masters["m1"].secrets.refusal == ""
    assert "being replaced" in m3.secrets.refusal
    m3.now += 0.05
    path.write_text(whole)
    m3.secrets.poll()
    assert m3.secrets.refusal == ""


def test_a_rotation_by_salt_on_one_master_reaches_every_master(cluster):
    log, masters = cluster
    catch_up(log, masters.values())
    for m in masters.values():
        m.secrets.poll()  # nothing changed since we wrote it: nothing proposed
    assert not log.queue
    fired_before = {m.id: len(m.fired) for m in masters.values()}
    # Salt on m2 rotates as read_or_generate_key(remove=True) does: remove, write anew
    new = aes_key()
    os.remove(masters["m2"].pki / ".aes")
    (masters["m2"].pki / ".aes").write_text(new)
    masters["m2"].secrets.poll()
    log.settle()
    assert {m.aes() for m in masters.values()} == {new}
    for m in masters.values():
        assert len(m.fired) > fired_before[m.id], m.id  # each Salt told to re-read
        m.secrets.poll()
    assert not log.queue  # our own writes are not taken for rotations
    assert masters["m2"].secrets.counters["aes_committed"] == 1


def test_a_garbage_aes_file_is_not_committed(cluster):
    log, masters = cluster
    catch_up(log, masters.values())
    good = masters["m1"].aes()
    (masters["m3"].pki / ".aes").write_text("not a key!")
    masters["m3"].secrets.poll()
    log.settle()
    assert masters["m1"].aes() == good
    assert "holds no usable key" in masters["m3"].secrets.last_error


def test_a_removed_member_loses_its_peer_key_file_everywhere(cluster):
    log, masters = cluster
    catch_up(log, masters.values())
    masters["m1"].members.discard("m3")  # the shared set: a committed removal
    for m in masters.values():
        m.secrets.membership_changed()
    assert masters["m1"].peers() == ["m1.pub", "m2.pub"]
    assert masters["m2"].peers() == ["m1.pub", "m2.pub"]


def test_peer_keys_are_not_written_through_a_symlinked_peers_dir(cluster, tmp_path):
    log, masters = cluster
    m2 = masters["m2"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    for f in (m2.pki / "peers").iterdir():
        f.rename(elsewhere / f.name)
    (m2.pki / "peers").rmdir()
    (m2.pki / "peers").symlink_to(elsewhere)
    catch_up(log, masters.values())
    assert sorted(p.name for p in elsewhere.iterdir()) == ["m2.pub"]  # nothing added there
    assert "symbolic link" in m2.secrets.last_error


def test_an_aes_symlink_is_replaced_not_followed(cluster, tmp_path):
    log, masters = cluster
    target = tmp_path / "target"
    target.write_text("precious")
    m3 = masters["m3"]
    os.remove(m3.pki / ".aes")
    (m3.pki / ".aes").symlink_to(target)
    catch_up(log, masters.values())
    assert target.read_text() == "precious"
    assert not (m3.pki / ".aes").is_symlink() and m3.aes() == masters["m1"].aes()


def test_a_rotation_is_committed_even_when_the_first_look_came_before_the_first_commit(cluster):
    """Regression: the readiness loop polled ``.aes`` right after the catch-up call, while the
    first ``ADD`` of the same key was still in flight; the poll's proposal of the same value
    was dropped as a duplicate without its completion being reported, and every later
    rotation on that master was ignored (seen on Salt 3008.4 real masters)."""
    log, masters = cluster
    m1 = masters["m1"]
    m1.secrets.changed(None, None)
    m1.secrets.poll()  # before the ADD is applied
    log.settle()
    for m in list(masters.values())[1:]:
        m.secrets.changed(None, None)
        log.settle()
    new = aes_key()
    os.remove(m1.pki / ".aes")
    (m1.pki / ".aes").write_text(new)
    m1.secrets.poll()
    log.settle()
    assert {m.aes() for m in masters.values()} == {new}


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (None, False),
        ("", False),
        ("-----BEGIN PUBLIC KEY-----\nMIIB", False),
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n", True),
        (b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", True),
        ("-----BEGIN PUBLIC KEY-----\n-----END PUB", False),
    ],
)
def test_complete_pem(data, whole):
    assert fileutil.complete_pem(data) is whole


def test_a_cut_short_cluster_pub_at_the_first_look_is_not_committed_as_the_cluster_key(cluster):
    """The first master to catch up claims the cluster key (first ADD wins). If Salt's join
    handshake is rewriting its ``cluster.pub`` at that moment, the claim must not commit the
    fingerprint of half a file: every master, this one included once its file is whole, would
    be refused ("differs") until the operator wiped the committed value."""
    log, masters = cluster
    m1 = masters["m1"]
    path = m1.pki / "cluster.pub"
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    m1.secrets.changed(None, None)  # m1 catches up first, mid-rewrite
    log.settle()
    assert "being replaced" in m1.secrets.refusal
    m1.now += 0.05
    path.write_text(whole)  # the rewrite finishes
    m1.secrets.poll()
    log.settle()
    for m in masters.values():
        if m is not m1:
            m.secrets.changed(None, None)
            log.settle()
    committed = cs.decode(log.kv.fetch(cs.BANK, cs.CLUSTER_PUB_KEY))
    assert committed == cs.fingerprint(whole.encode())
    assert {m.id: m.secrets.refusal for m in masters.values()} == dict.fromkeys(IDS, "")


def test_a_lone_master_whose_cluster_pub_was_cut_short_at_the_first_look_claims_it_when_whole(
    tmp_path,
):
    """Nobody else will claim: the look again (poll) commits the whole file's fingerprint."""
    log = SharedLog()
    m1 = Master(tmp_path, "m1", log, {"m1"})
    path = m1.pki / "cluster.pub"
    whole = path.read_text()
    path.write_text(whole[:20])
    m1.secrets.changed(None, None)
    log.settle()
    m1.now += 0.05
    path.write_text(whole)
    m1.secrets.poll()
    log.settle()
    assert cs.decode(log.kv.fetch(cs.BANK, cs.CLUSTER_PUB_KEY)) == cs.fingerprint(whole.encode())
    assert m1.secrets.refusal == ""


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (
            "Bag Attributes\n    localKeyID: 01\n-----BEGIN PUBLIC KEY-----\nMIIB\n"
            "-----END PUBLIC KEY-----\n",
            True,
        ),
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n# from m1\n", True),
        ("-----BEGIN PUBLIC KEY-----\r\nMIIB\r\n-----END PUBLIC KEY-----\r\n", True),
        # a second block cut short: the file is still being written
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n-----BEGIN CERT", False),
        (
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n-----BEGIN X-----\nMI",
            False,
        ),
        ("Bag Attributes\n    localKeyID: 01\n", False),
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY---", False),
    ],
)
def test_complete_pem_with_text_beside_the_block(data, whole):
    """Text beside a whole block (which Salt's loaders accept) is not a rewrite in progress;
    an unclosed last block is."""
    assert fileutil.complete_pem(data) is whole
