"""Salt 3008's minion key store behind the ``raft`` cache driver (``keys.cache_driver: raft``).

Lives here: the key-store driver functions (:func:`store`, :func:`fetch`, :func:`flush`,
:func:`list_`, :func:`list_all`, :func:`contains`, :func:`updated`) for the banks ``keys`` and
``denied_keys``, each checking the minion id once (:func:`check_id`) before it calls the
driver's already-checked functions, plus the per-master bank ``master_keys``
(:func:`local_call`, and :func:`local_read`, whose reads of the cluster key pair never see it
half-replaced), and where this master's pki_dir view is (:func:`view_root`,
:func:`view_kwargs`) and how it is kept (:func:`sync_view`, :func:`refresh_view`). Must not
live here: which bank goes where (``replicated/banks.py``), the engine socket protocol and
mirror reads (``replicated/driver.py``), anything that runs in the engine.

Theory of operation
-------------------
Salt 3008 reads and writes the PKI through ``salt.cache.Cache(opts,
driver=opts["keys.cache_driver"])`` with three banks:

- ``master_keys``: this master's *own* key pairs (``<id>.pem``, the signing key...). They must
  never leave the master, and ``salt.crypt.MasterKeys`` uses them in the master's parent process
  before any engine runs. They are served by Salt's ``localfs_key`` driver in ``pki_dir``,
  exactly as with the default driver: never replicated, never waiting for the engine.
- ``keys`` (``{"state": "accepted"|"pending"|"rejected", "pub": <PEM>}`` per minion id) and
  ``denied_keys`` (a list of PEMs per minion id): replicated. Writes are committed through the
  local engine like any ``raft`` cache write, under the reserved mirror bank
  ``saltext_raft_keys/<bank>``; reads come from this master's mirror.

**The pki_dir view.** Some Salt code bypasses the cache layer and reads ``pki_dir`` directly;
the one that matters is the request server's token check (``ReqServerChannel.validate_token``
reads ``pki_dir/minions/<id>`` for every AES request of a 3008 minion). So every master also
keeps Salt's ``localfs_key`` layout in its own ``pki_dir`` as a *view* of the replicated state,
reconciled for one minion id whenever this master writes that id and whenever it fetches it.
``_auth`` fetches the minion's key on every authentication, so a minion accepted on master 1
finds its key file on master 2 the first time it authenticates there, before its first AES
request. Listings (``list``/``list_all``, i.e. ``salt-key -L`` and targeting) read the mirror
and do not touch the view: during a log replay the mirror can be briefly incomplete, and a
listing must not delete key files because of that. Every read and write of the view names its
pki dir from the opts of the call (:func:`view_kwargs`), never from the ``__opts__`` that Salt's
loader last gave the ``localfs_key`` module.

**Stale "no key" reads.** ``_auth`` treats a missing key as a new minion and writes it as
pending. If this master's mirror lagged (just restarted and replaying its log, or partitioned),
that write would demote an accepted key on every master. So a ``keys`` fetch that finds nothing
first takes a ReadIndex barrier (the engine confirms with the leader and waits until the mirror
has caught up) and looks again; without a quorum it fails with a ``SaltCacheError`` (the pending
write that would follow would fail too), and the minion retries its authentication.

**Revocation on every master.** A fetch updates the view only when a minion authenticates, so a
key deleted or rejected through another master used to stay in this master's view until then,
and the minion kept its session here. The engine therefore refreshes the view itself for every
replicated key change it applies (:func:`refresh_view`, called by
``master/revocation.py``), and reconciles the whole view once its copy has caught up after
a start (:func:`view_ids`). :func:`refresh_view` says whether it took away an accepted key: that
is the case where a minion may hold a session here, and the engine then rotates the AES key.

**The cluster key pair is never read half-replaced.** In Salt's cluster mode ``master_keys``
also holds the cluster key pair (``cluster.pem``/``cluster.pub`` in ``cluster_pki_dir``), which
Salt 3008.4 replaces on a running master: its join handshake unlinks both files and writes them
again (``cluster/peer/join-reply``, once per peer that answers a joining master), then stores
them through this driver, which is ``localfs_key``'s flush-then-write. A process that builds
``salt.crypt.MasterKeys`` at that moment (a request worker starting) finds no ``cluster.pem``,
generates a pair of its own and signs every sign-in answer with it while sending the cluster's
``cluster.pub``: each minion it answers fails with ``Unable to decrypt message``. So a read of
either file (:func:`local_read`) that finds it missing or not a complete PEM waits up to
:data:`CLUSTER_KEY_SETTLE` for it to be whole again before it answers.

**Writes on a master that is not a member.** The engine's readiness file says so; a key write is
then refused at once with that reason, rather than being forwarded to a cluster that this master
does not follow (it would never see the result, and the caller would get a timeout for a write
that may have committed).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import salt.cache
from salt.exceptions import SaltCacheError
from salt.utils.verify import valid_id

from saltext_raft.master import settings as engine_settings
from saltext_raft.master.fileutil import CLUSTER_KEY_FILES
from saltext_raft.master.fileutil import CLUSTER_KEY_SETTLE
from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import complete_pem
from saltext_raft.master.readiness import ReadinessReader
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import driver as cachedriver

log = logging.getLogger(__name__)

#: Replicated banks of Salt's key store.
REPLICATED_BANKS = ("keys", "denied_keys")
#: Banks that stay on this master (delegated to Salt's ``localfs_key`` in ``pki_dir``).
LOCAL_BANKS = ("master_keys",)
#: Mirror bank under which the replicated key banks live; reserved for the key store.
MIRROR_PREFIX = "saltext_raft_keys"
KEY_STATES = ("accepted", "pending", "rejected")
LOCAL_DRIVER = "localfs_key"
#: Times the view of one id is re-checked after writing it, if the mirror moved meanwhile.
VIEW_RETRIES = 3
#: Seconds between two warnings about a pki_dir view that cannot be written.
VIEW_WARN_INTERVAL = 30.0


def mirror_bank(bank: str) -> str:
    return f"{MIRROR_PREFIX}/{bank}"


# --------------------------------------------------------------------------------------------
# the local side: localfs_key for master_keys and for the pki_dir view
# --------------------------------------------------------------------------------------------
#: Options ``localfs_key.init_kwargs`` reads from the kwargs ``salt.cache.Cache`` was built with.
PASSTHROUGH_KWARGS = ("pki_dir", "user")
_local_caches: dict = {}
_local_lock = threading.Lock()


def local_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in PASSTHROUGH_KWARGS if kwargs.get(k) is not None}


def local_cache(opts: dict, kwargs: dict) -> salt.cache.Cache:
    """A ``localfs_key`` cache for the same opts and ``pki_dir``/``user`` (one per process)."""
    passthrough = local_kwargs(kwargs)
    memo = (id(opts), tuple(sorted(passthrough.items())))
    with _local_lock:
        entry = _local_caches.get(memo)
        # The entry holds ``opts``, so its id cannot be reused while it is memoized.
        if entry is None or entry[0] is not opts:
            if len(_local_caches) > 32:
                _local_caches.clear()
            entry = _local_caches[memo] = (
                opts,
                salt.cache.Cache(opts, driver=LOCAL_DRIVER, **passthrough),
            )
    return entry[1]


def local_call(opts: dict, kwargs: dict, fun: str, bank: str, *args, **kw):
    """``master_keys`` (and anything else per-master): Salt's own ``localfs_key``, through a
    ``salt.cache.Cache`` so that it gets its loader globals (``__opts__``) as usual."""
    return getattr(local_cache(opts, kwargs), fun)(bank, *args, **kw)


#: Seconds between two looks while a read of the cluster key pair (``CLUSTER_KEY_FILES``,
#: ``master/fileutil.py``) waits up to ``CLUSTER_KEY_SETTLE`` for a rewrite in progress. Only
#: a file that stays missing or incomplete costs the whole wait: on a first start without a
#: provisioned pair, once, before Salt generates one.
CLUSTER_KEY_POLL = 0.01


def _is_cluster_key(opts: dict, bank: str, key) -> bool:
    return bank == "master_keys" and key in CLUSTER_KEY_FILES and bool(opts.get("cluster_id"))


def local_read(opts: dict, kwargs: dict, fun: str, bank: str, key=None):
    """``fetch`` or ``contains`` of ``master_keys`` through :func:`local_call`; for the cluster
    key pair, once the file is a complete PEM or :data:`CLUSTER_KEY_SETTLE` has passed (see
    "The cluster key pair is never read half-replaced")."""
    if fun not in ("fetch", "contains"):
        raise ValueError(f"local_read: {fun!r} is not a read")
    if not _is_cluster_key(opts, bank, key):
        return local_call(opts, kwargs, fun, bank, key)
    started = time.monotonic()
    deadline = started + CLUSTER_KEY_SETTLE
    first = None
    while True:
        data = local_call(opts, kwargs, "fetch", bank, key)
        if complete_pem(data):
            break
        first = first or _what(data)
        if time.monotonic() >= deadline:
            log.debug(
                "saltext-raft keys: %s is %s after %.1f s", key, _what(data), CLUSTER_KEY_SETTLE
            )
            break
        time.sleep(CLUSTER_KEY_POLL)
    if first and complete_pem(data):
        log.info(
            "saltext-raft keys: %s was %s; waited %.3f s for it to be whole again (Salt's "
            "cluster join handshake rewrites the cluster key pair)",
            key,
            first,
            time.monotonic() - started,
        )
    # localfs_key's contains is "a regular file is there"; its fetch returns its text or None
    return data is not None if fun == "contains" else data


def _what(data) -> str:
    if data is None:
        return "missing"
    return "empty" if not data else "not a complete PEM"


#: Salt 3008.4's cluster channel reads this master's own pair as ``pki_dir/master.pem`` and
#: ``master.pub`` (``MasterPubServerChannel.private_key``/``public_key``, used by the cluster
#: discover/join handshake), but creates those names only for ``localfs_key``; with any other
#: keys driver a master that is not the cluster's founder dies at its first start.
MASTER_KEY_COPIES = {".pem": ("master.pem", 0o400), ".pub": ("master.pub", 0o644)}


def keep_master_key_copies(opts: dict, kwargs: dict) -> None:
    """In Salt's cluster mode, after each write to ``master_keys``: this master's pair
    (``<id>.pem``/``<id>.pub``) also as ``pki_dir/master.pem``/``master.pub``, the names Salt's
    cluster channel reads (:data:`MASTER_KEY_COPIES`). After each write, because Salt's own
    migration to ``<id>.pem`` flushes ``master.pem`` and ``master.pub`` last."""
    master_id = str(opts.get("id") or "").removesuffix("_master")
    pki_dir = opts.get("pki_dir")
    if not (opts.get("cluster_id") and master_id and pki_dir):
        return
    for ext, (name, mode) in MASTER_KEY_COPIES.items():
        data = local_call(opts, kwargs, "fetch", "master_keys", master_id + ext)
        if not isinstance(data, (str, bytes)) or not data:
            continue
        raw = data.encode() if isinstance(data, str) else data
        path = os.path.join(pki_dir, name)
        try:
            with open(path, "rb") as fh:
                if fh.read() == raw:
                    continue
        except OSError:
            pass
        atomic_write(path, raw, prefix=f".{name}-", mode=mode)


_last_view_warning = [0.0]


def _view_warning(what: str, exc: Exception) -> None:
    now = time.monotonic()
    if now - _last_view_warning[0] >= VIEW_WARN_INTERVAL:
        _last_view_warning[0] = now
        log.warning(
            "saltext-raft keys: cannot update the pki_dir view (%s): %s; minions whose key "
            "file is missing there fail Salt's token check on this master until it is written",
            what,
            exc,
        )


def _same(bank: str, view, want) -> bool:
    if bank == "keys":
        if not view or not want:
            return not view and not want
        return (
            view.get("state") == want.get("state")
            and (view.get("pub") or "").strip() == (want.get("pub") or "").strip()
        )
    # denied_keys: localfs_key keeps one PEM per id (the first)
    view_first = (view or [None])[0]
    want_first = (want or [None])[0]
    return (view_first or "").strip() == (want_first or "").strip()


def sync_view(opts: dict, kwargs: dict, bank: str, key: str, want) -> None:
    """Make ``pki_dir`` (``localfs_key`` layout) show ``want`` for ``bank``/``key``, then check
    the mirror again: if another process changed the key meanwhile, its later view update may
    have been overwritten by ours, so we repeat with the newer value."""
    for _ in range(VIEW_RETRIES):
        try:
            local = local_cache(opts, view_kwargs(opts, kwargs))
            view = local.fetch(bank, key)
            if _same(bank, view, want):
                return
            if want:
                local.store(bank, key, want[:1] if bank == "denied_keys" else want)
            else:
                local.flush(bank, key)
        except (OSError, SaltCacheError) as exc:
            _view_warning(f"{bank}/{key}", exc)
            return
        again = _mirror_fetch(opts, bank, key)
        if _same(bank, again, want):
            return
        want = again


def _accepted_pub(value) -> str | None:
    if isinstance(value, dict) and value.get("state") == "accepted":
        return (value.get("pub") or "").strip() or None
    return None


def view_root(opts: dict) -> str:
    """The pki dir Salt reads minion keys from: ``cluster_pki_dir`` with Salt's clustering
    (``cluster_id``), else ``pki_dir`` (Salt 3007 ``salt/key.py`` and ``_auth``; 3008's
    request server). One rule for the 3008 view and the 3007 key directories."""
    if opts.get("cluster_id"):
        return opts.get("cluster_pki_dir") or ""
    return opts.get("pki_dir") or ""


def view_kwargs(opts: dict, kwargs: dict | None = None) -> dict:
    """The ``localfs_key`` kwargs of every read and write of this master's view (engine and
    driver side): ``pki_dir``/``user`` as the caller passed them, else named from ``opts``
    (:func:`view_root`, ``user``), the opts whose pki dir Salt's token check reads. Never left
    to ``localfs_key.init_kwargs``: it falls back on the module's ``__opts__``, which Salt's
    loader sets on the one module object of the process each time a loader loads it, so they
    are the opts of whichever loader loaded it last, not necessarily the caller's."""
    out = local_kwargs(kwargs or {})
    if "pki_dir" not in out and view_root(opts):
        out["pki_dir"] = view_root(opts)
    if "user" not in out and opts.get("user") is not None:
        out["user"] = opts["user"]
    return out


