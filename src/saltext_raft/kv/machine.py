"""The key/value state machine: banks of keys, as Salt's cache sees them.

Lives here: command encoding, deterministic apply, reads, dedup of client retries, snapshots.
Must not live here: Salt, clocks (a store's ``updated`` time is the proposer's timestamp,
carried in the command, so every node applies the same value), I/O.

Banks are paths ("minions/web1"); a bank holds keys and sub-banks, like a directory. As with
Salt's localfs driver, storing into a bank creates it and its parents, flushing a key leaves
its bank in place, and flushing a bank removes it with everything below it.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import NamedTuple

import msgpack

from saltext_raft.version import __version__

STORE = 1
FLUSH = 2
#: Not a command of its own: an entry holding several commands, applied in order (the cache
#: service packs the writes that arrive together into one Raft entry).
BATCH = 3
#: Store only if the bank does not hold the key yet; the result says whether it stored. The
#: check and the write are one step of the replicated state machine, so a write committed
#: before the add is never overwritten by it (the cache import uses it to keep keys written
#: since the switch to ``cache: raft``).
ADD = 4
#: Merge a list of strings into the key's value (a msgpack array of strings kept sorted and
#: without duplicates): the job cache's minion lists, which several masters extend at once, so
#: a read-modify-write by one of them could drop another's names.
UNION = 5
#: Remove every sub-bank of the bank that was first written before a cut-off carried in the
#: command (the job cache's retention): the proposer chooses the cut-off, so every master
#: removes the same sub-banks whatever its own clock says. See :meth:`KVStateMachine.expired`.
EXPIRE = 6
#: The commands a log entry may hold.
OPS = (STORE, FLUSH, ADD, UNION, EXPIRE)
#: The first item of every entry this version writes: a command's op, or BATCH.
KNOWN_TYPES = frozenset(OPS + (BATCH,))
# How many client ids the dedup table remembers. A client (one master process) that has been
# silent for this many other clients' writes loses its dedup record; its retries of writes that
# old could then apply twice, which for store/flush of a value is harmless (idempotent); an
# add applied twice changes nothing the second time either, but answers "present".
MAX_CLIENTS = 4096
#: The largest sequence number a client may give a write (entries carry it as a msgpack
#: integer, which holds 64 bits); a write outside ``0..MAX_SEQ`` is refused when it arrives.
MAX_SEQ = (1 << 63) - 1
#: The most bytes msgpack adds around one command's names and value in an entry: the list
#: header (1), the op (1), the headers of bank, key and client id (5 each), the value's (5) and
#: two 64-bit integers, time and seq (9 each). A batch counts it for each command beside its
#: names and value (``replicated.service``), so that an entry of many small commands stays
#: within ``max_entry_bytes`` too.
COMMAND_FRAMING_MAX = 40
#: Bank names whose node the state machine remembers (:meth:`KVStateMachine._bank`); past this
#: many the memory starts over (a few per minion in Salt's cache, so thousands are normal).
MAX_BANK_NAMES = 1 << 16


class UnknownCommand(ValueError):
    """An entry whose command type this version does not know: a newer version wrote it. The
    runtime stops the node instead of skipping the entry (``halt``): the masters that know the
    command apply it, so skipping it would make this master's cache differ from theirs for
    good. Once this master runs the newer version, it applies the entry on restart."""

    halt = True


class Command(NamedTuple):
    op: int
    bank: str
    key: str | None = None
    value: bytes = b""
    ts: int = 0  # proposer's clock (seconds), becomes the key's `updated`
    client: str = ""
    seq: int = 0

    def cutoff(self) -> int:
        """An :data:`EXPIRE` command's cut-off (its value was checked when it was decoded)."""
        return _cutoff(self.value)


def encode_command(cmd: Command) -> bytes:
    return msgpack.packb(list(cmd), use_bin_type=True)


