"""The ``raft`` state module's decisions (saltext_raft.statelogic), without Salt: each state
against a fake set of runners that keeps a membership and answers as the real ones do."""

from __future__ import annotations

import pytest

from saltext_raft import statelogic as sl

ADDR = {f"m{i}": f"10.0.0.{i}:4606" for i in range(1, 7)}


class FakeRunners:
    """``call(op, **kwargs)`` over a membership, like ``saltutil.runner("raft.<op>")``.

    ``auto_promote``: a learner that is no demoted one becomes a voter at the next
    ``members`` call after it was added (it caught up). ``fail``: op -> error reply."""

    def __init__(self, voters, learners=(), leader="m1", here="m1", demoted=(), committed=True):
        self.voters, self.learners = set(voters), set(learners)
        self.demoted = set(demoted)
        self.leader, self.here, self.committed = leader, here, committed
        self.auto_promote = True
        self.fail: dict = {}
        self.calls: list[tuple[str, dict]] = []
        self.clock = 0.0

    # the fake clock, advanced by sleep
    def now(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds

    def cluster(self, wait=5.0):
        return sl.Cluster(self, wait, clock=self.now, sleep=self.sleep)

    def members(self):
        if self.auto_promote:
            for node in sorted(self.learners - self.demoted):
                self.learners.discard(node)
                self.voters.add(node)
        everyone = self.voters | self.learners
        return {
            "leader": self.leader,
            "term": 3,
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "demoted": sorted(self.demoted),
            "committed": self.committed,
            "members": {
                n: {"role": "voter" if n in self.voters else "learner", "address": ADDR[n]}
                for n in sorted(everyone)
            },
            "answered_by": self.here,
        }

    def __call__(self, op, **kwargs):
        self.calls.append((op, kwargs))
        assert "timeout" in kwargs, "every runner call is bounded"
        if op in self.fail:
            return self.fail[op]
        if op == "members":
            return self.members()
        node = kwargs["node"]
        if op == "add":
            assert ADDR[node] == kwargs["address"]
            self.learners.add(node)
        elif op == "promote":
            self.learners.discard(node)
            self.demoted.discard(node)
            self.voters.add(node)
        elif op == "demote":
            self.voters.discard(node)
            self.learners.add(node)
            self.demoted.add(node)
        elif op == "remove":
            self.voters.discard(node)
            self.learners.discard(node)
            self.demoted.discard(node)
        elif op == "transfer_leader":
            self.leader = node
        else:
            raise AssertionError(f"unexpected op {op}")
        return {"changed": True}

    def changing_calls(self):
        return [(op, kw.get("node")) for op, kw in self.calls if op != "members"]


# ----------------------------------------------------------------------------------------------
# reading raft.members
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply,expected",
    [
        ({"result": False, "error": "raft.members: no reply from the raft engine"}, "no reply"),
        ({"error": "boom"}, "boom"),
        ("Exception occurred in runner raft.members: ...", "unexpected reply"),
        (None, "unexpected reply"),
    ],
)
def test_a_failed_runner_reply_is_an_error(reply, expected):
    assert expected in sl.reply_error(reply)


def test_a_good_runner_reply_is_no_error():
    assert sl.reply_error({"voters": ["m1"], "changed": False}) == ""


def test_no_leader_and_an_uncommitted_membership_are_not_settled():
    assert "no quorum" in sl.settle_problem({"leader": None, "committed": True})
    assert "pending" in sl.settle_problem({"leader": "m1", "committed": False})
    assert sl.settle_problem({"leader": "m1", "committed": True}) == ""


# ----------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------
def members_of(voters, learners=(), **kw):
    fake = FakeRunners(voters, learners, **kw)
    fake.auto_promote = False  # a view as it is, learners not caught up
    return fake.members()


def test_member_absent_voter_is_added_as_a_learner_then_awaited():
    plan = sl.plan_member(members_of(["m1", "m2", "m3"]), "m4", ADDR["m4"])
    assert [s.op for s in plan.steps] == ["add"]
    assert plan.old == {"role": "absent"}
    assert plan.new == {"role": "voter", "address": ADDR["m4"]}


