"""The three-node clusters ``bench cluster`` loads, beside our own ``ProcCluster``.

Lives here: :class:`SyncObjCluster` (three PySyncObj processes, ``bench.pysyncobj_node``, with
the same control ops and waits as ``ProcCluster``, optionally with SyncObjConf settings) and
:func:`ours_leader` (our committed leader, with the bounds the benchmark needs) and
:func:`log_size` (how many entries a node's log holds). Used by the
classic sections (``bench.cluster``) and the sweep (``bench.sweep``). Must not live here:
process handling itself (``bench.procs``), loads and their figures.
"""

from __future__ import annotations

import os

from saltext_raft.bench.procs import NodeProc
from saltext_raft.bench.procs import ProcCluster
from saltext_raft.bench.procs import free_port


class SyncObjCluster:
    """Three PySyncObj processes with the same control ops as our nodes; ``conf``: SyncObjConf
    settings as ``name=value`` (default: PySyncObj's own defaults)."""

    def __init__(self, workdir: str, python: str, conf=()):
        self.workdir = workdir
        self.python = python
        self.conf = [a for setting in conf for a in ("--conf", setting)]
        self.addresses = {f"p{i}": f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
        self.nodes: dict[str, NodeProc] = {}

    def start(self, nid: str) -> NodeProc:
        partners = ",".join(a for n, a in self.addresses.items() if n != nid)
        node = NodeProc(
            nid,
            self.addresses[nid],
            ["--self", self.addresses[nid], "--partners", partners, *self.conf],
            os.path.join(self.workdir, f"{nid}.log"),
            self.python,
            command=("saltext_raft.bench.pysyncobj_node",),
        )
        self.nodes[nid] = node
        return node.start()

    def start_all(self):
        for nid in self.addresses:
            self.start(nid)

    statuses = ProcCluster.statuses
    wait = ProcCluster.wait
    _summary = ProcCluster._summary
    close = ProcCluster.close

    def leader(
        self, timeout: float = 15.0, exclude_term: int = 0, min_commit: int = -1
    ) -> NodeProc:
        def find():
            for nid, st in self.statuses().items():
                if (
                    st["role"] == "leader"
                    and st["term"] > exclude_term
                    and st["commit_index"] > min_commit
                ):
                    return self.nodes[nid]
            return None

        return self.wait("a PySyncObj leader that committed", find, timeout, interval=0.01)


def ours_leader(cluster, timeout=15.0, exclude_term=0, min_commit=-1) -> NodeProc:
    """The node of our ``cluster`` (a ProcCluster) that leads and has committed an entry of its
    term, in a term after ``exclude_term``, beyond ``min_commit``."""

    def find():
        for nid, st in cluster.statuses().items():
            if (
                st["role"] == "leader"
                and st["leader_committed"]
                and st["term"] > exclude_term
                and st["commit_index"] > min_commit
            ):
                return cluster.nodes[nid]
        return None

    return cluster.wait("a leader that committed in its term", find, timeout, interval=0.01)


def log_size(node) -> int:
    """How many entries ``node``'s log holds now (behind its snapshot: compacted ones are not
    counted)."""
    st = node.call("status")
    return st["last_index"] - st.get("first_index", 1) + 1
