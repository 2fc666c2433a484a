"""Value types shared by the Raft core and everything around it.

Lives here: log entries, hard state, membership, snapshots, messages, the ``Ready`` batch the
core hands out, and the exceptions the core raises. All are plain values: no I/O, no Salt,
no clocks. The codec in ``saltext_raft.transport`` and the stores in ``saltext_raft.storage``
serialize these types; nothing else should invent its own wire or disk shape for them.

Node ids are strings (Salt master ids). ``""`` means "nobody" (no vote, no leader).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from dataclasses import field
from typing import NamedTuple

NONE = ""  # the id of nobody: no vote cast, no leader known
#: Removed ids a membership remembers (the newest by removal index); see ``Membership.removed``.
MAX_TOMBSTONES = 256


class EntryKind(enum.IntEnum):
    """What an entry's ``data`` means. Normal entries are opaque to the core."""

    NORMAL = 0
    CONF = 1  # data is an encoded ConfChange (see ConfChange.encode)


class Entry(NamedTuple):
    """One log entry. A NamedTuple: cheap to build, compare and serialize."""

    term: int
    index: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""


class HardState(NamedTuple):
    """What must be on stable storage before any message that depends on it is sent.

    ``commit`` is persisted too, so that after a full-cluster restart a node knows what was
    committed without waiting for a new leader (Salt core defect 2).
    """

    term: int = 0
    vote: str = NONE
    commit: int = 0


@dataclass(frozen=True)
class Membership:
    """A cluster configuration: voters, learners and each member's address (opaque to the core).

    Learners receive the log but never vote and never count toward any quorum.
    ``demoted`` are learners that were voters and were demoted on purpose: automatic promotion
    leaves them alone (only an explicit promote turns them back into voters).
    ``removed`` are tombstones, ``(node id, index of the entry that removed it)`` sorted by id:
    a removed node may not add itself back (JOIN) until an explicit add clears its tombstone.
    They are part of the replicated state so that every node, the removed one included once it
    has that entry, knows it (at most ``MAX_TOMBSTONES``, the newest).
    """

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    addresses: tuple[tuple[str, str], ...] = ()
    demoted: frozenset[str] = frozenset()
    removed: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        overlap = self.voters & self.learners
        if overlap:
            raise ValueError(f"members cannot be both voter and learner: {sorted(overlap)}")
        if not self.demoted <= self.learners:
            raise ValueError(
                f"demoted members must be learners: {sorted(self.demoted - self.learners)}"
            )
        gone = {nid for nid, _ in self.removed}
        if len(gone) != len(self.removed) or gone & (self.voters | self.learners):
            raise ValueError(f"removed ids must be distinct non-members: {list(self.removed)}")

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def address_of(self, node_id: str) -> str:
        for nid, addr in self.addresses:
            if nid == node_id:
                return addr
        return ""

    def removed_at(self, node_id: str) -> int:
        """The index of the entry that removed ``node_id`` if it is tombstoned here, else 0."""
        for nid, index in self.removed:
            if nid == node_id:
                return index
        return 0

    def with_removed(self, node_id: str, index: int) -> tuple[tuple[str, int], ...]:
        """The tombstones with ``node_id`` removed at ``index`` (``index`` 0: cleared)."""
        kept = [(n, i) for n, i in self.removed if n != node_id]
        if index:
            kept.append((node_id, index))
            if len(kept) > MAX_TOMBSTONES:
                kept = sorted(kept, key=lambda t: (t[1], t[0]))[-MAX_TOMBSTONES:]
        return tuple(sorted(kept))

    def to_dict(self) -> dict:
        out = {
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "addresses": dict(sorted(self.addresses)),
        }
        if self.demoted:
            out["demoted"] = sorted(self.demoted)
        if self.removed:
            out["removed"] = dict(self.removed)
        return out

    @classmethod
    def from_dict(cls, obj: dict) -> Membership:
        addrs = obj.get("addresses") or {}
        return cls(
            voters=frozenset(obj.get("voters") or ()),
            learners=frozenset(obj.get("learners") or ()),
            addresses=tuple(sorted((str(k), str(v)) for k, v in addrs.items())),
            demoted=frozenset(obj.get("demoted") or ()),
            removed=tuple(sorted((str(k), int(v)) for k, v in (obj.get("removed") or {}).items())),
        )

    def with_address(self, node_id: str, address: str) -> tuple[tuple[str, str], ...]:
        kept = [(n, a) for n, a in self.addresses if n != node_id]
        if address:
            kept.append((node_id, address))
        return tuple(sorted(kept))


