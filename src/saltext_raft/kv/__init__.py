"""A replicated key/value state machine with Salt cache semantics (no Salt import).

``KVStateMachine`` applies committed commands (store, add-if-absent, flush; one or a batch per
entry) deterministically, answers reads (fetch, list, contains, updated) from its local copy,
deduplicates client retries by (client id, sequence number), and snapshots/restores itself.
The Salt cache driver ``raft`` and the simulator's linearizability workload both drive it.
"""

from saltext_raft.kv.machine import Command
from saltext_raft.kv.machine import KVStateMachine
from saltext_raft.kv.machine import decode_command
from saltext_raft.kv.machine import decode_entry
from saltext_raft.kv.machine import encode_batch
from saltext_raft.kv.machine import encode_command
from saltext_raft.kv.machine import encode_entry

__all__ = [
    "Command",
    "KVStateMachine",
    "decode_command",
    "decode_entry",
    "encode_batch",
    "encode_command",
    "encode_entry",
]
