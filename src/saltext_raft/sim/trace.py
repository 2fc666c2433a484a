"""Readable one-line renderings of messages, entries and Readys for ``--trace``.

Lives here: pure formatting functions. Nothing here decides or checks anything.
"""

from __future__ import annotations

from saltext_raft.core.types import ConfChange
from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.kv import decode_entry
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE


def fmt_entry(e: Entry) -> str:
    if e.kind == EntryKind.CONF:
        try:
            cc = ConfChange.decode(e.data)
            what = f"conf:{cc.op.value}:{cc.node_id}"
        except (ValueError, KeyError):
            what = "conf:?"
    elif not e.data:
        what = "noop"
    elif e.data[:1] == _KV_COMMAND or e.data[:2] == _KV_BATCH:
        what = fmt_kv(e.data)
    else:
        what = e.data.decode(errors="replace")
    return f"{e.index}/t{e.term}:{what}"


_KV_COMMAND = b"\x97"  # msgpack fixarray of 7: an encoded kv Command
_KV_BATCH = b"\x92\x03"  # fixarray of 2 starting with BATCH: an encoded kv batch


def fmt_kv(data: bytes) -> str:
    """``store:kv/k1='c1.3'@c1#3`` or ``flush:kv/k1@c2#4`` (client and seq when set); a batch
    is its commands in braces."""
    try:
        batch, cmds = decode_entry(data)
    except ValueError:
        return data.decode(errors="replace")
    text = ",".join(_fmt_command(cmd) for cmd in cmds)
    return "{" + text + "}" if batch else text


def _fmt_command(cmd) -> str:
    op = {STORE: "store", ADD: "add"}.get(cmd.op, "flush")
    s = f"{op}:{cmd.bank}/{cmd.key}"
    if cmd.op != FLUSH:
        s += f"={cmd.value.decode(errors='replace')!r}"
    if cmd.client:
        s += f"@{cmd.client}#{cmd.seq}"
    return s


def fmt_entries(entries) -> str:
    if not entries:
        return "[]"
    if len(entries) <= 4:
        return "[" + " ".join(fmt_entry(e) for e in entries) + "]"
    return f"[{fmt_entry(entries[0])} .. {fmt_entry(entries[-1])} ({len(entries)})]"


def fmt_msg(m: Message) -> str:
    t = m.type
    s = f"{m.frm}->{m.to} {t.name} t{m.term}"
    if t == MsgType.APPEND:
        s += f" prev=({m.index},t{m.log_term}) ents={fmt_entries(m.entries)} commit={m.commit}"
    elif t in (MsgType.APPEND_RESP, MsgType.SNAPSHOT_RESP):
        s += f" index={m.index}"
        if m.reject:
            s += f" REJECT hint=({m.hint_index},t{m.hint_term})"
    elif t in (MsgType.VOTE, MsgType.PRE_VOTE):
        s += f" last=({m.index},t{m.log_term})"
        if m.context:
            s += f" ctx={m.context!r}"
    elif t in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
        s += " REJECT" if m.reject else " GRANT"
    elif t in (MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP):
        s += f" commit={m.commit}"
        if m.context:
            s += f" ctx={m.context!r}"
    elif t == MsgType.SNAPSHOT and m.snapshot is not None:
        c = m.snapshot
        s += f" snap@{c.meta.index}/t{c.meta.term} off={c.offset} len={len(c.data)} done={c.done}"
    elif t in (MsgType.READ_INDEX, MsgType.READ_INDEX_RESP):
        s += f" ctx={m.context!r} index={m.index}"
    elif t == MsgType.PROPOSE:
        s += f" ents={fmt_entries(m.entries)}"
    return s


def fmt_ready(nid: str, rd) -> str:
    parts = []
    if rd.soft_state is not None:
        ss = rd.soft_state
        parts.append(f"role={ss.role.value} leader={ss.leader or '-'}")
    if rd.snapshot is not None:
        meta = rd.snapshot.meta
        parts.append(f"snapshot@{meta.index}/t{meta.term}")
    if rd.entries:
        parts.append(f"persist {fmt_entries(rd.entries)}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        parts.append(f"hs(term={hs.term} vote={hs.vote or '-'} commit={hs.commit})")
    if rd.messages:
        parts.append(f"send {len(rd.messages)}")
    if rd.committed_entries:
        parts.append(f"apply {fmt_entries(rd.committed_entries)}")
    if rd.read_states:
        parts.append("reads " + " ".join(f"{r.context.decode()}@{r.index}" for r in rd.read_states))
    return f"{nid} ready: " + "; ".join(parts)