class ConfOp(str, enum.Enum):
    """Single-server membership changes (Raft thesis §4.1)."""

    BOOTSTRAP = "bootstrap"  # entry 1 of a founding node: the founding voter set
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"  # learner -> voter
    DEMOTE = "demote"  # voter -> learner
    REMOVE = "remove"  # voter or learner -> gone
    #: Written offline by ``force_new_cluster`` (core/recovery.py) after a permanent loss of
    #: quorum, never proposed: the node that wrote it becomes the only voter.
    FORCE_NEW_CLUSTER = "force_new_cluster"


@dataclass(frozen=True)
class ConfChange:
    """A membership change as carried in a CONF entry.

    The entry carries the *resulting* membership as well as the operation, so any node can
    rebuild its configuration from the latest CONF entry alone (no replay, no static peer list:
    Salt core defect 4). Encoded as JSON: the core uses the standard library only.
    """

    op: ConfOp
    node_id: str
    address: str = ""
    result: Membership | None = None

    def encode(self) -> bytes:
        obj = {"op": self.op.value, "node": self.node_id, "address": self.address}
        if self.result is not None:
            obj["result"] = self.result.to_dict()
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        obj = json.loads(data)
        result = obj.get("result")
        return cls(
            op=ConfOp(obj["op"]),
            node_id=obj["node"],
            address=obj.get("address", ""),
            result=Membership.from_dict(result) if result is not None else None,
        )


#: Leadership transfer by name (not a membership entry: the leader hands over, thesis §3.10).
TRANSFER_LEADER = "transfer_leader"
#: The one vocabulary of the operations that change who is in the cluster or who leads it, in
#: every channel that carries them: the runtime's methods and admin requests between masters
#: (``runtime/admin.py``), the control socket (``runtime/control.py``) and the runners'
#: requests to the engine (``master/control.py``). The membership ones are ``ConfOp`` values.
MEMBERSHIP_OPS = (
    ConfOp.ADD_LEARNER.value,
    ConfOp.PROMOTE.value,
    ConfOp.DEMOTE.value,
    ConfOp.REMOVE.value,
    TRANSFER_LEADER,
)


class SnapshotMeta(NamedTuple):
    """Where a snapshot stands in the log, and the membership in force at that index."""

    index: int = 0
    term: int = 0
    membership: Membership = Membership()


class Snapshot(NamedTuple):
    meta: SnapshotMeta
    data: bytes = b""


class MsgType(enum.IntEnum):
    APPEND = 1  # AppendEntries
    APPEND_RESP = 2
    HEARTBEAT = 3
    HEARTBEAT_RESP = 4
    VOTE = 5  # RequestVote
    VOTE_RESP = 6
    PRE_VOTE = 7  # thesis §9.6
    PRE_VOTE_RESP = 8
    SNAPSHOT = 9  # InstallSnapshot, one bounded chunk per message
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11  # leader transfer: campaign now (thesis §3.10)
    READ_INDEX = 12  # follower asks the leader for a read index (thesis §6.4)
    READ_INDEX_RESP = 13
    PROPOSE = 14  # follower forwards a proposal to the leader
    TRANSFER_LEADER = 15  # follower forwards a transfer request to the leader
    APP = 16  # runtime-to-runtime request/reply (admin forwarding, join); the core ignores it


@dataclass(slots=True)
class SnapshotChunk:
    """One piece of an InstallSnapshot transfer. ``offset`` counts bytes of snapshot data."""

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool
    total: int = 0


