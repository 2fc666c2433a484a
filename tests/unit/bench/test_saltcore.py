"""The ``salt_core`` section of ``bench cluster``: skipped with a reason without Salt's core
Raft, and labelled as a reference, never a like-for-like comparison."""

from __future__ import annotations

import argparse
import sys

import pytest

from saltext_raft.bench import cluster
from saltext_raft.bench import saltcore


def _quick_options(**changes) -> argparse.Namespace:
    o = cluster.build_parser().parse_args(["--quick"])
    o.runs, o.latency_count, o.throughput_count, o.trials = 1, 20, 20, 1
    o.salt_core_log_entries, o.salt_core_seconds = 30, 30.0
    for key, value in changes.items():
        setattr(o, key, value)
    return o


def test_section_is_skipped_with_a_reason_when_salt_core_raft_is_not_importable(monkeypatch):
    # None in sys.modules makes any import of the package fail, as on Salt 3007.
    monkeypatch.setitem(sys.modules, "salt.cluster.consensus", None)
    out = saltcore.section(_quick_options())
    assert out["label"] == saltcore.LABEL
    assert "not importable" in out["skipped"]
    assert "3008" in out["skipped"]
    assert set(out) == {"label", "skipped"}


def test_cluster_bench_records_the_skip(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "salt.cluster.consensus", None)
    out = cluster.salt_core_section(_quick_options(), {}, str(tmp_path))
    assert "skipped" in out and "ratios_ours_over_salt_core" not in out


def test_label_says_reference_only_and_not_like_for_like():
    assert "one process" in saltcore.LABEL
    assert "for reference only" in saltcore.LABEL
    assert "not a like-for-like comparison" in saltcore.LABEL


def test_parser_has_the_salt_core_flags():
    o = cluster.build_parser().parse_args(["--no-salt-core", "--salt-core-log-entries", "5"])
    assert o.no_salt_core and o.salt_core_log_entries == 5


@pytest.mark.skipif(
    saltcore.unavailable_reason() is not None, reason="Salt's core Raft (3008+) is not installed"
)
def test_three_core_nodes_elect_a_leader_and_commit_through_the_pump():
    """In memory (no storage): the pump elects a leader and commits proposals in order."""
    c = saltcore.CoreCluster(None)
    nid = c.elect(timeout=30.0)
    seqs = [c.propose(nid) for _ in range(5)]
    c.settle(nid, timeout=30.0)
    assert all(seq in c.machines[nid].applied for seq in seqs)
    assert all(n.log.commit_index == c.nodes[nid].log.index for n in c.nodes.values())
    assert c.errors == {}
