"""Salt 3007's minion key directories as a view of the replicated key state, read and written
safely, and the durable record of the view this master last applied (engine option
``keys: replicate``).

Lives here: the layout (:data:`KEY_DIRS`; the pki dir itself: ``keystore.view_root``), what
one minion id looks like in the directories (:class:`IdView`, read by :meth:`KeyDirs.read`,
refused entries included), the one way the engine writes the directories
(:meth:`KeyDirs.write`: atomic, no symlink followed), the conversion between a directory entry
and the replicated representation that Salt 3008's key store uses (``{"state", "pub"}`` in
``keys``, a list of PEMs in ``denied_keys``: :func:`from_log`, :func:`to_log`), and
:class:`AppliedView` (the persisted "last applied" record, fsynced, a torn file detected).
Must not live here: deciding what to propose or apply (``replicated/keys3007.py``), the
engine, the log.

The rules for what the engine reads in these directories (the master user's private dirs,
but whatever is found there may be proposed to every master):

- a name starting with "." is not a key (Salt's own listings skip them; our temp files);
- a name that is not a valid minion id (``keystore.check_id``) is refused;
- a symlink is refused and never followed (``lstat``, ``O_NOFOLLOW``), so is anything that is
  not a regular file (a FIFO is opened non-blocking and refused after ``fstat``);
- a file larger than :data:`MAX_KEY_BYTES` is refused (read bounded: at most one byte more);
- a file with more than one hard link is refused (``O_NOFOLLOW`` does not stop a hard link to
  another file of the master user's, such as its own ``master.pem`` or ``.aes``);
- a file that is not UTF-8 text, or whose text is not a PEM public key (:func:`pem_problem`:
  its first line ``-----BEGIN ... PUBLIC KEY-----``), is refused. The same rule keeps a value
  from the log that this reader would refuse out of the directories (:func:`from_log`).

A refused entry is never proposed and never deleted by the engine: it is reported (rate
limited, by the caller) and its id is left alone until an operator removes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from dataclasses import field
from typing import NamedTuple

from salt.exceptions import SaltCacheError

from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import check_private_dir
from saltext_raft.master.fileutil import ensure_private_dir
from saltext_raft.replicated import keystore
from saltext_raft.replicated.keystore import view_root

#: Salt 3007's directories under the pki dir, by replicated state (``keys`` bank states, and
#: ``denied`` for the ``denied_keys`` bank).
ACCEPTED, PENDING, REJECTED, DENIED = "accepted", "pending", "rejected", "denied"
KEY_DIRS = {
    ACCEPTED: "minions",
    PENDING: "minions_pre",
    REJECTED: "minions_rejected",
    DENIED: "minions_denied",
}
#: When one id has files in several of the key state directories, the one that counts (Salt's
#: ``_auth`` looks at rejected first, then accepted, then pending).
STATE_PRECEDENCE = (REJECTED, ACCEPTED, PENDING)
#: The longest file name (bytes) a key directory takes (Linux ``NAME_MAX``).
NAME_MAX = 255
#: A PEM public key is well under this; anything larger is refused.
MAX_KEY_BYTES = 16 * 1024
#: Prefix of the engine's temp files in the key directories (dotfiles: Salt skips them).
TMP_PREFIX = ".saltext-raft-"
#: The persisted record's name, in the engine's state dir.
APPLIED_FILE = "keys3007-view.json"
APPLIED_FORMAT = 1
KEY_FILE_MODE = 0o644
#: How close to a listing an entry's mtime may be and still have been rewritten unseen after
#: it: a file's mtime comes from a coarse clock (one kernel tick, 1-10 ms, on Linux; whole
#: seconds on some file systems), so a same-size rewrite in place within one tick keeps every
#: field of its :class:`Signature`. A 3007 minion key file is the same size for every key of
#: one type. An entry whose mtime is not older than the previous listing minus this window is
#: read again at each listing until it is (a handful of reads of a file just written).
RACY_WINDOW_NS = 2_000_000_000


class Signature(NamedTuple):
    """What a listing keeps of a directory entry to tell a changed one without reading it,
    except within :data:`RACY_WINDOW_NS` of the listing (:func:`may_hide_a_change`)."""

    ino: int
    size: int
    mtime_ns: int
    mode: int


def may_hide_a_change(sig: Signature, previous_listing_ns: int | None) -> bool:
    """Whether an entry whose signature has not changed since the listing that started at
    ``previous_listing_ns`` (wall clock, as mtimes are; None: no listing yet) may still have
    been rewritten after it: its mtime is within :data:`RACY_WINDOW_NS` of that listing, or
    later (a clock set back). Older mtimes cannot: a rewrite after the listing gets a newer
    one."""
    return previous_listing_ns is not None and sig.mtime_ns >= previous_listing_ns - RACY_WINDOW_NS


def pem_problem(text: str) -> str | None:
    """Why ``text`` cannot be a minion's public key file (None: it can): larger than
    :data:`MAX_KEY_BYTES` encoded, or its first line not a PEM ``PUBLIC KEY`` header (a private
    key, an AES secret or any other file of the master user's is never replicated)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"larger than {MAX_KEY_BYTES} bytes"
    first = text.strip().split("\n", 1)[0].strip()
    if not (first.startswith("-----BEGIN ") and first.endswith(" PUBLIC KEY-----")):
        return "not a PEM public key"
    return None


def digest(pem: str | None) -> str | None:
    """What the view record keeps of a PEM: its digest, whitespace at the ends ignored (as
    Salt's key comparison and ``keystore`` do)."""
    if pem is None:
        return None
    return hashlib.sha256(pem.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One id's state in one bank, as the record keeps it: ``state`` (a key state, or
    ``denied``) and the digest of the PEM."""

    state: str
    digest: str

    def as_list(self) -> list:
        return [self.state, self.digest]


@dataclass
class IdView:
    """What the directories hold for one id: ``keys`` (state, pem) by precedence, ``denied``
    (pem), every state found (``found``, to spot stray duplicates), and refusals."""

    keys: tuple[str, str] | None = None
    denied: str | None = None
    found: tuple = ()
    refused: list = field(default_factory=list)

    def entry(self, bank: str) -> Entry | None:
        if bank == "keys":
            return None if self.keys is None else Entry(self.keys[0], digest(self.keys[1]))
        return None if self.denied is None else Entry(DENIED, digest(self.denied))


def from_log(bank: str, value) -> tuple[Entry | None, str | None]:
    """(entry, pem to write) for a replicated value (``keys``: ``{"state", "pub"}``;
    ``denied_keys``: a list of PEMs, of which Salt 3007's one file holds the first)."""
    if bank == "keys":
        if isinstance(value, dict) and value.get("state") in STATE_PRECEDENCE:
            pub = value.get("pub")
            if isinstance(pub, str) and pem_problem(pub) is None:
                return Entry(value["state"], digest(pub)), pub
        return None, None
    if isinstance(value, str):
        value = [value]
    if (
        isinstance(value, (list, tuple))
        and value
        and isinstance(value[0], str)
        and pem_problem(value[0]) is None
    ):
        return Entry(DENIED, digest(value[0])), value[0]
    return None, None


def to_log(bank: str, view: IdView):
    """The replicated value for what the directories hold (None: nothing)."""
    if bank == "keys":
        return None if view.keys is None else {"state": view.keys[0], "pub": view.keys[1]}
    return None if view.denied is None else [view.denied]


class Refused(Exception):
    """An entry the engine does not read (see the module docstring)."""


class KeyDirs:
    """Salt 3007's four key directories under one pki dir."""

    def __init__(self, opts: dict, root: str | None = None):
        self.opts = opts
        self.root = root if root is not None else view_root(opts)
        if not self.root:
            raise SaltCacheError("raft keys: no pki_dir to keep the minion keys in")

    def path(self, state: str, minion_id: str | None = None) -> str:
        base = os.path.join(self.root, KEY_DIRS[state])
        return base if minion_id is None else os.path.join(base, minion_id)

    def ensure(self) -> None:
        """The root and the four directories exist and are the master user's own (created
        0700 when missing); raises ``UnsafeDirectory`` otherwise (a symlink, another owner,
        writable by others)."""
        check_private_dir(self.root, "the minion key directory (pki dir)") or ensure_private_dir(
            self.root, "the minion key directory (pki dir)"
        )
        for state in KEY_DIRS:
            ensure_private_dir(self.path(state), f"the {KEY_DIRS[state]} key directory")

    def remove_leftovers(self) -> int:
        """Unlink the temp files a write killed mid-way left in the key directories (only
        this master's engine writes them, from one thread, which calls this before its first
        write). Salt skips dotfiles, so they are litter, not keys; a directory entry that is
        not a regular file is left alone. Returns how many were removed."""
        removed = 0
        for state in KEY_DIRS:
            with os.scandir(self.path(state)) as it:
                names = [
                    e.name
                    for e in it
                    if e.name.startswith(TMP_PREFIX) and e.is_file(follow_symlinks=False)
                ]
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path(state), name))
                    removed += 1
        return removed

    def valid_id(self, name: str) -> bool:
        """Salt's and the replicated cache's rule (``keystore.check_id``), and a name one key
        file can have (``_auth`` asks about any id Salt's ``valid_id`` passes, of any length)."""
        if not isinstance(name, str) or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
            return False
        try:
            keystore.check_id(self.opts, "keys", name)
        except SaltCacheError:
            return False
        return True

    def listing(self) -> tuple[dict, list]:
        """({id: {state: Signature}}, refusals) for every entry of the four directories."""
        ids: dict = {}
        refusals = []
        for state, sub in KEY_DIRS.items():
            try:
                with os.scandir(os.path.join(self.root, sub)) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue
                        if not self.valid_id(entry.name):
                            refusals.append(f"{sub}/{entry.name!r}: not a valid minion id")
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        sig = Signature(st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
                        ids.setdefault(entry.name, {})[state] = sig
            except FileNotFoundError:
                continue
        return ids, refusals

    def read_file(self, state: str, minion_id: str) -> str | None:
        """The text of one key file, None if absent; raises :class:`Refused`."""
        try:
            fd = os.open(
                self.path(state, minion_id),
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(f"{KEY_DIRS[state]}/{minion_id}: a symbolic link") from None
            # One entry that cannot be read (EACCES, EIO, ...) must not fail every id's pass.
            raise Refused(f"{KEY_DIRS[state]}/{minion_id}: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{KEY_DIRS[state]}/{minion_id}: not a regular file")
            if st.st_size > MAX_KEY_BYTES:
                raise Refused(
                    f"{KEY_DIRS[state]}/{minion_id}: {st.st_size} bytes, more than the "
                    f"{MAX_KEY_BYTES} a public key may have"
                )
            if st.st_nlink > 1:
                raise Refused(f"{KEY_DIRS[state]}/{minion_id}: {st.st_nlink} hard links")
            data = os.read(fd, MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise Refused(f"{KEY_DIRS[state]}/{minion_id}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if len(data) > MAX_KEY_BYTES:
            raise Refused(f"{KEY_DIRS[state]}/{minion_id}: larger than {MAX_KEY_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(f"{KEY_DIRS[state]}/{minion_id}: not UTF-8 text") from None
        problem = pem_problem(text)
        if problem:
            raise Refused(f"{KEY_DIRS[state]}/{minion_id}: {problem}")
        return text

    def read(self, minion_id: str) -> IdView:
        view = IdView()
        if not self.valid_id(minion_id):
            view.refused.append(f"{minion_id!r}: not a valid minion id")
            return view
        found = {}
        for state in KEY_DIRS:
            try:
                text = self.read_file(state, minion_id)
            except Refused as exc:
                view.refused.append(str(exc))
                continue
            if text is not None:
                found[state] = text
        view.denied = found.pop(DENIED, None)
        view.found = tuple(s for s in STATE_PRECEDENCE if s in found)
        if view.found:
            view.keys = (view.found[0], found[view.found[0]])
        return view

    def write(self, minion_id: str, bank: str, state: str | None, pem: str | None) -> None:
        """Make the directories show ``state``/``pem`` for ``bank`` (None: nothing): the file
        is written to a temp file and renamed into place (a symlink in the way is replaced,
        never followed), fsynced; files of the other key states are removed."""
        if not self.valid_id(minion_id):
            raise Refused(f"{minion_id!r}: not a valid minion id")
        states = STATE_PRECEDENCE if bank == "keys" else (DENIED,)
        if state is not None:
            path = self.path(state, minion_id)
            atomic_write(
                path,
                pem.encode(),
                prefix=TMP_PREFIX,
                mode=KEY_FILE_MODE,
                durable=True,
            )
        for other in states:
            if other != state:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(other, minion_id))


class AppliedView:
    """The record of what this master's directories showed after the engine last applied or
    adopted each id's replicated state: ``{id: {"keys": [state, digest], "denied_keys":
    [...]}}``. A local change is a difference between the directories and this record.

    ``status`` after :meth:`load`: ``"ok"``, ``"missing"`` (first start: nothing applied yet)
    or ``"torn"`` (unreadable: the caller must not infer local changes from it)."""

    BANKS = ("keys", "denied_keys")

    def __init__(self, path: str):
        self.path = path
        self.ids: dict[str, dict[str, Entry]] = {}
        self.status = "missing"
        self.problem = ""
        self.dirty = False

    def load(self) -> AppliedView:
        self.ids = {}
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            self.status = "missing"
            return self
        try:
            doc = json.loads(raw)
            if doc.get("format") != APPLIED_FORMAT or not isinstance(doc.get("ids"), dict):
                raise ValueError(f"not a format {APPLIED_FORMAT} record")
            for minion_id, banks in doc["ids"].items():
                entries = {}
                for bank, item in banks.items():
                    if bank not in self.BANKS:
                        raise ValueError(f"unknown bank {bank!r}")
                    if not isinstance(item, list) or len(item) != 2:
                        raise ValueError(f"bad entry for {minion_id!r}")
                    state, dig = item
                    if state not in KEY_DIRS or not isinstance(dig, str):
                        raise ValueError(f"bad entry for {minion_id!r}")
                    entries[bank] = Entry(state, dig)
                self.ids[minion_id] = entries
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            self.ids = {}
            self.status = "torn"
            self.problem = str(exc)
            return self
        self.status = "ok"
        return self

    def get(self, minion_id: str, bank: str) -> Entry | None:
        return self.ids.get(minion_id, {}).get(bank)

    def set(self, minion_id: str, bank: str, entry: Entry | None) -> None:
        if self.get(minion_id, bank) == entry:
            return
        self.dirty = True
        banks = self.ids.setdefault(minion_id, {})
        if entry is None:
            banks.pop(bank, None)
            if not banks:
                del self.ids[minion_id]
        else:
            banks[bank] = entry

    def save(self) -> None:
        """Atomically and durably (a crash leaves the old record or the new one)."""
        doc = {
            "format": APPLIED_FORMAT,
            "ids": {i: {b: e.as_list() for b, e in banks.items()} for i, banks in self.ids.items()},
        }
        atomic_write(
            self.path,
            json.dumps(doc, sort_keys=True).encode(),
            prefix=".keys3007-",
            mode=0o600,
            durable=True,
        )
        self.status = "ok"
        self.dirty = False
