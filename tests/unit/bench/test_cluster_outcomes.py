"""bench cluster reports every proposal by kind of outcome (issue 17, part 5)."""

from saltext_raft.bench.figures import OUTCOMES
from saltext_raft.bench.figures import outcomes


def test_load_results_are_counted_by_kind_of_outcome():
    loads = [
        {"committed": 10, "errors": {"overloaded": 4, "timeout": 1}},
        {"committed": 5, "errors": {"no_leader": 2, "stopped": 1}},
        {"committed": 0, "errors": {}},
    ]
    assert outcomes(*loads) == {"committed": 15, "overloaded": 4, "timeout": 1, "other": 3}
    assert tuple(outcomes()) == OUTCOMES