def test_member_absent_learner_is_added_with_a_note_on_auto_promotion():
    plan = sl.plan_member(members_of(["m1"]), "m4", ADDR["m4"], "learner")
    assert [s.op for s in plan.steps] == ["add"] and "auto_promote" in plan.note


def test_member_already_as_declared_plans_nothing():
    plan = sl.plan_member(members_of(["m1", "m2"]), "m2", ADDR["m2"])
    assert plan.steps == () and plan.old == plan.new


def test_member_voter_declared_learner_is_demoted():
    plan = sl.plan_member(members_of(["m1", "m2"]), "m2", ADDR["m2"], "learner")
    assert [(s.op, s.args) for s in plan.steps] == [("demote", {"node": "m2"})]


def test_member_demoted_learner_declared_voter_is_promoted():
    m = members_of(["m1"], ["m2"], demoted=["m2"])
    plan = sl.plan_member(m, "m2", ADDR["m2"])
    assert [s.op for s in plan.steps] == ["promote"]


def test_member_learner_not_demoted_is_left_to_the_leader_and_awaited():
    m = members_of(["m1"], ["m2"])
    plan = sl.plan_member(m, "m2", ADDR["m2"])
    assert plan.steps == () and plan.old["role"] == "learner" and plan.new["role"] == "voter"


@pytest.mark.parametrize(
    "node,address,role,expected",
    [
        ("bad id", ADDR["m4"], "voter", "invalid master id"),
        ("", ADDR["m4"], "voter", "invalid master id"),
        ("m4", ADDR["m4"], "observer", "role must be one of voter, learner"),
        ("m4", "", "voter", "address must be host:port"),
        ("m4", None, "voter", "address must be host:port"),
        ("m4", "10.0.0.4", "voter", "address must be host:port"),
        ("m4", "garbage:", "voter", "address must be host:port"),
        ("m4", "m4.example.com:port", "voter", "address must be host:port"),
        ("m4", "10.0.0.4:0", "voter", "address must be host:port"),
        ("m4", "10.0.0.4:70000", "voter", "address must be host:port"),
        ("m4", "10.0.0.4 :4606", "voter", "address must be host:port"),
        ("m2", "10.9.9.9:4606", "voter", "cannot change in place"),
        ("m1", ADDR["m1"], "learner", "only voter"),
    ],
)
def test_member_refusals(node, address, role, expected):
    members = members_of(["m1"], ["m2"], demoted=["m2"])
    with pytest.raises(sl.StateFailed, match=expected):
        sl.plan_member(members, node, address, role)


def test_absent_removes_a_member_and_not_twice():
    plan = sl.plan_absent(members_of(["m1", "m2", "m3"]), "m3")
    assert [(s.op, s.args) for s in plan.steps] == [("remove", {"node": "m3"})]
    plan = sl.plan_absent(members_of(["m1", "m2"]), "m3")
    assert plan.steps == () and plan.old == plan.new == {"role": "absent"}


def test_absent_refuses_the_master_it_runs_on_and_the_last_voter():
    with pytest.raises(sl.StateFailed, match="runs on"):
        sl.plan_absent(members_of(["m1", "m2", "m3"]), "m1")
    with pytest.raises(sl.StateFailed, match="only voter"):
        sl.plan_absent(members_of(["m2"], ["m1"], leader="m2"), "m2")
    with pytest.raises(sl.StateFailed, match="invalid master id"):
        sl.plan_absent(members_of(["m1"]), "a/b")


def test_leader_transfers_unless_already_there():
    plan = sl.plan_leader(members_of(["m1", "m2"]), "m2")
    assert [(s.op, s.args) for s in plan.steps] == [("transfer_leader", {"node": "m2"})]
    assert plan.old == {"leader": "m1"} and plan.new == {"leader": "m2"}
    assert sl.plan_leader(members_of(["m1", "m2"]), "m1").steps == ()


