"""How the runtime's parts are wired to each other and to the runtime, in one place.

Lives here: :class:`Parts` and :func:`wire` — which part gets which port: every part gets the
runtime's :class:`~saltext_raft.runtime.host.Host`; besides it, reads get a fresh context from
the proposals and the observers' ``emit``, snapshots a getter of the state machine and a way
to queue a log compaction, admin the ``Remote`` and the change waiters, the applier the other
parts, and ``Remote`` a :class:`~saltext_raft.runtime.remote.RemotePort`. Must not live here:
what any part does, the Ready loop (``runtime.driver``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from typing import NamedTuple

from saltext_raft.core import Message
from saltext_raft.core import Snapshot
from saltext_raft.runtime.admin import Admin
from saltext_raft.runtime.apply import Applier
from saltext_raft.runtime.events import Events
from saltext_raft.runtime.host import Host
from saltext_raft.runtime.peers import Peers
from saltext_raft.runtime.proposals import Proposals
from saltext_raft.runtime.reads import Reads
from saltext_raft.runtime.remote import Remote
from saltext_raft.runtime.remote import RemotePort
from saltext_raft.runtime.snapshots import Snapshots
from saltext_raft.runtime.view import entry_committed


class Parts(NamedTuple):
    events: Events
    peers: Peers
    remote: Remote
    proposals: Proposals
    reads: Reads
    snapshots: Snapshots
    admin: Admin
    applier: Applier


def wire(
    host: Host,
    *,
    peers: dict[str, str],
    transport: Callable[[], object],
    send: Callable[[Message], bool],
    state_machine: Callable[[], object],
    admin: Callable[..., Awaitable[dict]],
    compact: Callable[[Snapshot], asyncio.Future],
) -> Parts:
    """The parts of one runtime. ``peers`` is the runtime's own (shared) dict; ``transport``
    and ``state_machine`` are getters, looked up at each use (a test may wrap or swap them);
    ``admin`` is ``RaftRuntime.admin`` (what a request from another node runs); ``send`` is
    how ``Remote`` sends (the runtime's: held commit-index updates to that member go first)."""

    def membership():
        return host.node.membership

    events = Events(host)
    peer_addresses = Peers(
        host.node_id, peers, membership, lambda addresses: transport().set_peers(addresses)
    )
    remote = Remote(
        RemotePort(
            host.node_id,
            send=send,
            running=host.running,
            membership=membership,
            admin=admin,
            learn_joiner_address=peer_addresses.learn_joiner,
            entry_committed=lambda index, term: entry_committed(host.node, index, term),
            request_timeout=lambda: host.config.request_timeout,
        )
    )
    proposals = Proposals(host)
    reads = Reads(host, proposals.context, events.emit)
    snapshots = Snapshots(host, state_machine, compact)
    admin_part = Admin(host, remote, events)
    applier = Applier(
        host,
        state_machine=state_machine,
        proposals=proposals,
        reads=reads,
        snapshots=snapshots,
        admin=admin_part,
        emit=events.emit,
    )
    return Parts(events, peer_addresses, remote, proposals, reads, snapshots, admin_part, applier)