def refresh_view(opts: dict, bank: str, key: str) -> bool:
    """Engine side, after a replicated change of ``bank``/``key`` is in the (caught-up) mirror:
    make this master's ``pki_dir`` view show it at once (an acceptance excepted: see below).
    True when the view held an accepted key for ``key`` that is no longer accepted with that
    public key (deleted, rejected, changed): a minion may have a session with this master on
    the strength of it."""
    kwargs = view_kwargs(opts)
    before = None
    if bank == "keys":
        try:
            before = local_cache(opts, kwargs).fetch(bank, key)
        except (OSError, SaltCacheError) as exc:
            _view_warning(f"{bank}/{key}", exc)
    want = _mirror_fetch(opts, bank, key)
    old, new = _accepted_pub(before), _accepted_pub(want)
    if bank == "keys" and old is None and new is not None:
        # An acceptance: left to the minion's login here (``fetch``), as before. A view that
        # holds only the keys of minions that talked to this master (or were accepted
        # through it) keeps revocations, and their AES rotations, to those masters.
        return False
    sync_view(opts, kwargs, bank, key, want)
    return old is not None and old != new


def view_ids(opts: dict, bank: str) -> set:
    """Every minion id ``bank`` has in this master's ``pki_dir`` view or in the mirror."""
    try:
        ids = set(local_cache(opts, view_kwargs(opts)).list(bank))
    except (OSError, SaltCacheError) as exc:
        _view_warning(f"{bank} (listing)", exc)
        ids = set()
    return {i for i in ids if valid_id(opts, i)} | set(list_(opts, bank))


