"""Salt's cluster secrets on masters that share no ``cluster_pki_dir`` (engine option
``cluster_secrets``; docs/nothing-shared.md).

Lives here: :class:`ClusterSecrets`, which keeps what every master of a Salt master cluster
must agree on the same in each master's own ``cluster_pki_dir``, through the replicated cache
(bank :data:`BANK`):

- ``cluster.pub``: its fingerprint is committed once (the first master to commit wins, an
  ``ADD``); a master whose own ``cluster.pub`` differs keeps its request gate closed with
  :attr:`ClusterSecrets.refusal` as the reason. The key pair itself is provisioned by the
  operator (copied once, like ``master.pem`` in multimaster), never replicated: see the
  trade-off in docs/nothing-shared.md.
- ``.aes`` (the cluster session key): the first master's value is committed (``ADD``); a
  rotation by Salt on any master (the file changed, not by us) is committed (``STORE``); every
  master writes the committed value into its file (atomically, mode 0600, never through a
  symlink) and makes its Salt re-read it by firing Salt's own ``rotate_cluster_aes_key`` event
  as a peer would (Salt's event monitor then re-reads ``.aes`` and re-sends its peer key).
- ``peers/<id>.pub``: each master commits the public key Salt wrote for it; every master keeps
  the keys of the current Raft members in its ``peers`` directory and removes those of
  masters no longer members.

Must not live here: the cache service (``replicated/service.py``), the readiness decision
(``master/service.py``), Salt imports. Everything runs on the engine's loop thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import time

import msgpack

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import STORE
from saltext_raft.master.fileutil import CLUSTER_KEY_SETTLE
from saltext_raft.master.fileutil import CLUSTER_PUB_FILE
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import check_private_dir
from saltext_raft.master.fileutil import complete_pem
from saltext_raft.replicated.config import CLUSTER_SECRETS_BANK

log = logging.getLogger(__name__)

#: The replicated cache bank of the cluster secrets (reserved: no Salt cache call reaches it).
BANK = CLUSTER_SECRETS_BANK
#: Each member's public key (``peers/<id>.pub`` in Salt's ``cluster_pki_dir``), by node id.
PEERS_BANK = BANK + "/peers"
#: Key of the committed ``cluster.pub`` fingerprint (``sha256:<hex>``).
CLUSTER_PUB_KEY = "cluster_pub"
#: Key of the committed cluster session key (the ``.aes`` file's contents).
AES_KEY = "aes"
# Salt's file names inside cluster_pki_dir (salt/crypt.py MasterKeys, salt/master.py).
AES_FILE = ".aes"
PEERS_DIR = "peers"
#: Salt's event that makes a master's event monitor re-read ``.aes`` (when it carries
#: ``__peer_id``) and re-send its peer key (salt/master.py ``EventMonitor.handle_event``).
RELOAD_TAG = "rotate_cluster_aes_key"
#: Decoded size bounds of an ``.aes`` key string (Salt's is 24 + 32 bytes, base64).
AES_MIN_BYTES, AES_MAX_BYTES = 32, 256
#: A peer public key larger than this is refused (an RSA 4096 PEM is about 800 bytes).
MAX_PUB_BYTES = 16 << 10


def fingerprint(pub: bytes) -> str:
    """The committed form of a ``cluster.pub``: trailing whitespace does not count."""
    return "sha256:" + hashlib.sha256(pub.strip()).hexdigest()


def encode(text: str) -> bytes:
    return msgpack.packb(text, use_bin_type=True)


def decode(raw: bytes | None) -> str | None:
    """A committed value, or None if it is missing or not a string (written by no engine)."""
    if raw is None:
        return None
    try:
        value = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    return value if isinstance(value, str) else None


def aes_problem(text) -> str:
    """Why ``text`` is not a cluster session key Salt could use ("" if it is)."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "not base64"
    if not AES_MIN_BYTES <= len(raw) <= AES_MAX_BYTES:
        return f"{len(raw)} bytes of key material"
    return ""


def pub_problem(text) -> str:
    if not isinstance(text, str) or "PUBLIC KEY-----" not in text:
        return "not a PEM public key"
    if len(text.encode()) > MAX_PUB_BYTES:
        return f"larger than {MAX_PUB_BYTES} bytes"
    return ""


