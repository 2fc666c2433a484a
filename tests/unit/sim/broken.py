"""Deliberately broken variants of the core, for the "simulator catches real bugs" tests.

Each class overrides one private method of ``RaftNode`` to reintroduce a classic Raft bug
(several are the Salt core defects the core's docstrings name). They reach into core
internals on purpose; if the core's internals change, update these overrides with them.
"""

from __future__ import annotations

from saltext_raft.core import quorum
from saltext_raft.core.node import RaftNode
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType


class LearnersCountToward(RaftNode):
    """Salt core defect 1: learners' acknowledgements count toward the commit quorum."""

    def _maybe_commit(self) -> bool:
        members = self.membership.voters | self.membership.learners
        match = {nid: pr.match for nid, pr in self.progress.items()}
        match[self.id] = self.log.stable if self.id in members else 0
        mci = quorum.committed_index(members, match)
        if mci > self.log.committed and self.log.term_at(mci) == self.term:
            self.log.commit_to(mci)
            return True
        return False


class CommitsEarlierTermByCounting(RaftNode):
    """Raft paper Figure 8: commit an earlier-term entry because a majority stores it."""

    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        match = {nid: pr.match for nid, pr in self.progress.items()}
        match[self.id] = self.log.stable if self.id in voters else 0
        mci = quorum.committed_index(voters, match)
        if mci > self.log.committed:  # §5.4.2 check missing
            self.log.commit_to(mci)
            return True
        return False


class FollowerCommitsOwnLastIndex(RaftNode):
    """Salt core defect 3: a follower commits up to its own last index, not the append's.

    Entries past what the leader's append covered may be stale leftovers of an old term.
    """

    def _handle_append(self, m: Message) -> None:
        super()._handle_append(m)
        if m.type is MsgType.APPEND and self.log.match_term(m.index, m.log_term):
            target = min(m.commit, self.log.last_index)
            if target > self.log.committed:
                self.log.commit_to(target)


class FollowerCommitsEverything(RaftNode):
    """A follower sets its commit index to its own last index on every append it accepts."""

    def _handle_append(self, m: Message) -> None:
        super()._handle_append(m)
        if self.log.last_index > self.log.committed and self.log.match_term(m.index, m.log_term):
            self.log.commit_to(self.log.last_index)


class ReadIndexWithoutHeartbeatRound(RaftNode):
    """A leader answers ReadIndex at once from its commit index, skipping the heartbeat round
    that proves it is still the leader (thesis §6.4 step 3): a deposed leader that does not
    know it yet serves stale reads."""

    def _start_read_round(self) -> None:
        requests, self._read_batch = self._read_batch, []
        self._release_reads(self.log.committed, requests)


class PromotesOnlyWhenAcksMove(RaftNode):
    """Auto-promotion checked only when a learner's acknowledged index moves (the core before
    2026-11-27): a learner that caught up while a membership change was pending stays a
    learner until the next entry, forever on an idle cluster."""

    def _recheck_promotion(self, nid, pr) -> None:
        pass
