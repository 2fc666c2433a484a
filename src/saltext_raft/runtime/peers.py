"""Which addresses the transport is told about.

Lives here: :class:`Peers` — the addresses known from configuration, those learned from nodes
that asked to join, every address in the current membership, and the last address of members
just removed (a removed node is still told about its removal); handing the union to the
transport whenever the membership or a joiner's address changes, and logging this node's own
removal. Must not live here: sockets and reconnects (``transport``), membership changes
(``core``, ``runtime.admin``).

The port is narrow: the node id, the runtime's ``peers`` dict (shared: it is the runtime's
public ``peers``), a getter of the current membership and the transport's ``set_peers``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from saltext_raft.core import Membership
from saltext_raft.runtime.remote import removed_message

log = logging.getLogger(__name__)


class Peers:
    """The peer addresses of one node."""

    def __init__(
        self,
        node_id: str,
        known: dict[str, str],
        membership: Callable[[], Membership],
        set_peers: Callable[[dict[str, str]], None],
    ):
        self.id = node_id
        self.known = known
        self._membership_now = membership
        self._set_peers = set_peers
        self._membership: Membership | None = None

    def follow(self) -> None:
        """After a Ready: update the transport if the membership changed."""
        if self._membership_now() is not self._membership:
            self.update()

    def learn_joiner(self, node_id: str, address: str) -> None:
        """A node that is not a member asked to join (its frame authenticated with the cluster
        secret): remember its address so replies and, once it is added, the log reach it."""
        if address and node_id != self.id and node_id not in self._membership_now().members:
            if self.known.get(node_id) != address:
                self.known[node_id] = address
                self.update()

    def update(self) -> None:
        previous, membership = self._membership, self._membership_now()
        self._membership = membership
        if previous is not None:
            for nid in previous.members - membership.members:
                # A removed node is still told about its removal (RaftNode._departing): keep
                # reaching it at its last address.
                if nid != self.id and nid not in self.known and previous.address_of(nid):
                    self.known[nid] = previous.address_of(nid)
            removed_at = membership.removed_at(self.id)
            if removed_at and self.id in previous.members:
                log.warning("raft %s: %s", self.id, removed_message(self.id, removed_at))
        addresses = dict(self.known)
        addresses.update(membership.addresses)
        addresses.pop(self.id, None)
        self._set_peers(addresses)