# --------------------------------------------------------------------------------------------
# the replicated side
# --------------------------------------------------------------------------------------------
def check_id(opts: dict, bank: str, key) -> None:
    """The edge check of a key-store call: ``key`` is a valid minion id (Salt's rule) and a
    name the replicated cache can hold (the driver's rule, which ``valid_id`` alone does not
    imply: it lets "." through)."""
    if not valid_id(opts, key):
        raise SaltCacheError(f"raft key store: {bank}/{key!r}: {key!r} is not a valid minion id")
    cachedriver.check_names(mirror_bank(bank), key, key_required=True)


def _mirror_fetch(opts: dict, bank: str, key: str):
    value = cachedriver.fetch_checked(opts, mirror_bank(bank), key)
    return value if value not in ({}, None) else None


def _barrier(opts: dict, what: str) -> None:
    cachedriver.read_barrier(opts, what)


def engine_state(opts: dict) -> tuple[bool, str]:
    """(ready, reason) from the engine's readiness file; a missing or stale file says why."""
    found = engine_settings.read(opts)
    reader = ReadinessReader(found.readiness_path, stale_after=found.stale_after)
    ready = reader.check()
    return ready, reader.reason


def _refuse_if_not_member(opts: dict, what: str) -> None:
    ready, reason = engine_state(opts)
    if not ready and "not a member" in reason:
        raise SaltCacheError(
            f"raft key store: {what} refused: {reason} (master {opts.get('id')!r}); "
            "manage minion keys on a member master, or add this master to the cluster first"
        )


