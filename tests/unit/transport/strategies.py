"""Hypothesis strategies for the core value types the transport carries."""

from __future__ import annotations

from hypothesis import strategies as st

from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.transport.codec import MAX_U63

u63 = st.one_of(st.integers(0, 1000), st.integers(0, MAX_U63))
node_ids = st.text(min_size=0, max_size=20)
small_bytes = st.binary(max_size=200)

entries = st.builds(
    Entry,
    term=u63,
    index=u63,
    kind=st.sampled_from(list(EntryKind)),
    data=small_bytes,
)


@st.composite
def memberships(draw):
    ids = draw(st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=7))
    split = draw(st.integers(0, len(ids)))
    voters, learners = frozenset(ids[:split]), frozenset(ids[split:])
    addressed = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    addresses = tuple(sorted((nid, draw(st.text(max_size=30))) for nid in addressed))
    gone = draw(st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=4))
    removed = tuple(sorted((nid, draw(u63)) for nid in gone if nid not in ids))
    return Membership(voters=voters, learners=learners, addresses=addresses, removed=removed)


snapshot_metas = st.builds(SnapshotMeta, index=u63, term=u63, membership=memberships())
snapshot_chunks = st.builds(
    SnapshotChunk, meta=snapshot_metas, offset=u63, data=small_bytes, done=st.booleans(), total=u63
)


@st.composite
def messages(draw, to=node_ids, frm=node_ids):
    mtype = draw(st.sampled_from(list(MsgType)))
    carries_entries = mtype in (MsgType.APPEND, MsgType.PROPOSE)
    return Message(
        type=mtype,
        to=draw(to),
        frm=draw(frm),
        term=draw(u63),
        log_term=draw(u63),
        index=draw(u63),
        entries=tuple(draw(st.lists(entries, max_size=8))) if carries_entries else (),
        commit=draw(u63),
        reject=draw(st.booleans()),
        hint_index=draw(u63),
        hint_term=draw(u63),
        context=draw(st.binary(max_size=40)),
        snapshot=draw(snapshot_chunks) if mtype is MsgType.SNAPSHOT else None,
    )
