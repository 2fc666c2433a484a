"""The engine's readiness decision and its coexistence detection (pure parts of the service)."""

from __future__ import annotations

from saltext_raft.master.service import core_consensus_active
from saltext_raft.master.service import evaluate_readiness

V = frozenset({"m1", "m2", "m3"})


def decide(**kw):
    base = {
        "node_id": "m1",
        "running": True,
        "role": "follower",
        "leader": "m2",
        "voters": V,
        "learners": frozenset(),
        "committed_voters": V,
        "committed_learners": frozenset(),
        "last_leader_seen": 100.0,
        "now": 100.0,
        "grace": 5.0,
        "learners_ok": False,
    }
    base.update(kw)
    return evaluate_readiness(**base)


def test_committed_voter_with_live_leader_is_ready():
    assert decide() == (True, "ready")
    assert decide(role="leader", leader="m1")[0]


def test_not_ready_before_any_leader():
    assert decide(leader="", role="pre-candidate", last_leader_seen=None) == (
        False,
        "no leader elected yet",
    )


def test_leader_loss_closes_after_the_grace_period_only():
    assert decide(leader="", role="candidate", now=103.0)[0]
    ok, why = decide(leader="", role="candidate", now=106.0)
    assert not ok and "no leader for more than 5s" in why


def test_learner_gate_is_configurable():
    kw = {
        "voters": frozenset({"m2", "m3"}),
        "learners": frozenset({"m1"}),
        "committed_voters": frozenset({"m2", "m3"}),
        "committed_learners": frozenset({"m1"}),
    }
    ok, why = decide(**kw)
    assert not ok and "learner" in why
    assert decide(learners_ok=True, **kw)[0]


def test_removed_or_uncommitted_member_is_not_ready():
    ok, why = decide(voters=frozenset({"m2", "m3"}))  # removal appended, not yet committed
    assert not ok and "not a member" in why
    ok, why = decide(committed_voters=frozenset({"m2", "m3"}))  # added, not yet committed
    assert not ok and "not committed" in why
    assert not decide(running=False)[0]
    removed = frozenset({"m2", "m3"})
    ok, why = decide(voters=removed, committed_voters=removed, removed_at=7)  # tombstoned
    assert not ok and "removed at index 7" in why and "raft.add" in why


def test_core_consensus_detection_needs_cluster_id_and_peers():
    assert core_consensus_active({}) is False
    assert core_consensus_active({"cluster_id": "c"}) is False
    import importlib.util

    try:  # 3007 has no salt.cluster package at all: find_spec raises for the parent
        expected = importlib.util.find_spec("salt.cluster.consensus.service") is not None
    except ImportError:
        expected = False
    assert core_consensus_active({"cluster_id": "c", "cluster_peers": ["x"]}) is expected


class _FakeTransport:
    def __init__(self):
        self.received = 0
        self.auth = 0

    def stats(self):
        return {"received": self.received, "dropped": {"auth": self.auth}}


class _FakeRuntime:
    def __init__(self):
        self.transport = _FakeTransport()


class _FakeService:
    class cfg:  # stands in for an EngineConfig
        node_id = "m4"
        cluster_id = "c"
        secret_source = "/etc/salt/raft.secret"
        peers = {"m1": "10.0.0.1:4606", "m4": "10.0.0.4:4606"}
        advertise = "10.0.0.4:4606"
        listen = "10.0.0.4:4606"


def test_peer_contact_check_says_why_a_master_hears_nothing():
    from saltext_raft.master.service import PeerContactCheck

    svc, rt, check = _FakeService(), _FakeRuntime(), PeerContactCheck()
    assert check.check(svc, rt, False, 0.0) is None  # just started
    msg = check.check(svc, rt, False, 11.0)
    assert "no authenticated frame" in msg and "m1" in msg and "same secret" in msg
    assert check.check(svc, rt, False, 20.0) is None  # rate-limited
    rt.transport.auth = 3
    msg = check.check(svc, rt, False, 80.0)
    assert "3 frame(s)" in msg and "failed authentication" in msg


def test_peer_contact_check_is_quiet_on_a_healthy_master():
    from saltext_raft.master.service import PeerContactCheck

    svc, rt, check = _FakeService(), _FakeRuntime(), PeerContactCheck()
    rt.transport.received = 5
    for t in range(0, 100, 3):
        assert check.check(svc, rt, t > 2, float(t)) is None


def test_the_gate_stays_closed_until_the_master_caught_up_after_its_start():
    """Issue 17 part 4: a restarted master with a live leader still serves nothing until it
    has applied the read index that leader confirmed after its start."""
    ok, why = decide(caught_up=False)
    assert not ok and "catching up" in why
    assert decide(caught_up=True) == (True, "ready")