def encode_batch(cmds) -> bytes:
    """One entry holding ``cmds`` (at least one), applied in order as one log entry."""
    return msgpack.packb([BATCH, [list(c) for c in cmds]], use_bin_type=True)


def encode_entry(cmds) -> bytes:
    """The entry for ``cmds`` (at least one): a plain command for one, a batch for more (what
    :func:`decode_entry` reads back)."""
    return encode_command(cmds[0]) if len(cmds) == 1 else encode_batch(cmds)


def _check_known(raw) -> None:
    """A command, or an entry, is a list whose first item is its type: one this version does
    not know was written by a newer version, whatever follows it."""
    if isinstance(raw, list) and raw:
        kind = raw[0]
        if isinstance(kind, int) and not isinstance(kind, bool) and kind not in KNOWN_TYPES:
            raise UnknownCommand(
                f"KV command type {kind} is not known to this version of saltext-raft "
                f"({__version__}), so another master with a newer version wrote it; upgrade "
                "saltext-raft on this master and restart it (nothing is skipped meanwhile)"
            )


def _unpack(data: bytes):
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # malformed entries must not crash the applier
        raise ValueError(f"malformed KV command: {exc}") from exc


def _command(raw) -> Command:
    # A newer version's command may have any shape: look for one only when this shape fails.
    try:
        op, bank, key, value, ts, client, seq = raw
    except (TypeError, ValueError) as exc:
        _check_known(raw)
        raise ValueError(f"malformed KV command: {exc}") from exc
    if op not in OPS:
        _check_known(raw)
        raise ValueError(f"malformed KV command: {raw!r:.200}")
    if not isinstance(bank, str) or not isinstance(value, bytes):
        raise ValueError(f"malformed KV command: {raw!r:.200}")
    if key is not None and not isinstance(key, str):
        raise ValueError("malformed KV command: key must be a string or nil")
    if key is None and op not in (FLUSH, EXPIRE):  # only these may name a whole bank
        raise ValueError(f"malformed KV command: op {op} needs a key")
    if op == EXPIRE and (key is not None or not _parts(bank)):
        raise ValueError("malformed KV command: expire names a bank below the root, no key")
    check_value(op, value)
    try:
        return Command(op, bank, key, value, int(ts), str(client), int(seq))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed KV command: {exc}") from exc


def union_value(items) -> bytes:
    """The value of a :data:`UNION` command (and what the merged key holds): a msgpack array
    of the strings, sorted, without duplicates (``salt.payload`` reads it as a list)."""
    return msgpack.packb(sorted(set(items)), use_bin_type=True)


def expire_value(cutoff: int) -> bytes:
    """The value of an :data:`EXPIRE` command: the cut-off, whole seconds since the epoch."""
    return msgpack.packb(int(cutoff), use_bin_type=True)


def _union_items(value: bytes) -> list[str]:
    items = msgpack.unpackb(value, raw=False, use_list=True)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("not a list of strings")
    return items


def _cutoff(value: bytes) -> int:
    cutoff = msgpack.unpackb(value, raw=False)
    if isinstance(cutoff, bool) or not isinstance(cutoff, int):
        raise ValueError("not an integer")
    return cutoff


def check_value(op: int, value: bytes) -> None:
    """Refuse a :data:`UNION` value that is not a list of strings and an :data:`EXPIRE` value
    that is not an integer (ValueError): checked before a write joins a batch, and again when
    an entry is decoded, so a bad one never reaches the apply."""
    if op not in (UNION, EXPIRE):
        return
    try:
        _union_items(value) if op == UNION else _cutoff(value)
    except Exception as exc:  # msgpack raises several types for malformed bytes
        what = "union needs a list of strings" if op == UNION else "expire needs an integer"
        raise ValueError(f"malformed KV command: {what} ({exc})") from None


def decode_command(data: bytes) -> Command:
    """A single command (not a batch)."""
    return _command(_unpack(data))


