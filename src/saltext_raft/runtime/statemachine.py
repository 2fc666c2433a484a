"""The state-machine contract the runtime applies committed entries to, and a built-in one.

Lives here: :class:`StateMachine` (the protocol) and :class:`DictStateMachine` (a dict of bytes
keyed by bytes, used by the standalone node and the benchmarks). Must not live here: anything
about Raft messages or storage; the Salt cache driver brings its own state machine.

Contract (hashicorp/raft's FSM, adapted):

- ``apply(entry)`` is called once per committed NORMAL entry, in log order, on every node, with
  ``entry.data`` being the payload the client proposed (the runtime strips its own envelope).
  It must be deterministic: same entries in the same order, same state on every node. Its
  return value is handed to the ``propose`` call that made the entry (on the node it was made
  on). It runs on the event loop: keep it short.
- ``snapshot()`` returns the whole state as bytes; it is called between two ``apply`` calls and
  its result covers exactly the entries applied so far.
- ``restore(data)`` replaces the whole state with a snapshot's bytes.
- ``snapshot_later()`` (optional): returns a callable, taking no arguments, that produces the
  bytes ``snapshot()`` would return at the time of the ``snapshot_later()`` call. It is called
  on the loop between two ``apply`` calls and must be quick (copy what is needed, not encode
  it); the runtime then runs the callable on a worker thread while ``apply`` goes on, so a big
  state's encoding does not stall the loop (heartbeats, elections). A state machine without it
  is snapshotted with ``snapshot()`` on the loop.
- ``restore_later(data)`` (optional): returns a callable, taking no arguments, that decodes
  ``data`` without touching the machine's state and returns a second callable, which installs
  the decoded state (what ``restore(data)`` does). The runtime runs the first on a worker thread
  while the loop goes on (no entries are applied meanwhile) and the second on the loop, so a
  follower receiving a big snapshot does not stall its loop. Errors in either are raised as
  ``restore`` would raise them. A state machine without it is restored with ``restore()`` on the
  loop.
"""

from __future__ import annotations

from typing import Protocol

import msgpack

from saltext_raft.core.types import Entry


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> object:
        """Apply a committed entry; returns the proposer's result. An exception is the
        proposer's answer and the entry counts as applied (every node fails on it the same
        way), unless the exception has a true ``halt`` attribute: the node then stops without
        applying it (see ``ApplyHalted``), for entries some nodes can apply and this one
        cannot, such as a command of a newer version."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class DictStateMachine:
    """A tiny replicated dict. Commands (the proposed payload):

    - ``b"S" + u8 keylen + key + value``: set key to value; result: the entry index;
    - ``b"D" + key``: delete; result: True if the key existed;
    - anything else: counted only; result: the entry index (benchmarks propose opaque bytes).
    """

    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.applied = 0
        self.count = 0

    @staticmethod
    def set_command(key: bytes, value: bytes) -> bytes:
        if len(key) > 255:
            raise ValueError("key longer than 255 bytes")
        return b"S" + bytes([len(key)]) + key + value

    @staticmethod
    def delete_command(key: bytes) -> bytes:
        return b"D" + key

    def apply(self, entry: Entry) -> object:
        data = entry.data
        self.applied = entry.index
        self.count += 1
        op = data[:1]
        if op == b"S" and len(data) >= 2:
            n = data[1]
            self.data[data[2 : 2 + n]] = data[2 + n :]
        elif op == b"D":
            return self.data.pop(data[1:], None) is not None
        return entry.index

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return msgpack.packb([self.applied, self.count, self.data], use_bin_type=True)

    def snapshot_later(self):
        state = [self.applied, self.count, dict(self.data)]  # keys and values are immutable
        return lambda: msgpack.packb(state, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        if not data:
            self.data, self.applied, self.count = {}, 0, 0
            return
        self.applied, self.count, kv = msgpack.unpackb(data, raw=False, strict_map_key=False)
        self.data = dict(kv)