def _write(opts: dict, what: str, call):
    _refuse_if_not_member(opts, what)
    try:
        return call()
    except SaltCacheError as exc:
        _ready, reason = engine_state(opts)
        raise SaltCacheError(
            f"raft key store: {what} was not replicated: {exc} [engine on this master: {reason}]"
        ) from None


def _normalize(bank: str, key: str, data):
    if bank == "keys":
        if not isinstance(data, dict) or data.get("state") not in KEY_STATES:
            raise SaltCacheError(
                f"raft key store: keys/{key}: unrecognized key data (state must be one of "
                f"{', '.join(KEY_STATES)})"
            )
        pub = data.get("pub")
        if not isinstance(pub, str) or not pub.strip():
            raise SaltCacheError(f"raft key store: keys/{key}: the public key is missing")
        return {"state": data["state"], "pub": pub}
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, (list, tuple)) or not all(isinstance(p, str) for p in data):
        raise SaltCacheError(f"raft key store: denied_keys/{key}: expected a list of public keys")
    return list(data)


def store(opts: dict, kwargs: dict, bank: str, key: str, data) -> None:
    check_id(opts, bank, key)
    data = _normalize(bank, key, data)
    state = f" as {data['state']}" if bank == "keys" else ""
    what = f"storing the {bank[:-1].replace('_', ' ')} of minion {key!r}{state}"
    _write(opts, what, lambda: cachedriver.store_checked(opts, mirror_bank(bank), key, data))
    sync_view(opts, kwargs, bank, key, data)