def test_leader_refuses_an_unknown_master_and_a_learner():
    with pytest.raises(sl.StateFailed, match="unknown master m9"):
        sl.plan_leader(members_of(["m1", "m2"]), "m9")
    with pytest.raises(sl.StateFailed, match="is a learner"):
        sl.plan_leader(members_of(["m1"], ["m2"], demoted=["m2"]), "m2")


# ----------------------------------------------------------------------------------------------
# carrying it out
# ----------------------------------------------------------------------------------------------
def test_member_adds_then_waits_for_the_promotion_and_is_idempotent():
    fake = FakeRunners(["m1", "m2", "m3"])
    ret = sl.member(fake.cluster(), "m4", ADDR["m4"])
    assert ret["result"] is True, ret
    assert ret["changes"] == {
        "old": {"role": "absent"},
        "new": {"role": "voter", "address": ADDR["m4"]},
    }
    assert fake.changing_calls() == [("add", "m4")]
    again = sl.member(fake.cluster(), "m4", ADDR["m4"])
    assert again["result"] is True and again["changes"] == {}, again
    assert "already a voter" in again["comment"]
    assert fake.changing_calls() == [("add", "m4")]


def test_member_fails_when_the_added_learner_is_never_promoted():
    fake = FakeRunners(["m1", "m2", "m3"])
    fake.auto_promote = False  # its master never catches up
    ret = sl.member(fake.cluster(wait=3), "m4", ADDR["m4"])
    assert ret["result"] is False
    assert "still a learner" in ret["comment"] and "not within 3s" in ret["comment"]
    assert "done: add m4 as a learner" in ret["comment"]
    assert ret["changes"] == {"old": {"role": "absent"}, "done": ["add m4 as a learner"]}
    assert fake.clock >= 3  # it waited, bounded


def test_test_mode_reports_the_changes_and_calls_only_members():
    fake = FakeRunners(["m1", "m2", "m3", "m4"], leader="m2")
    for ret in (
        sl.member(fake.cluster(), "m5", ADDR["m5"], test=True),
        sl.absent(fake.cluster(), "m4", test=True),
        sl.leader(fake.cluster(), "m1", test=True),
    ):
        assert ret["result"] is None and ret["changes"], ret
        assert "would" in ret["comment"]
    assert fake.changing_calls() == []
    nothing = sl.absent(fake.cluster(), "m6", test=True)
    assert nothing["result"] is True and nothing["changes"] == {}


def test_absent_and_leader_change_once():
    fake = FakeRunners(["m1", "m2", "m3", "m4"])
    ret = sl.absent(fake.cluster(), "m4")
    assert ret["result"] is True and ret["changes"]["new"] == {"role": "absent"}, ret
    ret = sl.leader(fake.cluster(), "m3")
    assert ret["result"] is True and ret["changes"] == {
        "old": {"leader": "m1"},
        "new": {"leader": "m3"},
    }
    assert sl.absent(fake.cluster(), "m4")["changes"] == {}
    assert sl.leader(fake.cluster(), "m3")["changes"] == {}
    assert fake.changing_calls() == [("remove", "m4"), ("transfer_leader", "m3")]


def test_demote_and_promote_round_trip():
    fake = FakeRunners(["m1", "m2", "m3"])
    ret = sl.member(fake.cluster(), "m3", ADDR["m3"], role="learner")
    assert ret["result"] is True and ret["changes"]["new"]["role"] == "learner", ret
    assert fake.learners == {"m3"}  # demoted: no automatic promotion
    ret = sl.member(fake.cluster(), "m3", ADDR["m3"])
    assert ret["result"] is True and ret["changes"]["new"]["role"] == "voter", ret
    assert fake.changing_calls() == [("demote", "m3"), ("promote", "m3")]


def test_no_leader_fails_after_the_wait_without_changing_anything():
    fake = FakeRunners(["m1", "m2", "m3"], leader=None)
    ret = sl.absent(fake.cluster(wait=2), "m3")
    assert ret["result"] is False and ret["changes"] == {}
    assert "no quorum" in ret["comment"] and "not within 2s" in ret["comment"]
    assert fake.changing_calls() == [] and fake.clock >= 2


