"""The one serializer for everything saltext-raft puts on the wire.

Lives here: the msgpack encoding of ``Message`` (with its ``Entry`` tuples and its
``SnapshotChunk``, whose ``SnapshotMeta`` carries the ``Membership``) inside a versioned
envelope, its strict decoder, and generic helpers for application payloads. Must not live
here: sockets, keys, Salt, the storage records (``storage/records.py``), or any second wire
encoding of a core type.

Theory of operation
-------------------
A message is one msgpack array, its first element the codec version::

    [1, type, to, frm, term, log_term, index, entries, commit, reject,
     hint_index, hint_term, context, snapshot]

``entries`` is an array of ``[term, index, kind, data]`` arrays (``Entry`` is a NamedTuple, so
msgpack packs it as an array without any per-entry conversion). ``snapshot`` is nil or
``[meta, offset, data, done, total]`` with ``meta = [index, term, voters, learners, addresses,
demoted, removed]`` (a 6-element meta from before tombstones still decodes).

Decoding trusts nothing: every field's type and range is checked, booleans are not accepted
as integers, unknown message types and entry kinds are refused, and any failure — including
the ones msgpack itself raises — surfaces as exactly one exception class, :class:`CodecError`,
whose ``reason`` is a short stats key (``"malformed"``, ``"version"``, ``"oversize"``).
"""

from __future__ import annotations

import msgpack

from saltext_raft.core.types import Entry
from saltext_raft.core.types import EntryKind
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Message
from saltext_raft.core.types import MsgType
from saltext_raft.core.types import SnapshotChunk
from saltext_raft.core.types import SnapshotMeta

__all__ = [
    "CODEC_VERSION",
    "CodecError",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_ID_LEN",
    "MAX_U63",
    "decode_message",
    "decode_payload",
    "encode_message",
    "encode_payload",
]

CODEC_VERSION = 1
#: Largest integer any field may carry: terms, indexes and offsets stay within a signed int64
#: so that other implementations (and msgpack's int64 encodings) can read them.
MAX_U63 = (1 << 63) - 1
#: Node ids and addresses are Salt master ids / "host:port" strings.
MAX_ID_LEN = 255
MAX_ADDRESS_LEN = 1024
MAX_CONTEXT_LEN = 1 << 16  # request ids, "transfer"; APP messages are exempt (see _APP)
MAX_MEMBERS = 1024
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
DEFAULT_MAX_PAYLOAD_BYTES = 16 << 20

_unpackb = msgpack.unpackb
_MSG_TYPES = {int(t): t for t in MsgType}
_ENTRY_KINDS = {int(k): k for k in EntryKind}
_MSG_FIELDS = 14
_ENTRY_TYPES = (MsgType.APPEND, MsgType.PROPOSE)
# APP carries a runtime payload in ``context``: bounded by the frame size, not MAX_CONTEXT_LEN.
_APP = getattr(MsgType, "APP", None)