def decode_entry(data: bytes) -> tuple[bool, list[Command]]:
    """``(is_batch, commands)`` of an entry written by :func:`encode_command` (one command) or
    :func:`encode_batch`. A malformed entry, or a batch with a malformed or no command, raises
    ValueError as a whole: nothing of it is applied."""
    raw = _unpack(data)
    if isinstance(raw, list) and len(raw) == 2 and raw[0] == BATCH:
        cmds = raw[1]
        if not isinstance(cmds, list) or not cmds:
            raise ValueError("malformed KV batch: no commands")
        return True, [_command(c) for c in cmds]
    return False, [_command(raw)]


def _parts(bank: str) -> list[str]:
    return [p for p in bank.split("/") if p]


# --- names: the one rule for banks and keys, used by every edge (driver, engine socket, mirror)
#: The longest part of a bank or key name, in bytes of UTF-8: a file name holds 255 bytes
#: (Linux ``NAME_MAX``) and the ``localfs`` copy adds ".p" to a key's last part.
MAX_PART_BYTES = 253
#: The longest bank or key name, in bytes of UTF-8: the copy's paths (root, bank, key) stay
#: well below ``PATH_MAX`` (4096).
MAX_NAME_BYTES = 1024


class BadName(ValueError):
    """A bank or key name the replicated cache refuses (see :func:`check_name`)."""


def check_name(what: str, name, *, allow_empty: bool = False) -> None:
    """A bank (``allow_empty``: the root, "") or key must be a string of "/"-separated parts,
    none of them "." or "..", not starting with "/", without NUL: it names the same place in
    the state machine, in the ``localfs`` copy (a path) and in the ``sqlite`` copy. A "."
    part would differ: the state machine keeps a bank called ".", a path drops it, so
    ``./x`` would reach bank ``x`` in the local copy without passing the checks made on ``x``.

    It must also be UTF-8 text (JSON carries lone surrogates, which no entry can encode) and
    fit a file: parts of at most :data:`MAX_PART_BYTES`, the whole at most
    :data:`MAX_NAME_BYTES`. Salt's ``valid_id`` takes a minion id of any length, and a
    committed name too long for a file broke every master's copy: each write of it failed,
    and each rebuild stopped there, leaving the keys after it unwritten.

    No part may be empty ("a//b", a trailing "/"; the root bank "" excepted): the ``localfs``
    copy joins names as paths, so key ``a//b`` would be the file of key ``a/b`` while the state
    machine and the ``sqlite`` copy keep two keys, and a bank ``keys/`` would pass the checks
    that compare bank names (the key banks, the watchers' prefixes) as another bank than
    ``keys``, where every copy stores it. Salt never builds such names."""
    if not isinstance(name, str) or (not name and not allow_empty):
        raise BadName(f"{what} must be a non-empty string (got {name!r})")
    parts = name.split("/")
    if "\0" in name or name.startswith("/") or ".." in parts:
        raise BadName(f"{what} {name!r:.100} would leave the cache directory")
    if "." in parts:
        raise BadName(f"{what} {name!r:.100} has a '.' part: name the bank without it")
    if name and "" in parts:
        raise BadName(
            f"{what} {name!r:.100} has an empty part ('//' or a trailing '/'): the local copy "
            f"would take it for another {what}; name it without"
        )
    if name.isascii():
        size = len(name)
    else:
        try:
            size = len(name.encode())
        except UnicodeEncodeError:
            raise BadName(f"{what} {name!r:.100} is not UTF-8 text (a lone surrogate)") from None
    if size > MAX_PART_BYTES:
        if size > MAX_NAME_BYTES:
            raise BadName(f"{what} {name!r:.60} is {size} bytes, over {MAX_NAME_BYTES}")
        for part in name.split("/"):
            if len(part.encode()) > MAX_PART_BYTES:
                raise BadName(
                    f"{what} {name!r:.60} has a part of {len(part.encode())} bytes, over "
                    f"{MAX_PART_BYTES} (a file name holds 255, the local copy adds '.p')"
                )


