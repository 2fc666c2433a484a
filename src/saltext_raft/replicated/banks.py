"""Which bank goes where: one object per kind of bank behind the ``raft`` cache driver.

Lives here: :func:`for_bank` (the choice, made once per driver call) and the three kinds of
bank, each with Salt's cache functions (``store``, ``fetch``, ``updated``, ``flush``, ``list_``,
``list_all``, ``contains``; ``opts`` and the cache's ``kwargs`` first):

- :data:`CACHE` (:class:`CacheBanks`): the plain replicated cache (``replicated/driver.py``);
- :data:`KEYS` (:class:`KeyBanks`): Salt 3008's replicated minion key store, the banks ``keys``
  and ``denied_keys`` when this driver is ``keys.cache_driver`` (``replicated/keystore.py``);
- :data:`LOCAL` (:class:`LocalBanks`): ``master_keys``, which stay on this master (Salt's
  ``localfs_key`` in ``pki_dir``; reads of the cluster key pair wait out a replacement in
  progress: ``keystore.local_read``).

Must not live here: the checks of bank and key names (the driver and the key store make them,
once, as a call enters them), the engine socket, the mirror.
"""

from __future__ import annotations

import time

from salt.exceptions import SaltCacheError

from saltext_raft.kv.machine import bank_parts
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import driver
from saltext_raft.replicated import keystore
from saltext_raft.roots.layout import ROOTS_BANK

#: Top banks of saltext-raft's own stores, which decide whom Salt trusts or what minions run:
#: no Salt cache call reads or writes them (their own code calls the driver directly). A user
#: granted ``salt-run cache.store`` must not gain more through the ``raft`` driver than through
#: ``localfs``: a manifest written in the roots' banks became a file in every master's
#: ``file_roots`` (red team 2026-12-07).
RESERVED_BANKS = {
    keystore.MIRROR_PREFIX: "the replicated minion key store",
    cacheconfig.CLUSTER_SECRETS_BANK: "Salt's replicated cluster secrets",
    ROOTS_BANK: "the replicated roots (written by salt-run raft.sync_roots)",
}


class CacheBanks:
    """Every bank of the plain replicated cache (and every bank when this driver is not the
    keys driver)."""

    name = "cache"

    @staticmethod
    def store(opts, kwargs, bank, key, data, expires=None):  # pylint: disable=unused-argument
        """``expires`` (Salt 3008's ``Cache.store``): stored in the envelope ``Cache.fetch`` and
        ``Cache.clean_expired`` understand, as Salt does for drivers without native expiry."""
        if expires:
            data = {"data": data, "_expires": int(time.time() + expires)}
        return driver.store(opts, bank, key, data)

    @staticmethod
    def fetch(opts, kwargs, bank, key):  # pylint: disable=unused-argument
        return driver.fetch(opts, bank, key)

    @staticmethod
    def updated(opts, kwargs, bank, key):  # pylint: disable=unused-argument
        return driver.updated(opts, bank, key)

    @staticmethod
    def flush(opts, kwargs, bank, key=None):  # pylint: disable=unused-argument
        return driver.flush(opts, bank, key)

    @staticmethod
    def list_(opts, kwargs, bank):  # pylint: disable=unused-argument
        return driver.list_(opts, bank)

    @staticmethod
    def list_all(opts, kwargs, bank, include_data=False):  # pylint: disable=unused-argument
        """``{key: data}`` for every key of ``bank``; sub-banks are not included. The bank is
        checked once; the names listed come from the local copy, which holds checked names."""
        driver.check_names(bank)
        ret = {}
        for key in driver.list_checked(opts, bank):
            if driver.contains_checked(opts, bank, key):  # a key, not a sub-bank
                ret[key] = driver.fetch_checked(opts, bank, key)
        return ret

    @staticmethod
    def contains(opts, kwargs, bank, key=None):  # pylint: disable=unused-argument
        return driver.contains(opts, bank, key)


class KeyBanks:
    """``keys`` and ``denied_keys``: the replicated minion key store."""

    name = "keys"

    @staticmethod
    def store(opts, kwargs, bank, key, data, expires=None):  # pylint: disable=unused-argument
        return keystore.store(opts, kwargs, bank, key, data)

    @staticmethod
    def fetch(opts, kwargs, bank, key):
        return keystore.fetch(opts, kwargs, bank, key)

    @staticmethod
    def updated(opts, kwargs, bank, key):  # pylint: disable=unused-argument
        return keystore.updated(opts, bank, key)

    @staticmethod
    def flush(opts, kwargs, bank, key=None):
        return keystore.flush(opts, kwargs, bank, key)

    @staticmethod
    def list_(opts, kwargs, bank):  # pylint: disable=unused-argument
        return keystore.list_(opts, bank)

    @staticmethod
    def list_all(opts, kwargs, bank, include_data=False):  # pylint: disable=unused-argument
        return keystore.list_all(opts, bank, include_data=include_data)

    @staticmethod
    def contains(opts, kwargs, bank, key=None):  # pylint: disable=unused-argument
        return keystore.contains(opts, bank, key)


class LocalBanks:
    """``master_keys``: this master's own keys, served by Salt's ``localfs_key``."""

    name = "local"

    @staticmethod
    def store(opts, kwargs, bank, key, data, expires=None):  # pylint: disable=unused-argument
        ret = keystore.local_call(opts, kwargs, "store", bank, key, data)
        if bank == "master_keys":
            keystore.keep_master_key_copies(opts, kwargs)
        return ret

    @staticmethod
    def fetch(opts, kwargs, bank, key):
        return keystore.local_read(opts, kwargs, "fetch", bank, key)

    @staticmethod
    def updated(opts, kwargs, bank, key):
        return keystore.local_call(opts, kwargs, "updated", bank, key)

    @staticmethod
    def flush(opts, kwargs, bank, key=None):
        ret = keystore.local_call(opts, kwargs, "flush", bank, key=key)
        if bank == "master_keys":
            keystore.keep_master_key_copies(opts, kwargs)
        return ret

    @staticmethod
    def list_(opts, kwargs, bank):
        return keystore.local_call(opts, kwargs, "list", bank)

    @staticmethod
    def list_all(opts, kwargs, bank, include_data=False):
        return keystore.local_call(opts, kwargs, "list_all", bank, include_data=include_data)

    @staticmethod
    def contains(opts, kwargs, bank, key=None):
        return keystore.local_read(opts, kwargs, "contains", bank, key)


CACHE = CacheBanks()
KEYS = KeyBanks()
LOCAL = LocalBanks()


def for_bank(opts: dict, bank):
    """The kind of bank ``bank`` is: :data:`KEYS`, :data:`LOCAL` or :data:`CACHE`. The key
    banks are only special when this driver is the keys driver; the :data:`RESERVED_BANKS`
    are never reachable as plain cache banks."""
    if isinstance(bank, str):
        top = bank_parts(bank)[:1]
        if top and top[0] in RESERVED_BANKS:
            raise SaltCacheError(
                f"raft cache: bank {bank!r} is reserved for {RESERVED_BANKS[top[0]]}"
            )
    if not cacheconfig.keys_driver_enabled(opts):
        return CACHE
    if bank in keystore.REPLICATED_BANKS:
        return KEYS
    if bank in keystore.LOCAL_BANKS:
        return LOCAL
    return CACHE