@dataclass(slots=True)
class Message:
    """A Raft message. Field meaning depends on ``type``:

    APPEND:        index/log_term = the entry before ``entries``; commit = leader commit.
    APPEND_RESP:   index = last index now matching (accept) or the rejected index (reject);
                   hint_index/hint_term = conflict hint for fast backtracking (§5.3).
    VOTE/PRE_VOTE: index/log_term = candidate's last log index/term; context = b"transfer"
                   when campaigning on a leader transfer (voters then ignore their lease).
    HEARTBEAT:     commit = min(leader commit, follower match); context = read-index round.
    SNAPSHOT:      snapshot = the chunk. SNAPSHOT_RESP: index = bytes received so far,
                   reject = restart from 0; log_term = snapshot index acknowledged;
                   commit = that index once the follower holds everything the snapshot
                   covers (installed it, or its log already did), else 0.
    READ_INDEX(_RESP): context = the caller's request id; index = the read index.
    PROPOSE:       entries = the proposed entries (term/index 0, assigned by the leader);
                   log_term = the proposer's term when it sent them (0: untagged). A leader
                   appends them only in that term, so once the proposer has applied an entry of
                   a later term, a proposal it has not seen applied can never commit.
    APP:           context = an opaque runtime payload; never stepped into the core.
    """

    type: MsgType
    to: str
    frm: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] | list[Entry] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: bytes = b""
    snapshot: SnapshotChunk | None = None


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class SoftState(NamedTuple):
    """Volatile state that observers care about; reported in Ready when it changes."""

    leader: str
    role: Role


class ReadState(NamedTuple):
    """A ReadIndex result: once ``applied >= index`` a read for ``context`` is linearizable."""

    index: int
    context: bytes


@dataclass
class Ready:
    """One batch of work from the core. The driver must, in this order:

    1. send the messages the core lets leave before the save (``split()[0]``);
    2. persist ``snapshot`` (if any), then ``entries``, then ``hard_state`` (if any) — durably;
    3. send the rest of ``messages``;
    4. restore ``snapshot`` into the state machine, then apply ``committed_entries``;
    5. call ``RaftNode.advance(ready)``.

    Which messages may leave before the save is the core's decision (``early_types``, set by
    ``RaftNode.ready``), not the driver's: votes and acknowledgements promise that the state
    behind them is on disk and never leave early. A driver may always send a message later than
    allowed: sending every message after step 2 is the plain contract.

    ``commit_only``: nothing in this Ready must be durable before its messages leave or its
    entries are applied — no entries, no snapshot, term and vote as last saved; at most the
    commit index moved. The driver may then send and apply at once and save ``hard_state``
    afterwards, even with a later save (losing a commit index in a crash is harmless: it is
    learnt again from the leader).
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    #: Every message, in the order the core queued it.
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    #: The types of message that may leave before the save. A set of types, not a second
    #: list, so that ``messages`` keeps the core's order for a driver that sends all at once.
    early_types: frozenset[MsgType] = frozenset()
    commit_only: bool = False

    @property
    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None

    def split(self, messages: list[Message] | None = None) -> tuple[list[Message], list[Message]]:
        """``messages`` (default: this Ready's; a driver may pass them reordered, or with held
        ones of an earlier Ready added) as (may leave before the save, only after it), each in
        the order given."""
        if messages is None:
            messages = self.messages
        early = self.early_types
        if not early:
            return [], messages
        now, later = [], []
        for m in messages:
            (now if m.type in early else later).append(m)
        return now, later


class RaftError(Exception):
    """Base class for errors the core reports to its caller."""


class NotLeader(RaftError):
    """The operation needs the leader. ``leader`` is who this node believes leads ("" if none)."""

    def __init__(self, leader: str, msg: str = ""):
        super().__init__(msg or (f"not the leader; leader is {leader}" if leader else "no leader"))
        self.leader = leader


class ProposalDropped(RaftError):
    """The proposal was refused (leader transfer in progress, change pending, bad change...)."""


class ConfigError(RaftError, ValueError):
    """A core Config value is invalid."""