class CodecError(ValueError):
    """Anything that cannot be encoded or decoded. ``reason`` is a stats key, ``detail`` prose.

    This is the only exception the decoders raise, whatever the input.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _bad(detail: str) -> CodecError:
    return CodecError("malformed", detail)


# --- strict field checks ------------------------------------------------------------------
# ``type(x) is int`` on purpose: msgpack decodes booleans to bool, a subclass of int.


def _u63(value, name: str) -> int:
    if type(value) is not int or value < 0 or value > MAX_U63:
        raise _bad(f"{name} must be an integer in [0, 2**63)")
    return value


def _ident(value, name: str) -> str:
    if type(value) is not str or len(value) > MAX_ID_LEN:
        raise _bad(f"{name} must be a string of at most {MAX_ID_LEN} characters")
    return value


def _bytes(value, name: str, limit: int | None = None) -> bytes:
    if type(value) is not bytes or (limit is not None and len(value) > limit):
        raise _bad(f"{name} must be bytes" + (f" of at most {limit}" if limit is not None else ""))
    return value


def _bool(value, name: str) -> bool:
    if type(value) is not bool:
        raise _bad(f"{name} must be a boolean")
    return value


def _array(value, name: str, length: int | None = None) -> tuple:
    if type(value) is not tuple or (length is not None and len(value) != length):
        raise _bad(f"{name} must be an array" + (f" of {length}" if length is not None else ""))
    return value


def _refuse_ext(code, data):
    raise ValueError(f"ext type {code} is not accepted")


def _unpack(data, max_bytes: int, what: str):
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise _bad(f"{what} must be bytes")
    if len(data) > max_bytes:
        raise CodecError("oversize", f"{what} of {len(data)} bytes exceeds {max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise _bad(f"{what} is not valid msgpack ({type(exc).__name__})") from None


def _envelope(obj, what: str, length: int) -> tuple:
    if type(obj) is not tuple or not obj:
        raise _bad(f"{what} envelope must be a non-empty array")
    version = obj[0]
    if type(version) is not int:
        raise _bad(f"{what} version must be an integer")
    if version != CODEC_VERSION:
        raise CodecError(
            "version", f"{what} codec version {version} (this node speaks {CODEC_VERSION})"
        )
    if len(obj) != length:
        raise _bad(f"{what} envelope must have {length} fields, not {len(obj)}")
    return obj


# --- entries ---------------------------------------------------------------------------------


def _entry(raw) -> Entry:
    if type(raw) is not tuple or len(raw) != 4:
        raise _bad("an entry must be an array of 4")
    term, index, kind, data = raw
    if type(term) is not int or term < 0 or term > MAX_U63:
        raise _bad("entry term must be an integer in [0, 2**63)")
    if type(index) is not int or index < 0 or index > MAX_U63:
        raise _bad("entry index must be an integer in [0, 2**63)")
    if type(kind) is not int or kind not in _ENTRY_KINDS:
        raise _bad(f"unknown entry kind {kind!r}")
    if type(data) is not bytes:
        raise _bad("entry data must be bytes")
    return Entry(term, index, _ENTRY_KINDS[kind], data)


_tuple_new = tuple.__new__


def _entries(raw) -> tuple[Entry, ...]:
    # The hot loop of APPEND decoding: inline checks, and tuple.__new__ instead of the
    # NamedTuple's Python-level __new__. Any entry failing the fast check goes through
    # _entry() for a precise error.
    if type(raw) is not tuple:
        raise _bad("entries must be an array")
    out = []
    append = out.append
    kinds = _ENTRY_KINDS
    for raw_entry in raw:
        if type(raw_entry) is tuple and len(raw_entry) == 4:
            term, index, kind, data = raw_entry
            if (
                type(term) is int
                and type(index) is int
                and type(kind) is int
                and type(data) is bytes
                and 0 <= term <= MAX_U63
                and 0 <= index <= MAX_U63
                and kind in kinds
            ):
                append(_tuple_new(Entry, (term, index, kinds[kind], data)))
                continue
        _entry(raw_entry)  # raises, naming what is wrong
        raise _bad("invalid entry")  # pragma: no cover - _entry always raises here
    return tuple(out)


# --- membership and snapshot meta ------------------------------------------------------------


def _meta_array(meta: SnapshotMeta) -> tuple:
    m = meta.membership
    return (
        meta.index,
        meta.term,
        tuple(sorted(m.voters)),
        tuple(sorted(m.learners)),
        tuple(sorted(m.addresses)),
        tuple(sorted(m.demoted)),
        tuple(sorted(m.removed)),
    )


def _ids(raw, name: str) -> frozenset[str]:
    _array(raw, name)
    if len(raw) > MAX_MEMBERS:
        raise _bad(f"too many {name}")
    for nid in raw:
        _ident(nid, name)
    ids = frozenset(raw)
    if len(ids) != len(raw):
        raise _bad(f"duplicate {name}")
    return ids


def _tombstones(raw) -> tuple[tuple[str, int], ...]:
    _array(raw, "removed")
    if len(raw) > MAX_MEMBERS:
        raise _bad("too many removed ids")
    out = []
    for pair in raw:
        nid, index = _array(pair, "removed id", 2)
        out.append((_ident(nid, "removed id"), _u63(index, "removal index")))
    if len({nid for nid, _ in out}) != len(out):
        raise _bad("duplicate removed id")
    return tuple(sorted(out))


def _meta(raw) -> SnapshotMeta:
    _array(raw, "snapshot meta")
    if len(raw) == 6:  # written before tombstones existed
        raw = (*raw, ())
    index, term, voters, learners, addresses, demoted, removed = _array(raw, "snapshot meta", 7)
    _array(addresses, "addresses")
    if len(addresses) > MAX_MEMBERS:
        raise _bad("too many addresses")
    pairs = []
    for pair in addresses:
        nid, addr = _array(pair, "address", 2)
        _ident(nid, "address node id")
        if type(addr) is not str or len(addr) > MAX_ADDRESS_LEN:
            raise _bad("address must be a short string")
        pairs.append((nid, addr))
    if len({nid for nid, _ in pairs}) != len(pairs):
        raise _bad("duplicate address node id")
    voters_set = _ids(voters, "voters")
    learners_set = _ids(learners, "learners")
    if voters_set & learners_set:
        raise _bad("a member is both voter and learner")
    demoted_set = _ids(demoted, "demoted")
    if not demoted_set <= learners_set:
        raise _bad("a demoted member is not a learner")
    removed_ids = _tombstones(removed)
    if {nid for nid, _ in removed_ids} & (voters_set | learners_set):
        raise _bad("a removed id is a member")
    membership = Membership(
        voters=voters_set,
        learners=learners_set,
        addresses=tuple(sorted(pairs)),
        demoted=demoted_set,
        removed=removed_ids,
    )
    return SnapshotMeta(_u63(index, "snapshot index"), _u63(term, "snapshot term"), membership)


# --- messages --------------------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """Encode ``msg``. Raises :class:`CodecError` ("unencodable") if a field cannot be packed.

    The encoder does not re-validate field ranges (that costs per message and the decoder on
    the other side does it); property tests check that everything the core can build decodes.
    """
    snap = msg.snapshot
    if snap is not None:
        try:
            snap = (_meta_array(snap.meta), snap.offset, snap.data, snap.done, snap.total)
        except Exception as exc:
            raise CodecError("unencodable", f"snapshot chunk: {exc}") from None
    try:
        return msgpack.packb(
            (
                CODEC_VERSION,
                msg.type,
                msg.to,
                msg.frm,
                msg.term,
                msg.log_term,
                msg.index,
                msg.entries,
                msg.commit,
                msg.reject,
                msg.hint_index,
                msg.hint_term,
                msg.context,
                snap,
            ),
            use_bin_type=True,
        )
    except Exception as exc:
        raise CodecError("unencodable", f"message: {exc}") from None


def decode_message(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Decode and validate one message. Raises only :class:`CodecError`."""
    # Fast path inlined (this runs once per inbound frame); any oddity takes the slow path,
    # which raises with a precise reason.
    obj = None
    if type(data) is bytes and len(data) <= max_bytes:
        try:
            obj = _unpackb(
                data,
                raw=False,
                use_list=False,
                strict_map_key=True,
                max_ext_len=0,
                ext_hook=_refuse_ext,
            )
        except Exception:  # the slow path below reports what was wrong
            obj = None
    if (
        type(obj) is not tuple
        or len(obj) != _MSG_FIELDS
        or obj[0] != CODEC_VERSION
        or type(obj[0]) is not int
    ):
        obj = _envelope(_unpack(data, max_bytes, "message"), "message", _MSG_FIELDS)
    (
        _,
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        entries,
        commit,
        reject,
        hint_index,
        hint_term,
        context,
        snap,
    ) = obj
    mtype = _MSG_TYPES.get(mtype) if type(mtype) is int else None
    if mtype is None:
        raise _bad(f"unknown message type {obj[1]!r}")
    if entries:
        if mtype not in _ENTRY_TYPES:
            raise _bad(f"{mtype.name} cannot carry entries")
        entries = _entries(entries)
    elif entries != ():
        raise _bad("entries must be an array")
    if snap is not None or mtype is MsgType.SNAPSHOT:
        snap = _chunk(mtype, snap)
    # Fast path: one expression for the common case; on failure re-check field by field so the
    # error names the field.
    if not (
        type(term) is int
        and type(log_term) is int
        and type(index) is int
        and type(commit) is int
        and type(hint_index) is int
        and type(hint_term) is int
        and 0 <= term <= MAX_U63
        and 0 <= log_term <= MAX_U63
        and 0 <= index <= MAX_U63
        and 0 <= commit <= MAX_U63
        and 0 <= hint_index <= MAX_U63
        and 0 <= hint_term <= MAX_U63
        and type(to) is str
        and type(frm) is str
        and len(to) <= MAX_ID_LEN
        and len(frm) <= MAX_ID_LEN
        and type(reject) is bool
        and type(context) is bytes
        and (len(context) <= MAX_CONTEXT_LEN or mtype is _APP)
    ):
        for value, name in (
            (term, "term"),
            (log_term, "log_term"),
            (index, "index"),
            (commit, "commit"),
            (hint_index, "hint_index"),
            (hint_term, "hint_term"),
        ):
            _u63(value, name)
        _ident(to, "to")
        _ident(frm, "frm")
        _bool(reject, "reject")
        _bytes(context, "context", None if mtype is _APP else MAX_CONTEXT_LEN)
    return Message(
        mtype,
        to,
        frm,
        term,
        log_term,
        index,
        entries,
        commit,
        reject,
        hint_index,
        hint_term,
        context,
        snap,
    )


