"""The node's ``load`` op (bench/nodeload.py): every proposal answered from its future's
callback, with ``outstanding`` in flight, refusals backed off and errors counted by code."""

from __future__ import annotations

import asyncio

from saltext_raft.bench import nodeload
from saltext_raft.runtime import CommitTimeout
from saltext_raft.runtime import Overloaded


class FakeRuntime:
    """``submit`` like ``RaftRuntime.submit``: a future answered on a later loop pass; refuses
    with ``overloaded`` the first ``refusals`` times and fails every ``fail_every``-th."""

    def __init__(self, refusals=0, fail_every=0):
        self.refusals = refusals
        self.fail_every = fail_every
        self.submitted = 0
        self.in_flight = 0
        self.most_in_flight = 0

    def submit(self, data, timeout):
        if self.refusals:
            self.refusals -= 1
            raise Overloaded("too many waiting")
        self.submitted += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fail = self.fail_every and self.submitted % self.fail_every == 0

        def answer():
            self.in_flight -= 1
            if fail:
                fut.set_exception(CommitTimeout("not committed in time"))
            else:
                fut.set_result(b"ok")

        loop.call_soon(answer)
        return fut


def _run(rt, **req):
    return asyncio.run(asyncio.wait_for(nodeload.run_load(rt, req), 10))


def test_count_proposals_with_outstanding_in_flight_all_committed():
    rt = FakeRuntime()
    out = _run(rt, count=1000, outstanding=50, size=10, duration=10)
    assert out["committed"] == rt.submitted == 1000
    assert out["errors"] == {}
    assert rt.most_in_flight == 50


def test_errors_are_counted_by_code_and_count_toward_the_proposals_issued():
    rt = FakeRuntime(fail_every=4)
    out = _run(rt, count=100, outstanding=3, size=10, duration=10)
    assert rt.submitted == 100
    assert out["errors"] == {"timeout": 25} and out["committed"] == 75


def test_a_refused_proposal_is_retried_after_a_back_off_and_not_counted_as_issued():
    rt = FakeRuntime(refusals=3)
    out = _run(rt, count=5, outstanding=1, size=10, duration=10)
    assert out["errors"] == {"overloaded": 3}
    assert out["committed"] == rt.submitted == 5
    # 5 + 10 + 20 ms of back-off before the first proposal got in
    assert out["seconds"] >= 3 * nodeload.BACKOFF_FIRST


def test_the_load_stops_at_its_duration():
    rt = FakeRuntime(refusals=10**9)  # never gets in: only the duration ends it
    out = _run(rt, count=10, outstanding=2, size=10, duration=0.2)
    assert out["committed"] == 0 and rt.submitted == 0
    assert out["errors"]["overloaded"] >= 2
