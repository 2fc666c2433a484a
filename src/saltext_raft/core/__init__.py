"""The Raft core: a pure state machine (standard library only).

No Salt, no asyncio, no sockets, no clocks (time arrives as ticks), no module-level random
(an RNG is passed in). Everything here can run in the deterministic simulator.
"""

from saltext_raft.core.config import Config
from saltext_raft.core.node import RaftNode
from saltext_raft.core.types import NONE
from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import ConfOp
from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import NotLeader
from saltext_raft.core.types import ProposalDropped
from saltext_raft.core.types import RaftError
from saltext_raft.core.types import ReadState
from saltext_raft.core.types import Ready
from saltext_raft.core.types import Role
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.core.types import SoftState

__all__ = [
    "NONE",
    "Config",
    "ConfChange",
    "ConfOp",
    "Entry",
    "EntryKind",
    "HardState",
    "Membership",
    "Message",
    "MsgType",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "Ready",
    "ReadState",
    "Role",
    "Snapshot",
    "SnapshotChunk",
    "SnapshotMeta",
    "SoftState",
]