def check_key(bank, key) -> None:
    """:func:`check_name` for ``bank`` and one of its keys. A key of the root bank ("") must
    not contain "/": Salt's ``localfs`` (and this cache's ``localfs`` copy) joins the bank and
    the key as one path, so the root's key ``saltext_raft_keys/keys/m`` would be the file of
    the key store's key ``m``, a place the driver refuses to write as a bank (red team
    2026-12-07). Below the root a key with "/" stays inside its own bank's directory, as with
    Salt's ``localfs``."""
    check_name("bank", bank, allow_empty=True)
    check_name("key", key)
    if not bank and "/" in key:
        raise BadName(
            f"key {key!r:.100} of the root bank contains '/': the local copy would take it for "
            "a key of another bank; name that bank instead"
        )


def check_flush(bank, key) -> None:
    """:func:`check_name` for a flush (:func:`check_key` for a key's); a flush without a key
    must name a bank below the root: flushing the root ("", "/") would remove every bank of
    every master (every replicated minion key included), which no Salt cache call means to
    do."""
    if key is not None:
        check_key(bank, key)
        return
    check_name("bank", bank, allow_empty=True)
    if not _parts(bank):
        raise BadName(
            f"flushing bank {bank!r} would remove every bank of the replicated cache; "
            "name the bank to flush"
        )


def bank_parts(bank: str) -> list[str]:
    """The bank's non-empty parts: how the state machine (and every copy) names it."""
    return _parts(bank)


class _Bank:
    __slots__ = ("keys", "children")

    def __init__(self):
        self.keys: dict[str, tuple[bytes, int]] = {}
        self.children: dict[str, _Bank] = {}


def _oldest(bank: _Bank) -> int | None:
    """The oldest ``updated`` of ``bank``'s own keys, else of any key below it (iteratively);
    None when there is no key at all."""
    if bank.keys:
        return min(ts for _, ts in bank.keys.values())
    oldest = None
    stack = list(bank.children.values())
    while stack:
        node = stack.pop()
        if node.keys:
            low = min(ts for _, ts in node.keys.values())
            oldest = low if oldest is None else min(oldest, low)
        stack.extend(node.children.values())
    return oldest


def _freeze(bank: _Bank) -> tuple[dict, list]:
    """(keys, [(name, child), ...]) copies of ``bank`` and everything below it, children in
    their insertion order. Iterative: a bank nested deeper than the recursion limit must not
    make every snapshot fail (on every master, as they all apply it)."""
    top = (dict(bank.keys), [])
    stack = [(bank, top[1])]
    while stack:
        node, out = stack.pop()
        for name, child in node.children.items():
            copy = (dict(child.keys), [])
            out.append((name, copy))
            stack.append((child, copy[1]))
    return top


def tree_contents(tree: tuple[dict, list]) -> tuple[list[str], list[tuple[str, str, bytes, int]]]:
    """Every bank (``""`` for the root) and every (bank, key, value, updated) of a tree copied
    by :meth:`KVStateMachine.copy_tree`; reads only the copy, so any thread may call it."""
    banks: list[str] = []
    items: list[tuple[str, str, bytes, int]] = []
    stack = [("", tree)]
    while stack:
        path, (keys, children) = stack.pop()
        banks.append(path)
        items.extend((path, k, v, ts) for k, (v, ts) in keys.items())
        stack.extend((f"{path}/{name}" if path else name, child) for name, child in children)
    return banks, items


#: Bytes packed before they are moved out of the packer into the list of pieces.
_PIECE = 1 << 20


