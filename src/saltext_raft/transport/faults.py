"""Test-only fault injection for a real transport: cut this node's links to chosen peers.

Lives here: :class:`PartitionableZmqTransport`, a :class:`ZmqTransport` that drops every
message to and from the peers it was told to cut off (counted as ``partitioned``), so that a
test can partition a running node process (the standalone node's ``partition`` control op,
enabled only by ``--allow-fault-injection``; docs/operations.md). Must not live here: the
decision to partition (the test's), anything on the engine or Salt path: masters never build
this class.

Why drop in the transport rather than in the network: the nodes share one loopback interface
and one user, so a firewall rule would need root and would reach other tests' ports. Dropping
both ways on every node involved (the test calls the op on each side) is what a partition
looks like to Raft: frames leave, nothing arrives. Inbound frames are dropped after
authentication (the sender is only known then), outbound ones before sealing.
"""

from __future__ import annotations

from saltext_raft.core.nodeid import check_node_id
from saltext_raft.core.types import Message
from saltext_raft.transport.zmqtransport import ZmqTransport

__all__ = ["PartitionableZmqTransport"]

#: The drop reason (transport.base.DROP_REASONS) of a message to or from a cut-off peer.
PARTITIONED = "partitioned"


class PartitionableZmqTransport(ZmqTransport):
    """A :class:`ZmqTransport` whose links to some peers can be cut and healed (tests only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cut: frozenset[str] = frozenset()

    def partition(self, peers) -> list[str]:
        """Drop everything to and from ``peers`` from now on (replacing the previous set; an
        empty one heals). Returns the ids now cut off. Raises ValueError on an invalid id or
        this node's own."""
        cut = frozenset(check_node_id(p) for p in peers)
        if self.node_id in cut:
            raise ValueError(f"a node cannot be partitioned from itself ({self.node_id!r})")
        self._cut = cut
        return sorted(cut)

    @property
    def partitioned_from(self) -> list[str]:
        return sorted(self._cut)

    def send(self, msg: Message) -> bool:
        if msg.to in self._cut:
            self._drop(PARTITIONED, msg.to, "link cut by fault injection")
            return False
        return super().send(msg)

    def _deliver(self, msg: Message) -> None:
        if msg.frm in self._cut:
            self._drop(PARTITIONED, msg.frm, "link cut by fault injection")
            return
        super()._deliver(msg)

    def stats(self) -> dict:
        out = super().stats()
        out["partitioned_from"] = self.partitioned_from
        return out
