"""What the ``raft`` state module decides: from ``raft.members`` to the runner calls it makes.

Lives here: reading a ``raft.members`` reply (is there a leader, is the last membership change
committed), planning each state (``member``, ``absent``, ``leader``) as the runner calls that
would bring the cluster there, carrying them out through a ``call(op, **kwargs)`` function
passed in, waiting (bounded) for what follows a call (a learner's promotion, a new leader), and
the state return mapping (``name``, ``changes``, ``result``, ``comment``). Must not live here:
how the runners are reached (``states/raft.py`` passes ``call``), what the runners do (they ask
the engine, ``master/control.py``), Salt itself: this module imports only the standard
library and the id and address rules (``core.nodeid``, ``transport.config``), so every branch
is tested without Salt.

Each state is idempotent: it reads the membership first and calls a runner only for what
differs. With ``test=True`` it calls nothing but ``members`` and answers ``result: None`` with
the changes it would make. It refuses (``result: False``, nothing changed) when the cluster
has no leader within ``wait`` seconds (no quorum), when a membership change stays uncommitted
for ``wait`` seconds (a change already pending), and when the request cannot be met by
single-server changes (a new address for an existing member, removing the last voter or the
master the state runs on, leadership on a master that is no voter).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.transport.config import address_problem

#: The roles ``raft.member`` accepts.
ROLES = ("voter", "learner")

#: What ``changes`` and comments call a master that is no member.
ABSENT = "absent"

#: Seconds between two ``raft.members`` polls while a state waits.
POLL_INTERVAL = 0.5

#: Seconds each runner call may take on the engine side (its ``timeout`` argument).
CALL_TIMEOUT = 30.0

Call = Callable[..., object]


class StateFailed(Exception):
    """The state cannot (or could not) reach what it declares; the message is its comment."""


@dataclass(frozen=True)
class Step:
    """One runner call: ``raft.<op>`` with ``args``, and what it does in words."""

    op: str
    args: dict
    says: str


@dataclass(frozen=True)
class Plan:
    """What a state would do: the runner calls in order, the role (or leader) before and after,
    and a note for the comment. After the calls, the state waits until this master sees
    ``new`` (for a voter added as a learner: its automatic promotion)."""

    steps: tuple[Step, ...] = ()
    old: dict = field(default_factory=dict)
    new: dict = field(default_factory=dict)
    note: str = ""


# ----------------------------------------------------------------------------------------------
# reading raft.members
# ----------------------------------------------------------------------------------------------
def reply_error(reply) -> str:
    """Why a runner reply is a failure ("" if it is a good reply). The runners answer a failure
    with ``result: False`` and ``error``; anything that is no mapping (an exception turned into
    text by the runner client) is a failure too."""
    if not isinstance(reply, dict):
        return f"unexpected reply {reply!r}"
    if reply.get("result") is False or "error" in reply:
        return str(reply.get("error") or reply)
    return ""


def settle_problem(members: dict) -> str:
    """Why no membership change should be planned on ``members`` now ("" if none): no leader
    known (an election, or no quorum), or the latest membership not committed yet."""
    if not members.get("leader"):
        return "no leader: the cluster has no quorum (or an election has not finished)"
    if members.get("committed") is False:
        return (
            "a membership change is pending: the latest membership (voters "
            f"{members.get('voters')}, learners {members.get('learners')}) is not committed yet"
        )
    return ""


def role_of(members: dict, node: str) -> str:
    if node in (members.get("voters") or ()):
        return "voter"
    if node in (members.get("learners") or ()):
        return "learner"
    return ABSENT


def address_of(members: dict, node: str) -> str:
    entry = (members.get("members") or {}).get(node) or {}
    return str(entry.get("address") or "")


def _check_node(node) -> str:
    problem = node_id_problem(node)
    if problem:
        raise StateFailed(f"invalid master id {node!r}: {problem}")
    return node


def _state(members: dict, node: str) -> dict:
    role = role_of(members, node)
    out = {"role": role}
    if role != ABSENT:
        out["address"] = address_of(members, node)
    return out


# ----------------------------------------------------------------------------------------------
# planning (pure)
# ----------------------------------------------------------------------------------------------
def plan_member(members: dict, node: str, address: str, role: str = "voter") -> Plan:
    """``node`` a member at ``address`` with ``role``: add it as a learner if absent (a voter
    is then promoted by the leader once it has caught up), promote a learner that was demoted on
    purpose (the leader never promotes those by itself), demote a voter declared a learner."""
    _check_node(node)
    if role not in ROLES:
        raise StateFailed(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    problem = address_problem(address)
    if problem:
        raise StateFailed(f"address must be host:port of {node}'s raft port: {problem}")
    old = _state(members, node)
    new = {"role": role, "address": address}
    current = old["role"]
    if current != ABSENT and old["address"] and old["address"] != address:
        raise StateFailed(
            f"{node} is a {current} at {old['address']}, not {address}: a member's address "
            "cannot change in place; declare it raft.absent, then raft.member with the new "
            "address"
        )
    if current == ABSENT:
        add = Step("add", {"node": node, "address": address}, f"add {node} as a learner")
        if role == "voter":
            return Plan((add,), old, new)
        return Plan(
            (add,),
            old,
            new,
            note=(
                "with auto_promote on (the engine's default) the leader promotes it once it has "
                "caught up; a voter declared a learner is demoted and then stays one"
            ),
        )
    if current == role:
        return Plan(old=old, new=old)
    if role == "learner":
        if list(members.get("voters") or ()) == [node]:
            raise StateFailed(f"{node} is the only voter: it cannot become a learner")
        return Plan((Step("demote", {"node": node}, f"demote {node} to learner"),), old, new)
    # a learner declared a voter
    if node in (members.get("demoted") or ()):
        return Plan((Step("promote", {"node": node}, f"promote {node} to voter"),), old, new)
    return Plan(old=old, new=new)


def plan_absent(members: dict, node: str) -> Plan:
    """``node`` no member: remove it. Refused for the last voter, and for the master this state
    runs on (it would answer the states after this one from outside the cluster)."""
    _check_node(node)
    old = _state(members, node)
    if old["role"] == ABSENT:
        return Plan(old=old, new=old)
    if node == members.get("answered_by"):
        raise StateFailed(
            f"{node} is the master this state runs on: run the orchestration on another master "
            "to remove it"
        )
    if old["role"] == "voter" and list(members.get("voters") or ()) == [node]:
        raise StateFailed(f"{node} is the only voter: it cannot be removed")
    step = Step("remove", {"node": node}, f"remove {node}")
    return Plan((step,), old, {"role": ABSENT})


def plan_leader(members: dict, node: str) -> Plan:
    """Leadership on ``node``: transfer it there unless it leads already. ``node`` must be a
    voter."""
    _check_node(node)
    role = role_of(members, node)
    if role == ABSENT:
        raise StateFailed(
            f"unknown master {node}: not a member (voters {members.get('voters')}, learners "
            f"{members.get('learners')})"
        )
    if role != "voter":
        raise StateFailed(f"{node} is a learner: only a voter can lead (declare it a voter first)")
    old = {"leader": members.get("leader")}
    if old["leader"] == node:
        return Plan(old=old, new=old)
    step = Step("transfer_leader", {"node": node}, f"transfer leadership to {node}")
    return Plan((step,), old, {"leader": node})


# ----------------------------------------------------------------------------------------------
# carrying a plan out
# ----------------------------------------------------------------------------------------------
class Cluster:
    """The runners as the states use them: ``call(op, **kwargs)`` runs ``raft.<op>``; waits are
    bounded by ``wait`` seconds each and poll ``raft.members``."""

    def __init__(
        self,
        call: Call,
        wait: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._call, self.wait = call, float(wait)
        self._clock, self._sleep = clock, sleep

    def run(self, op: str, **args):
        args.setdefault("timeout", min(CALL_TIMEOUT, max(self.wait, 1.0)))
        reply = self._call(op, **args)
        problem = reply_error(reply)
        if problem:
            raise StateFailed(f"raft.{op} failed: {problem}")
        return reply

    def members(self) -> dict:
        return self.run("members")

    def poll(self, check: Callable[[dict], str], what: str) -> dict:
        """``raft.members`` until ``check(members)`` says nothing is missing (returns ""),
        for at most ``wait`` seconds; then fail with the last thing missing."""
        deadline = self._clock() + self.wait
        while True:
            try:
                members = self.members()
                missing = check(members)
            except StateFailed as exc:
                members, missing = None, str(exc)
            if not missing:
                return members
            if self._clock() >= deadline:
                raise StateFailed(f"{what} not within {self.wait:g}s: {missing}")
            self._sleep(POLL_INTERVAL)

    def settled(self) -> dict:
        """``raft.members`` once a leader is known and the membership committed."""
        return self.poll(settle_problem, "a leader and a committed membership")


def _ret(name: str, result, comment: str, changes: dict | None = None) -> dict:
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _changes(plan: Plan) -> dict:
    return {"old": plan.old, "new": plan.new} if plan.old != plan.new else {}


def _reached(plan: Plan, node: str) -> Callable[[dict], str]:
    """A ``poll`` check: "" once ``raft.members`` here shows what ``plan`` declares."""

    def check(members: dict) -> str:
        if "leader" in plan.new:
            leader = members.get("leader")
            return "" if leader == plan.new["leader"] else f"the leader is {leader or 'unknown'}"
        role = role_of(members, node)
        if role == plan.new["role"]:
            return ""
        if plan.old.get("role") == ABSENT and role == "voter":
            return ""  # added as a learner and already promoted: the note says so
        if role == "learner" and plan.new["role"] == "voter":
            return (
                f"{node} is still a learner: the leader promotes a learner once it has caught "
                "up; is its master running, with the cluster's secret? (raft.members on the "
                "leader shows its lag; with auto_promote off, run raft.promote)"
            )
        return f"{node} is a {role}"

    return check


def apply(name: str, plan_for: Callable[[dict], Plan], cluster: Cluster, test: bool) -> dict:
    """Plan on the settled membership, then (unless ``test``) make the calls and wait for what
    follows them. A failure after some calls reports the changes made so far."""
    try:
        plan = plan_for(cluster.settled())
    except StateFailed as exc:
        return _ret(name, False, str(exc))
    if plan.old == plan.new:
        return _ret(name, True, f"{name}: already {_describe(plan.new)}")
    says = "; ".join(s.says for s in plan.steps) or f"wait for {name} to become {plan.new}"
    note = f" ({plan.note})" if plan.note else ""
    if test:
        return _ret(name, None, f"{name}: would {says}{note}", _changes(plan))
    done = []
    try:
        for step in plan.steps:
            cluster.run(step.op, **step.args)
            done.append(step.says)
        # Seen here too, so the next state plans on it: this master may apply a change a
        # moment after the leader has answered.
        cluster.poll(_reached(plan, name), f"{name} to be {_describe(plan.new)}")
    except StateFailed as exc:
        made = f" (done: {'; '.join(done)})" if done else " (nothing changed)"
        partial = {"old": plan.old, "done": done} if done else {}
        return _ret(name, False, f"{name}: {exc}{made}", partial)
    return _ret(name, True, f"{name}: {says}: now {_describe(plan.new)}{note}", _changes(plan))


def _describe(state: dict) -> str:
    if "leader" in state:
        return f"led by {state['leader']}"
    if state.get("role") == ABSENT:
        return "no member"
    return f"a {state['role']} at {state.get('address')}"


def member(cluster: Cluster, name: str, address: str, role: str = "voter", test=False) -> dict:
    """The ``raft.member`` state (states/raft.py documents it)."""
    return apply(name, lambda m: plan_member(m, name, address, role), cluster, test)


def absent(cluster: Cluster, name: str, test=False) -> dict:
    """The ``raft.absent`` state."""
    return apply(name, lambda m: plan_absent(m, name), cluster, test)


def leader(cluster: Cluster, name: str, test=False) -> dict:
    """The ``raft.leader`` state."""
    return apply(name, lambda m: plan_leader(m, name), cluster, test)
