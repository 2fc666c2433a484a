"""Moving Raft messages between masters.

Public API: the codec (the only serializer), frame crypto, the :class:`Transport` interface
with its pyzmq and in-memory implementations, and :class:`TransportConfig`. Nothing in this
package imports Salt. ``ZmqTransport`` is imported lazily so that codec-only users (storage,
tests) do not need pyzmq loaded.
"""

from saltext_raft.transport.base import DROP_REASONS
from saltext_raft.transport.base import Transport
from saltext_raft.transport.base import TransportClosed
from saltext_raft.transport.codec import CodecError
from saltext_raft.transport.config import TransportConfig
from saltext_raft.transport.config import TransportConfigError
from saltext_raft.transport.memory import MemoryNetwork
from saltext_raft.transport.memory import MemoryTransport

__all__ = [
    "DROP_REASONS",
    "CodecError",
    "MemoryNetwork",
    "MemoryTransport",
    "Transport",
    "TransportClosed",
    "TransportConfig",
    "TransportConfigError",
    "ZmqTransport",
]


def __getattr__(name):
    if name == "ZmqTransport":
        from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

        return ZmqTransport
    raise AttributeError(name)
