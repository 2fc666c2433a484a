"""Property tests (hypothesis) for the pure pieces: quorum arithmetic, the log, membership."""

import random

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from saltext_raft.core import ConfChange
from saltext_raft.core import Config
from saltext_raft.core import ConfOp
from saltext_raft.core import Entry
from saltext_raft.core import Membership
from saltext_raft.core import ProposalDropped
from saltext_raft.core import RaftNode
from saltext_raft.core import quorum
from saltext_raft.core.log import RaftLog

ids = st.sampled_from([f"n{i}" for i in range(7)])


@given(st.dictionaries(ids, st.integers(0, 100), min_size=1))
def test_committed_index_is_stored_on_a_majority_and_is_the_largest_such(match):
    voters = set(match)
    ci = quorum.committed_index(voters, match)
    holders = [v for v in voters if match[v] >= ci]
    assert len(holders) >= quorum.majority(len(voters))
    assert sum(1 for v in voters if match[v] >= ci + 1) < quorum.majority(len(voters))


@given(st.sets(ids, min_size=1), st.dictionaries(ids, st.integers(0, 100)))
def test_non_voters_never_change_the_committed_index(voters, extra):
    match = dict.fromkeys(voters, 5)
    base = quorum.committed_index(voters, match)
    match.update({k: 10**6 for k in extra if k not in voters})
    assert quorum.committed_index(voters, match) == base


@given(st.sets(ids, min_size=1), st.dictionaries(ids, st.booleans()))
def test_vote_result_is_consistent(voters, votes):
    res = quorum.vote_result(voters, votes)
    granted = sum(1 for v in voters if votes.get(v) is True)
    refused = sum(1 for v in voters if votes.get(v) is False)
    need = quorum.majority(len(voters))
    if res is quorum.VoteResult.WON:
        assert granted >= need
    elif res is quorum.VoteResult.LOST:
        assert len(voters) - refused < need
    else:
        assert granted < need <= len(voters) - refused


def test_two_disjoint_sets_cannot_both_be_quorums():
    voters = {f"n{i}" for i in range(5)}
    for k in range(1, 5):
        a = set(sorted(voters)[:k])
        assert not (quorum.has_quorum(voters, a) and quorum.has_quorum(voters, voters - a))


# --- log ------------------------------------------------------------------------------------
terms = st.lists(st.integers(1, 5), min_size=0, max_size=40).map(sorted)


def make_log(term_list, offset=0, offset_term=0):
    ents = [Entry(t, offset + 1 + i, 0, b"") for i, t in enumerate(term_list)]
    return RaftLog(offset, offset_term, ents)


@given(terms, st.integers(0, 45), st.integers(0, 6))
def test_find_conflict_by_term_matches_a_linear_scan(term_list, index, term):
    log = make_log(term_list)
    got = log.find_conflict_by_term(index, term)
    i = min(index, log.last_index)
    while i > 0 and log.term_at(i) > term:
        i -= 1
    assert got == (i, log.term_at(i))


@given(terms, st.integers(1, 40), st.lists(st.integers(5, 9), min_size=1, max_size=10).map(sorted))
def test_truncate_and_append_keeps_prefix_and_lowers_stable(term_list, at, new_terms):
    log = make_log(term_list)
    at = min(at, log.last_index + 1)
    old = log.slice(1, at)
    new = [Entry(t, at + i, 0, b"n") for i, t in enumerate(new_terms)]
    log.truncate_and_append(new)
    assert log.slice(1, at) == old
    assert log.slice(at, log.last_index + 1) == new
    assert log.stable <= at - 1
    assert log.unstable()[0].index <= at


@given(terms, st.integers(0, 40))
def test_compaction_keeps_terms_of_remaining_entries(term_list, upto):
    log = make_log(term_list)
    upto = min(upto, log.last_index)
    expected = {i: log.term_at(i) for i in range(upto, log.last_index + 1)}
    log.compact(upto)
    assert {i: log.term_at(i) for i in range(upto, log.last_index + 1)} == expected
    assert log.first_index == upto + 1


# --- membership -----------------------------------------------------------------------------
ops = st.lists(
    st.tuples(st.sampled_from(list(ConfOp)[1:]), ids),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(0, 2**32))
def test_membership_changes_keep_invariants(changes, seed):
    """Any sequence of single-server changes keeps voters and learners disjoint, never empties
    the voter set, round-trips through its encoding, and never lets a second change in while
    one is uncommitted (here other members never answer, so a change that adds a voter stays
    pending)."""
    node = RaftNode.bootstrap(Config("n0", auto_promote=False), random.Random(seed), {"n0": ""})
    node.campaign()  # a one-voter cluster elects itself at once

    def settle():
        while node.has_ready():
            node.advance(node.ready())

    settle()
    for op, nid in changes:
        before = node.membership
        pending = node.pending_conf_index > node.commit_index
        try:
            node.propose_conf_change(op, nid, address=f"addr-{nid}")
        except ProposalDropped:
            assert node.membership == before
            continue
        assert not pending, "a second membership change was accepted while one was pending"
        settle()
        m = node.membership
        assert not (m.voters & m.learners)
        assert m.voters
        assert Membership.from_dict(m.to_dict()) == m
        cc = ConfChange.decode(node.entries(node.last_index, node.last_index + 1)[0].data)
        assert cc.result == m
        if node.role.value != "leader":
            break  # the leader removed or demoted itself: its part is over