def fetch(opts: dict, kwargs: dict, bank: str, key: str):
    """``{"state", "pub"}`` (``keys``) or a list of PEMs (``denied_keys``); None if absent."""
    check_id(opts, bank, key)
    value = _mirror_fetch(opts, bank, key)
    if value is None and bank == "keys" and not cacheconfig.from_opts(opts).linearizable_reads:
        try:
            _barrier(opts, f"confirming that minion {key!r} has no key")
        except SaltCacheError as exc:
            raise SaltCacheError(
                f"raft key store: this master has no key for minion {key!r} and cannot "
                f"confirm it with the raft cluster: {exc}"
            ) from None
        value = _mirror_fetch(opts, bank, key)
    sync_view(opts, kwargs, bank, key, value)
    return value


def flush(opts: dict, kwargs: dict, bank: str, key=None) -> bool:
    if key is None:
        what = f"removing every entry of {bank}"
        result = _write(opts, what, lambda: cachedriver.flush(opts, mirror_bank(bank), None))
        try:
            local = local_cache(opts, view_kwargs(opts, kwargs))
            for name in local.list(bank):
                local.flush(bank, name)
        except (OSError, SaltCacheError) as exc:
            _view_warning(f"{bank} (whole bank)", exc)
        return bool(result)
    check_id(opts, bank, key)
    what = f"removing the {bank[:-1].replace('_', ' ')} of minion {key!r}"
    result = _write(opts, what, lambda: cachedriver.flush_checked(opts, mirror_bank(bank), key))
    sync_view(opts, kwargs, bank, key, None)
    return bool(result)


