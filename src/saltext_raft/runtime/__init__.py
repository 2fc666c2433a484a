"""The asyncio runtime around the Raft core: driver, client API, state-machine contract.

Never imports Salt (tests/unit/test_layering.py enforces it).
"""

from saltext_raft.runtime.config import RuntimeConfig
from saltext_raft.runtime.config import RuntimeConfigError
from saltext_raft.runtime.config import default_core_config
from saltext_raft.runtime.driver import RaftRuntime
from saltext_raft.runtime.errors import CommitTimeout
from saltext_raft.runtime.errors import NoLeader
from saltext_raft.runtime.errors import Overloaded
from saltext_raft.runtime.errors import RaftRuntimeError
from saltext_raft.runtime.errors import Rejected
from saltext_raft.runtime.errors import Stopped
from saltext_raft.runtime.errors import StorageFailed
from saltext_raft.runtime.statemachine import DictStateMachine
from saltext_raft.runtime.statemachine import StateMachine

__all__ = [
    "CommitTimeout",
    "DictStateMachine",
    "NoLeader",
    "Overloaded",
    "RaftRuntime",
    "RaftRuntimeError",
    "Rejected",
    "RuntimeConfig",
    "RuntimeConfigError",
    "StateMachine",
    "Stopped",
    "StorageFailed",
    "default_core_config",
]