class ClusterFiles:
    """This master's ``cluster_pki_dir``: the only files :class:`ClusterSecrets` touches."""

    def __init__(self, pki_dir: str, own_id: str):
        self.pki_dir = pki_dir
        self.own_id = own_id
        self.peers_dir = os.path.join(pki_dir, PEERS_DIR)
        self.aes_path = os.path.join(pki_dir, AES_FILE)

    def check(self) -> None:
        """Raise :class:`UnsafeDirectory` if ``cluster_pki_dir`` or ``peers`` is a symlink, not
        ours, or writable by others: keys written there decide whom the master trusts."""
        if not check_private_dir(self.pki_dir, "cluster_pki_dir"):
            raise UnsafeDirectory(self.pki_dir, "cluster_pki_dir does not exist", "start Salt")
        check_private_dir(self.peers_dir, "cluster_pki_dir/peers")

    def _read(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, OSError):
            return None
        with os.fdopen(fd, "rb") as fh:
            return fh.read(MAX_PUB_BYTES + 1)

    def cluster_pub(self) -> bytes | None:
        return self._read(os.path.join(self.pki_dir, CLUSTER_PUB_FILE))

    def aes_signature(self):
        """What changes when Salt (or anyone) replaces ``.aes``: inode, mtime, size."""
        try:
            st = os.lstat(self.aes_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def aes(self) -> str | None:
        raw = self._read(self.aes_path)
        return raw.decode("ascii", "replace") if raw is not None else None

    def write_aes(self, text: str) -> None:
        self.check()
        atomic_write(self.aes_path, text.encode("ascii"), prefix=".aes-raft-", mode=0o600)

    def own_pub(self) -> str | None:
        raw = self._read(self._peer_path(self.own_id))
        return raw.decode("ascii", "replace") if raw is not None else None

    def _peer_path(self, node_id: str) -> str:
        if node_id_problem(node_id):  # a file name: no "/", no ".."
            raise ValueError(f"not a master id: {node_id!r}")
        return os.path.join(self.peers_dir, f"{node_id}.pub")

    def peer_ids(self) -> set[str]:
        try:
            names = os.listdir(self.peers_dir)
        except FileNotFoundError:
            return set()
        return {n[: -len(".pub")] for n in names if n.endswith(".pub") and len(n) > 4}

    def peer(self, node_id: str) -> str | None:
        raw = self._read(self._peer_path(node_id))
        return raw.decode("ascii", "replace") if raw is not None else None

    def write_peer(self, node_id: str, text: str) -> None:
        self.check()
        atomic_write(
            self._peer_path(node_id), text.encode("ascii"), prefix=".pub-raft-", mode=0o600
        )

    def remove_peer(self, node_id: str) -> None:
        self.check()
        try:
            os.unlink(self._peer_path(node_id))
        except FileNotFoundError:
            pass


class ClusterSecrets:
    """Keeps this master's ``cluster_pki_dir`` in step with the committed cluster secrets.

    Ports: ``cache`` (the :class:`~saltext_raft.replicated.service.CacheService`: ``propose``,
    ``fetch``, ``list``), ``members()`` (the current Raft member ids), ``fire(tag, data)`` (the
    master's local event bus), ``clock()`` (monotonic seconds). :meth:`changed` is the cache
    watcher for :data:`BANK`; :meth:`poll` is called on every readiness evaluation;
    :meth:`membership_changed` on every membership event.
    """

    def __init__(self, files: ClusterFiles, cache, members, fire, clock=time.monotonic):
        self.files = files
        self.cache = cache
        self.members = members
        self.fire = fire
        self._clock = clock
        #: When ``cluster.pub`` was first found missing or incomplete, while :meth:`poll` looks
        #: again (Salt may be rewriting it); None otherwise.
        self._pub_gap_since = None
        #: Why this master must not serve ("" when it may): a cluster key that differs from
        #: the committed one, or none at all.
        self.refusal = "waiting for the committed cluster key fingerprint"
        self.ready = False  # the local copy caught up: the committed values are known here
        self._aes_seen = None  # (signature, contents) of .aes as last read or written by us
        self._aes_pending = False
        self._pending: set = set()
        self.counters = {"aes_written": 0, "aes_committed": 0, "peers_written": 0, "reloads": 0}
        self.last_error = ""

    # --- the watcher ------------------------------------------------------------------------
    def changed(self, bank, key) -> None:
        if bank is None:  # caught up after start, or rebuilt: look at everything
            self.ready = True
            self._claim()
            self._check_cluster_key()
            self._adopt_aes()
            self._sync_peers()
            return
        if bank == BANK and key in (CLUSTER_PUB_KEY, None):
            self._check_cluster_key()
        if bank == BANK and key in (AES_KEY, None):
            self._adopt_aes()
        if bank == PEERS_BANK or bank == BANK and key is None:
            self._sync_peers()

    def membership_changed(self) -> None:
        if self.ready:
            self._sync_peers()

    # --- first values and this master's own pub -----------------------------------------------
    def _claim(self) -> None:
        """Commit this master's values where none is committed yet, and its own peer key."""
        self._claim_cluster_key(self.files.cluster_pub())
        aes = self.files.aes()
        # what the file holds now is this claim's business, not a rotation for poll()
        self._aes_seen = (self.files.aes_signature(), (aes or "").strip())
        if self._committed(BANK, AES_KEY) is None and aes and not aes_problem(aes):
            self._propose(ADD, BANK, AES_KEY, aes.strip(), "the cluster session key")
        own = self.files.own_pub()
        if own and not pub_problem(own) and self._committed(PEERS_BANK, self.files.own_id) != own:
            self._propose(STORE, PEERS_BANK, self.files.own_id, own, "this master's peer key")

    def _claim_cluster_key(self, pub: bytes | None) -> None:
        """Commit this master's ``cluster.pub`` fingerprint where none is committed yet, only
        from a whole file: one cut short by Salt's rewrite would become the cluster's key, and
        every master would be refused once its file is whole. A file found cut short is
        claimed when the look again (:meth:`poll`) finds it whole."""
        if pub is None or not complete_pem(pub):
            return
        if self._committed(BANK, CLUSTER_PUB_KEY) is None:
            self._propose(ADD, BANK, CLUSTER_PUB_KEY, fingerprint(pub), "the cluster key")

    def _committed(self, bank: str, key: str) -> str | None:
        return decode(self.cache.fetch(bank, key))

    def _propose(self, op, bank, key, text, what, on_done=None) -> None:
        if (bank, key, text) in self._pending:  # the same write is in flight: not sent again
            if on_done is not None:
                on_done(None)  # the caller looks again later
            return
        self._pending.add((bank, key, text))

        def done(fut):
            self._pending.discard((bank, key, text))
            if not fut.cancelled() and fut.exception() is not None:
                self._error(f"could not commit {what}: {fut.exception()}")
            if on_done is not None:
                on_done(fut)

        try:
            fut = self.cache.propose(op, bank, key, encode(text))
        except Exception as exc:  # pylint: disable=broad-except
            self._pending.discard((bank, key, text))
            self._error(f"could not commit {what}: {exc}")
            if on_done is not None:
                on_done(None)
            return
        fut.add_done_callback(done)

    def _error(self, msg: str) -> None:
        self.last_error = msg
        log.warning("saltext-raft cluster secrets: %s", msg)

    # --- cluster.pub ----------------------------------------------------------------------------
    def _check_cluster_key(self) -> None:
        committed = self._committed(BANK, CLUSTER_PUB_KEY)
        pub = self.files.cluster_pub()
        if pub is None or not complete_pem(pub):
            # missing or cut short: give a rewrite in progress CLUSTER_KEY_SETTLE (poll looks
            # again) before the refusal below, which only a restart lifts
            now = self._clock()
            if self._pub_gap_since is None:
                self._pub_gap_since = now
            if now - self._pub_gap_since < CLUSTER_KEY_SETTLE:
                refusal = (
                    f"waiting for {self.files.pki_dir}/{CLUSTER_PUB_FILE} to be whole "
                    "(being replaced)"
                )
                if refusal != self.refusal:
                    log.info("saltext-raft cluster secrets: %s", refusal)
                self.refusal = refusal
                return
        if self._pub_gap_since is not None and self.ready:
            self._claim_cluster_key(pub)  # found incomplete at the first look, whole now
        self._pub_gap_since = None
        if pub is None:
            refusal = (
                f"this master has no {CLUSTER_PUB_FILE} in cluster_pki_dir "
                f"({self.files.pki_dir}): copy cluster.pem and cluster.pub from a running master"
            )
        elif committed is None:
            refusal = "waiting for the committed cluster key fingerprint"
        elif fingerprint(pub) != committed:
            refusal = (
                f"this master's cluster key ({self.files.pki_dir}/{CLUSTER_PUB_FILE}, "
                f"{fingerprint(pub)}) differs from the cluster's ({committed}): copy cluster.pem "
                "and cluster.pub from a master of the cluster, then restart this master"
            )
        else:
            refusal = ""
        if refusal != self.refusal:
            if refusal:
                log.error("saltext-raft cluster secrets: %s", refusal)
            else:
                log.info("saltext-raft cluster secrets: the cluster key matches (%s)", committed)
        self.refusal = refusal

    # --- .aes -------------------------------------------------------------------------------
    def poll(self) -> None:
        """A change of ``.aes`` not made by us is a rotation by Salt here: commit it. While
        ``cluster.pub`` was found missing or incomplete, look at it again."""
        if self.ready and self._pub_gap_since is not None:
            self._check_cluster_key()
        if not self.ready or self._aes_pending:
            return
        sig = self.files.aes_signature()
        if sig is None or (self._aes_seen is not None and sig == self._aes_seen[0]):
            return
        text = (self.files.aes() or "").strip()
        if self._aes_seen is not None and text == self._aes_seen[1]:
            self._aes_seen = (sig, text)
            return
        self._aes_seen = (sig, text)
        committed = self._committed(BANK, AES_KEY)
        problem = aes_problem(text)
        if problem or text == committed:
            if problem:
                self._error(f"{self.files.aes_path} holds no usable key ({problem}): not committed")
            return
        log.info("saltext-raft cluster secrets: Salt rotated the cluster session key here")
        self._aes_pending = True

        def done(fut):
            self._aes_pending = False
            if fut is None or fut.cancelled() or fut.exception() is not None:
                self._aes_seen = (None, None)  # look again (and retry) at the next poll
            else:
                self.counters["aes_committed"] += 1

        self._propose(STORE, BANK, AES_KEY, text, "the rotated cluster session key", done)

    def _adopt_aes(self) -> None:
        committed = self._committed(BANK, AES_KEY)
        if committed is None or aes_problem(committed):
            return
        if (self.files.aes() or "").strip() != committed:
            try:
                self.files.write_aes(committed)
            except (OSError, ValueError) as exc:
                self._error(f"cannot write {self.files.aes_path}: {exc}")
                return
            self.counters["aes_written"] += 1
            log.info("saltext-raft cluster secrets: wrote the committed cluster session key")
        self._aes_seen = (self.files.aes_signature(), committed)
        self._reload()

    def _reload(self) -> None:
        """Make Salt re-read ``.aes`` and re-send its peer key, as a peer's rotation does."""
        self.counters["reloads"] += 1
        self.fire(RELOAD_TAG, {"rotate_cluster_aes_key": True, "__peer_id": self.files.own_id})

    # --- peers/<id>.pub -----------------------------------------------------------------------
    def _sync_peers(self) -> None:
        members = set(self.members())
        own = self.files.own_id
        changed = False
        for nid in sorted(members - {own}):
            text = self._committed(PEERS_BANK, nid)
            if text is None or pub_problem(text) or node_id_problem(nid):
                continue
            if self.files.peer(nid) != text:
                try:
                    self.files.write_peer(nid, text)
                except (OSError, ValueError) as exc:
                    self._error(f"cannot write the peer key of {nid}: {exc}")
                    continue
                self.counters["peers_written"] += 1
                changed = True
        for nid in sorted(self.files.peer_ids() - members - {own}):
            if node_id_problem(nid):
                continue
            try:
                self.files.remove_peer(nid)
            except OSError as exc:
                self._error(f"cannot remove the peer key of {nid}: {exc}")
                continue
            log.info("saltext-raft cluster secrets: removed the key of former member %s", nid)
            changed = True
        if changed:
            self._reload()

    def status(self) -> dict:
        return {
            "cluster_pki_dir": self.files.pki_dir,
            "cluster_key": self._committed(BANK, CLUSTER_PUB_KEY) if self.ready else None,
            "refusal": self.refusal or None,
            "peers": sorted(self.files.peer_ids()),
            "counters": dict(self.counters),
            "last_error": self.last_error or None,
        }