def _chunk(mtype: MsgType, snap) -> SnapshotChunk:
    if mtype is not MsgType.SNAPSHOT:
        raise _bad(f"{mtype.name} cannot carry a snapshot chunk")
    if snap is None:
        raise _bad("SNAPSHOT without a chunk")
    meta, offset, sdata, done, total = _array(snap, "snapshot chunk", 5)
    return SnapshotChunk(
        meta=_meta(meta),
        offset=_u63(offset, "snapshot offset"),
        data=_bytes(sdata, "snapshot data"),
        done=_bool(done, "snapshot done"),
        total=_u63(total, "snapshot total"),
    )


# --- application payloads --------------------------------------------------------------------


def encode_payload(obj, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """Encode a plain value (None, bool, int, float, str, bytes, list/tuple, dict) as msgpack.

    For other layers (proposal bodies, control-channel requests). Raises :class:`CodecError`
    ("unencodable" or "oversize").
    """
    try:
        data = msgpack.packb(obj, use_bin_type=True, strict_types=False, datetime=False)
    except Exception as exc:
        raise CodecError("unencodable", f"payload: {type(exc).__name__}: {exc}") from None
    if len(data) > max_bytes:
        raise CodecError("oversize", f"payload of {len(data)} bytes exceeds {max_bytes}")
    return data


def decode_payload(
    data: bytes,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    *,
    use_list: bool = True,
    max_depth: int = 32,
) -> object:
    """Decode a payload made by :func:`encode_payload`. Map keys must be str/int/bytes; ext
    types are refused; nesting deeper than ``max_depth`` is refused. Raises only CodecError."""
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise _bad("payload must be bytes")
    if len(data) > max_bytes:
        raise CodecError("oversize", f"payload of {len(data)} bytes exceeds {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=use_list,
            strict_map_key=True,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except Exception as exc:
        raise _bad(f"payload is not valid msgpack ({type(exc).__name__})") from None
    _check_depth(obj, max_depth)
    return obj


_PAYLOAD_LEAVES = (type(None), bool, int, float, str, bytes)


def _check_depth(obj, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` and anything but plain msgpack values."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is list or kind is tuple or kind is dict:
            if depth >= max_depth:
                raise _bad(f"payload nested deeper than {max_depth}")
            stack.extend((x, depth + 1) for x in (item.values() if kind is dict else item))
        elif kind not in _PAYLOAD_LEAVES:
            raise _bad(f"payload holds a {kind.__name__}")
