"""Assembling one Raft node: settings, transport and runtime, wired the same way everywhere.

Lives here: :class:`NodeSpec` (who the node is and what it knows: ids, addresses, secret,
peers, founders, timing overrides) and :func:`assemble`, which turns a spec, a store and a
state machine into a :class:`~saltext_raft.runtime.driver.RaftRuntime` with its core config,
runtime config and zmq transport, the transport's frame cap derived from both configs
(``runtime.limits``). The engine service, the standalone node (``saltext_raft.standalone``)
and the cache benchmark's node all build their node here, so a new setting is wired once.

Must not live here: opening the store (``storage``, which needs Salt), reading or checking
the secret file (callers do, with the engine's checker), claiming the persisted boot epoch
(callers do, ``integration.bootepoch``), the state machine, the control channel, Salt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from saltext_raft.runtime.config import RuntimeConfig
from saltext_raft.runtime.config import default_core_config
from saltext_raft.runtime.driver import RaftRuntime
from saltext_raft.runtime.limits import max_frame_bytes
from saltext_raft.transport.config import TransportConfig

__all__ = ["NodeSpec", "assemble"]


@dataclass(frozen=True)
class NodeSpec:
    """What one node is: enough to build it, nothing about how it stores or applies."""

    node_id: str
    cluster_id: str
    #: host:port the transport binds.
    listen: str
    secret: bytes = field(repr=False)
    #: {node id: address} known from configuration (the transport also learns the members').
    peers: Mapping[str, str] = field(default_factory=dict)
    #: {node id: address} of the founding voters (bootstrap on first start).
    founders: Mapping[str, str] = field(default_factory=dict)
    #: Address the other nodes reach this one at ("": its entry in ``peers`` or ``founders``;
    #: ``listen`` may be a wildcard, so it is never assumed).
    advertise: str = ""
    #: Never bootstrap: ask a peer to add this node (JOIN).
    join: bool = False
    #: Further secrets frames are accepted under (rotation).
    accept_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    aead: str = TransportConfig.aead
    #: Core timing; None keeps the defaults that go with the default tick.
    election_ticks: int | None = None
    heartbeat_ticks: int | None = None


def assemble(
    spec: NodeSpec,
    store,
    state_machine,
    config: RuntimeConfig | None = None,
    *,
    transport_class=None,
    epoch: int | None = None,
) -> RaftRuntime:
    """The runtime of ``spec`` over ``store`` and ``state_machine`` (not started).

    ``config``: runtime settings (default: :class:`RuntimeConfig`'s); ``transport_class``: a
    :class:`~saltext_raft.transport.zmqtransport.ZmqTransport` or a subclass of it (the
    standalone node's fault-injecting one), default ``ZmqTransport``; ``epoch``: the boot epoch
    the caller claimed and persisted for this start (None: the transport picks one, for nodes
    that keep no state between boots).
    """
    if transport_class is None:
        # pyzmq only for callers that build a node (transport/__init__ imports it lazily too).
        from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

        transport_class = ZmqTransport
    timing = {
        name: value
        for name, value in (
            ("election_ticks", spec.election_ticks),
            ("heartbeat_ticks", spec.heartbeat_ticks),
        )
        if value is not None
    }
    core_config = default_core_config(spec.node_id, **timing).validate()
    config = (config or RuntimeConfig()).validate()
    transport = transport_class(
        TransportConfig(
            cluster_id=spec.cluster_id,
            node_id=spec.node_id,
            secret=spec.secret,
            accept_secrets=tuple(spec.accept_secrets),
            listen=spec.listen,
            aead=spec.aead,
            max_frame_bytes=max_frame_bytes(core_config, config),
        ),
        epoch=epoch,
    )
    return RaftRuntime(
        spec.node_id,
        store,
        transport,
        state_machine,
        core_config=core_config,
        config=config,
        founders=dict(spec.founders),
        peers=dict(spec.peers),
        address=spec.advertise,
        join=spec.join,
    )