def list_(opts: dict, bank: str) -> list:
    return [k for k in cachedriver.list_checked(opts, mirror_bank(bank)) if valid_id(opts, k)]


def list_all(opts: dict, bank: str, include_data: bool = False) -> dict:
    """``localfs_key``/``mmap_key`` shapes: ``keys`` -> ``{id: {"state"[, "pub"]}}``,
    ``denied_keys`` -> ``{id: [pem, ...]}``. Reads the mirror only (one file per minion)."""
    ret = {}
    for key in list_(opts, bank):
        value = _mirror_fetch(opts, bank, key)
        if value is None:
            continue  # flushed since the listing
        if bank == "keys":
            ret[key] = dict(value) if include_data else {"state": value.get("state")}
        else:
            ret[key] = list(value)
    return ret


def contains(opts: dict, bank: str, key=None) -> bool:
    if key is not None:
        check_id(opts, bank, key)
    return cachedriver.contains_checked(opts, mirror_bank(bank), key)


def updated(opts: dict, bank: str, key: str):
    check_id(opts, bank, key)
    return cachedriver.updated_checked(opts, mirror_bank(bank), key)


# --------------------------------------------------------------------------------------------
# moving an existing pki_dir into the replicated store
# --------------------------------------------------------------------------------------------
def import_pki_dir(opts: dict) -> dict:
    """Copy the minion keys of this master's ``pki_dir`` (Salt's ``localfs_key`` layout) into
    the replicated store, skipping ids the store already has. Returns counts per outcome.

    Without this, switching a master with accepted minions to ``keys.cache_driver: raft``
    would make them look new: their next authentication would file them as pending."""
    local = salt.cache.Cache(opts, driver=LOCAL_DRIVER)
    counts = {"imported": 0, "already_present": 0}
    for bank in REPLICATED_BANKS:
        present = set(list_(opts, bank))
        for key, value in local.list_all(bank, include_data=True).items():
            if key in present:
                counts["already_present"] += 1
                continue
            if bank == "denied_keys" and isinstance(value, str):
                value = [value]
            store(opts, {}, bank, key, value)
            counts["imported"] += 1
    return counts


def main(argv=None) -> int:
    """``python -m saltext_raft keys import [-c /etc/salt]``: run once, on one
    master whose engine is up, before minions authenticate against the replicated store."""
    import argparse  # pylint: disable=import-outside-toplevel

    import salt.config  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(prog="python -m saltext_raft keys")
    parser.add_argument("command", choices=["import"])
    parser.add_argument("-c", "--config-dir", default="/etc/salt")
    args = parser.parse_args(argv)
    opts = salt.config.master_config(os.path.join(args.config_dir, "master"))
    if not cacheconfig.keys_driver_enabled(opts):
        parser.error("this master does not have keys.cache_driver: raft")
    try:
        counts = import_pki_dir(opts)
    except SaltCacheError as exc:
        print(f"import failed: {exc}")
        return 1
    print(
        f"imported {counts['imported']} minion key(s) from {opts['pki_dir']}; "
        f"{counts['already_present']} already in the replicated store"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