def _pack_snapshot(tree: tuple[dict, list], dedup: list) -> bytes:
    """The snapshot of a frozen tree: the same bytes as ``msgpack.packb(obj,
    use_bin_type=True)`` of the nested object :meth:`KVStateMachine.snapshot` describes (the
    format snapshots always had; tests/unit/kv checks the equality).

    Runs on a worker thread, so it must hand the GIL back to the event loop often: it packs one
    small item per call and collects ~1 MiB pieces, joined at the end (``bytes.join`` of large
    pieces releases the GIL while it copies; growing one packer buffer to the full size would
    hold it for each reallocation and for the final copy, ~50 ms for 75 MB)."""
    pieces = []
    pending = 0
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_map_header(2)
    packer.pack("tree")
    stack = [tree]
    while stack:  # depth first, as msgpack nests a bank's children inside it
        item = stack.pop()
        if isinstance(item, str):  # a child bank's name, just before the bank itself
            packer.pack(item)
            continue
        keys, children = item
        packer.pack_array_header(2)
        packer.pack_map_header(len(keys))
        for key, (value, ts) in keys.items():
            packer.pack(key)
            packer.pack_array_header(2)
            packer.pack(value)
            packer.pack(ts)
            pending += len(value) + 32
            if pending >= _PIECE:
                pieces.append(packer.bytes())
                packer.reset()
                pending = 0
        packer.pack_map_header(len(children))
        for name, child in reversed(children):
            stack.append(child)
            stack.append(name)
    packer.pack("dedup")
    packer.pack(dedup)
    pieces.append(packer.bytes())
    return b"".join(pieces)


def _unpack_snapshot(data: bytes) -> tuple[_Bank, OrderedDict]:
    """The tree and dedup table of ``KVStateMachine.snapshot()`` bytes, read one small item at
    a time (the inverse of :func:`_pack_snapshot`), so that a worker thread running it hands the
    GIL back to the event loop every switch interval: ``msgpack.unpackb`` of the whole snapshot
    holds it for the whole decode (~200 ms for 75 MB). Iterative, so deep banks cannot hit the
    recursion limit. Raises ``ValueError`` on bytes that are not such a snapshot (msgpack's
    format errors are ValueErrors; running out of data and wrong shapes are turned into one)."""
    unpacker = msgpack.Unpacker(
        io.BytesIO(data),
        raw=False,
        use_list=True,
        strict_map_key=False,
        read_size=_PIECE,
        max_buffer_size=max(len(data), _PIECE),
    )
    try:
        tree, dedup = _unpack_parts(unpacker)
    except msgpack.OutOfData:
        raise ValueError("not a KV snapshot: it ends too early") from None
    except TypeError as exc:  # e.g. a key's [value, updated] is a number
        raise ValueError(f"not a KV snapshot: {exc}") from None
    if unpacker.tell() != len(data):
        raise ValueError(f"not a KV snapshot: {len(data) - unpacker.tell()} bytes after its end")
    return tree, dedup


def _unpack_parts(unpacker: msgpack.Unpacker) -> tuple[_Bank, OrderedDict]:
    tree = dedup = None
    for _ in range(unpacker.read_map_header()):
        name = unpacker.unpack()
        if name == "tree":
            tree = _unpack_tree(unpacker)
        elif name == "dedup":
            dedup = OrderedDict((c, (s, r)) for c, s, r in unpacker.unpack())
        else:
            unpacker.skip()  # a newer version's addition: this version has no use for it
    if tree is None or dedup is None:
        raise ValueError("not a KV snapshot: it lacks the tree or the dedup table")
    return tree, dedup


def _unpack_tree(unpacker: msgpack.Unpacker) -> _Bank:
    def fill(bank: _Bank) -> int:
        """Read ``bank``'s keys; returns how many child banks follow."""
        if unpacker.read_array_header() != 2:
            raise ValueError("not a KV snapshot: a bank is not [keys, children]")
        keys = bank.keys
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            value, ts = unpacker.unpack()
            keys[key] = (value, ts)
        return unpacker.read_map_header()

    root = _Bank()
    stack = [[root, fill(root)]]  # banks whose children are being read, and how many are left
    while stack:
        top = stack[-1]
        if not top[1]:
            stack.pop()
            continue
        top[1] -= 1
        child = top[0].children[unpacker.unpack()] = _Bank()
        stack.append([child, fill(child)])
    return root