def test_a_pending_change_fails_after_the_wait_and_a_committed_one_goes_ahead():
    fake = FakeRunners(["m1", "m2", "m3"], committed=False)
    ret = sl.leader(fake.cluster(wait=2), "m2")
    assert ret["result"] is False and "membership change is pending" in ret["comment"]
    assert fake.changing_calls() == []
    # committed while the state waits: it goes ahead
    fake = FakeRunners(["m1", "m2", "m3"], committed=False)
    real_sleep = fake.sleep

    def commit_then_sleep(seconds):
        fake.committed = True
        real_sleep(seconds)

    fake.sleep = commit_then_sleep
    ret = sl.leader(fake.cluster(wait=2), "m2")
    assert ret["result"] is True and fake.leader == "m2", ret


def test_a_refused_runner_call_fails_the_state_and_says_so():
    fake = FakeRunners(["m1", "m2", "m3"])
    fake.fail["remove"] = {"result": False, "error": "raft.remove: rejected: nope", "retcode": 1}
    ret = sl.absent(fake.cluster(), "m3")
    assert ret["result"] is False and ret["changes"] == {}
    assert "raft.remove failed: raft.remove: rejected: nope" in ret["comment"]
    assert "nothing changed" in ret["comment"]


def test_an_unreachable_engine_fails_every_state():
    fake = FakeRunners(["m1"])
    fake.fail["members"] = {"result": False, "error": "raft.members: no reply", "retcode": 1}
    for ret in (
        sl.member(fake.cluster(wait=1), "m2", ADDR["m2"]),
        sl.absent(fake.cluster(wait=1), "m2"),
        sl.leader(fake.cluster(wait=1), "m1"),
    ):
        assert ret["result"] is False and "no reply" in ret["comment"], ret


def test_a_refusal_is_reported_before_any_call():
    fake = FakeRunners(["m1", "m2"])
    ret = sl.leader(fake.cluster(), "m9")
    assert ret == {
        "name": "m9",
        "result": False,
        "comment": ret["comment"],
        "changes": {},
    }
    assert "unknown master m9" in ret["comment"] and fake.changing_calls() == []


def test_runner_calls_carry_a_bounded_timeout():
    fake = FakeRunners(["m1", "m2"])
    sl.absent(fake.cluster(wait=500), "m2")
    assert {kw["timeout"] for _, kw in fake.calls} == {sl.CALL_TIMEOUT}
    fake = FakeRunners(["m1", "m2"])
    sl.absent(fake.cluster(wait=2), "m2")
    assert {kw["timeout"] for _, kw in fake.calls} == {2.0}


def test_a_learner_declared_voter_is_left_to_auto_promotion_and_awaited():
    fake = FakeRunners(["m1"], ["m2"])
    fake.auto_promote = False
    polls = []

    def catch_up_later(seconds):
        polls.append(seconds)
        fake.auto_promote = len(polls) >= 3  # caught up after a few polls
        fake.clock += seconds

    fake.sleep = catch_up_later
    ret = sl.member(fake.cluster(wait=10), "m2", ADDR["m2"])
    assert ret["result"] is True, ret
    assert ret["changes"]["old"]["role"] == "learner" and ret["changes"]["new"]["role"] == "voter"
    assert fake.changing_calls() == []  # promoted by the leader, not by the state


@pytest.mark.parametrize("test", [False, True])
def test_a_member_state_with_an_address_that_is_not_host_port_calls_no_runner(test):
    """``garbage:`` passed the old check (a colon) and reached ``raft.add``; committed, it
    stopped every node that applied it (docs/security.md, "Node addresses")."""
    runners = FakeRunners(["m1", "m2", "m3"])
    ret = sl.member(runners.cluster(), "m4", "garbage:", test=test)
    assert ret["result"] is False and "address must be host:port" in ret["comment"]
    assert ret["changes"] == {}
    assert runners.changing_calls() == []