class KVStateMachine:
    def __init__(self):
        self._root = _Bank()
        self._dedup: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self.applied_commands = 0
        #: bank name as commands spell it -> its node, for banks that exist. Every write names
        #: a bank, and walking its path part by part was the largest Python cost of an apply;
        #: Salt writes the same few banks per minion over and over. Emptied whenever a bank
        #: leaves the tree (bank flush, expire) or the tree is replaced (restore), so a name
        #: never leads to a node that is no longer in the tree.
        self._nodes: dict[str, _Bank] = {}

    # --- state machine protocol ---------------------------------------------------------------
    def apply(self, data: bytes):
        """Apply one committed entry; returns its result (the same on every node): a
        command's result, or for a batch the list of its commands' results."""
        batch, cmds = decode_entry(data)
        if batch:
            return [self.apply_command(c) for c in cmds]
        return self.apply_command(cmds[0])

    def apply_command(self, cmd: Command):
        """:meth:`apply` for a command its caller has already decoded."""
        if cmd.client:
            seen = self._dedup.get(cmd.client)
            if seen is not None and cmd.seq <= seen[0]:
                return seen[1] if cmd.seq == seen[0] else True
        if cmd.op == STORE:
            result = self._store(cmd)
        elif cmd.op == FLUSH:
            result = self._flush(cmd)
        elif cmd.op == UNION:
            result = self._union(cmd)
        elif cmd.op == EXPIRE:
            result = self._expire(cmd)
        else:
            result = self._add(cmd)
        self.applied_commands += 1
        if cmd.client:
            self._dedup[cmd.client] = (cmd.seq, result)
            self._dedup.move_to_end(cmd.client)
            while len(self._dedup) > MAX_CLIENTS:
                self._dedup.popitem(last=False)
        return result

    def snapshot(self) -> bytes:
        """``{"tree": [keys, children], "dedup": [[client, seq, result], ...]}`` in msgpack,
        where ``keys`` is ``{key: [value, updated]}`` and ``children`` ``{name: [keys,
        children]}``; encoded iteratively, however deep the banks."""
        return self.snapshot_later()()

    def copy_tree(self) -> tuple[dict, list]:
        """A copy of the banks and keys that later commands do not change (values are shared:
        they are immutable); read it with :func:`tree_contents`. Costs about a fifteenth of
        walking the state with the read methods."""
        return _freeze(self._root)

    def snapshot_later(self):
        """A callable returning what :meth:`snapshot` returns now, safe to run on another thread
        while commands keep being applied: it encodes a copy of the tree's dicts (keys and
        values are immutable, so they are shared, not copied) piece by piece, so that the
        thread gives the GIL back to the event loop between pieces. For 30,000 keys of 2.5 KB
        on average (75 MB), encoding on the loop held it for 160-230 ms; this call holds it for
        8-12 ms (28-39 ms when a GC collection lands on it), and the encoding thread for at
        most ~12 ms at a time (``python -m saltext_raft bench snapshot``)."""
        tree = self.copy_tree()
        dedup = [[c, s, r] for c, (s, r) in self._dedup.items()]
        return lambda: _pack_snapshot(tree, dedup)

    def restore(self, data: bytes) -> None:
        self.restore_later(data)()()

    def restore_later(self, data: bytes):
        """A callable that decodes ``data`` and returns a second callable installing it.
        The decoding reads nothing of this machine, so it may run on a worker thread while
        commands are applied; the install must run where commands are applied (the loop) and
        is a swap of two references. A follower installing a 75 MB snapshot held its loop for
        115-235 ms decoding it there; while this decodes on a thread, the loop's longest gap
        is 8-17 ms (``python -m saltext_raft bench snapshot``)."""

        def decode():
            if not data:
                return self.__init__
            tree, dedup = _unpack_snapshot(data)

            def install():
                self._root, self._dedup = tree, dedup
                self._nodes = {}

            return install

        return decode

    # --- writes -------------------------------------------------------------------------------
    def _bank(self, bank: str, create: bool) -> _Bank | None:
        node = self._nodes.get(bank)
        if node is not None:
            return node
        node = self._root
        for part in _parts(bank):
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = _Bank()
            node = child
        if len(self._nodes) >= MAX_BANK_NAMES:
            self._nodes = {}
        self._nodes[bank] = node
        return node

    def _banks_removed(self) -> None:
        """Forget every remembered node: some bank (and all below it) left the tree."""
        self._nodes = {}

    def _store(self, cmd: Command) -> bool:
        self._bank(cmd.bank, create=True).keys[cmd.key] = (cmd.value, cmd.ts)
        return True

    def _add(self, cmd: Command) -> bool:
        keys = self._bank(cmd.bank, create=True).keys
        if cmd.key in keys:
            return False
        keys[cmd.key] = (cmd.value, cmd.ts)
        return True

    def _union(self, cmd: Command) -> bool:
        keys = self._bank(cmd.bank, create=True).keys
        items = set(_union_items(cmd.value))
        old = keys.get(cmd.key)
        if old is not None:
            try:
                items.update(_union_items(old[0]))
            except Exception:  # pylint: disable=broad-except  (a value stored otherwise)
                pass  # replaced, the same on every node
        keys[cmd.key] = (union_value(items), cmd.ts)
        return True

    def _expire(self, cmd: Command) -> int:
        node = self._bank(cmd.bank, create=False)
        gone = self.expired(cmd.bank, _cutoff(cmd.value))
        for name in gone:
            del node.children[name]
        if gone:
            self._banks_removed()
        return len(gone)

    def _flush(self, cmd: Command) -> bool:
        parts = _parts(cmd.bank)
        if cmd.key is not None:
            node = self._bank(cmd.bank, create=False)
            return node is not None and node.keys.pop(cmd.key, None) is not None
        if not parts:
            # Refused at every edge (check_flush); an entry that got in anyway (an older
            # master) changes nothing, the same on every node.
            return False
        parent = self._bank("/".join(parts[:-1]), create=False)
        if parent is None or parent.children.pop(parts[-1], None) is None:
            return False
        self._banks_removed()
        return True

    # --- reads (local copy) -------------------------------------------------------------------
    def fetch(self, bank: str, key: str) -> bytes | None:
        node = self._bank(bank, create=False)
        if node is None:
            return None
        item = node.keys.get(key)
        return item[0] if item is not None else None

    def list(self, bank: str) -> list[str]:
        node = self._bank(bank, create=False)
        if node is None:
            return []
        return sorted(set(node.keys) | set(node.children))

    def contains(self, bank: str, key: str | None = None) -> bool:
        node = self._bank(bank, create=False)
        if node is None:
            return False
        return True if key is None else key in node.keys

    def expired(self, bank: str, cutoff: int) -> list[str]:
        """The sub-banks of ``bank`` an :data:`EXPIRE` with ``cutoff`` removes, in order: those
        whose age is older than ``cutoff``, and those that hold no key at all. A sub-bank's age
        is the oldest ``updated`` of its own keys, or, when it has none, the oldest of the keys
        anywhere below it: the proposer's timestamps, so the same on every node."""
        node = self._bank(bank, create=False)
        if node is None:
            return []
        gone = []
        for name, child in node.children.items():
            age = _oldest(child)
            if age is None or age < cutoff:
                gone.append(name)
        return gone

    def updated(self, bank: str, key: str) -> int | None:
        node = self._bank(bank, create=False)
        if node is None or key not in node.keys:
            return None
        return node.keys[key][1]

    def walk(self):
        """Yield (bank, key, value, updated) for every stored key (for mirroring to disk)."""
        stack = [("", self._root)]
        while stack:
            path, node = stack.pop()
            for k, (v, ts) in node.keys.items():
                yield path, k, v, ts
            for name, child in node.children.items():
                stack.append((f"{path}/{name}" if path else name, child))
