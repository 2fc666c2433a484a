"""Salt cache driver ``raft``: Salt's cache, replicated across masters by the ``raft`` engine.

.. code-block:: yaml

    # on every master of the cluster
    cache: raft
    engines:
      - raft:
          peers: {m1: 10.0.0.1:4606, m2: 10.0.0.2:4606, m3: 10.0.0.3:4606}
          secret_file: /etc/salt/raft.secret

``store``/``flush`` are committed through Raft by the local engine (over a unix socket in
``sock_dir``) and return once this master's local copy shows them; ``fetch``/``list``/
``contains``/``updated`` read the local copy. Options and guarantees: docs/cache.md. The code is
in :mod:`saltext_raft.replicated`; this module only adapts it to the loader.

On Salt 3008 the same driver can hold the minion keys (``keys.cache_driver: raft``): minion keys
are replicated, each master's own keys stay in its ``pki_dir`` (docs/cache.md, "Minion keys").
"""

from saltext_raft.replicated import banks as _banks
from saltext_raft.replicated import driver as _driver
from saltext_raft.replicated import keystore as _keys

__virtualname__ = "raft"
__func_alias__ = {"list_": "list"}

# Each call picks the kind of bank once (``replicated/banks.py``): the plain replicated cache,
# Salt 3008's replicated minion key store (``keys``/``denied_keys`` with ``keys.cache_driver:
# raft``), or ``master_keys``, which stays on this master (Salt's ``localfs_key`` in
# ``pki_dir``).


def _opts() -> dict:
    return __opts__  # pylint: disable=undefined-variable  (injected by the loader)


def __virtual__():
    return __virtualname__


def init_kwargs(kwargs):
    ret = _driver.init_kwargs(_opts(), kwargs)
    # what Salt's localfs_key needs for master_keys and the pki_dir view (Salt passes
    # ``pki_dir``/``user`` to the keys driver in a few places, e.g. ``salt-key --gen-signature``)
    ret.update(_keys.local_kwargs(kwargs))
    return ret


def get_storage_id(kwargs):
    return _driver.get_storage_id(_opts(), kwargs)


def store(bank, key, data, cachedir=None, expires=None, **kwargs):  # pylint: disable=unused-argument
    """Replicate ``data`` under ``bank``/``key``; returns once committed and mirrored here.

    ``expires`` (Salt 3008's ``Cache.store``): stored in the envelope ``Cache.fetch`` and
    ``Cache.clean_expired`` understand, as Salt does for drivers without native expiry.
    """
    opts = _opts()
    return _banks.for_bank(opts, bank).store(opts, kwargs, bank, key, data, expires)


def fetch(bank, key, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    opts = _opts()
    return _banks.for_bank(opts, bank).fetch(opts, kwargs, bank, key)


def updated(bank, key, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    opts = _opts()
    return _banks.for_bank(opts, bank).updated(opts, kwargs, bank, key)


def flush(bank, key=None, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    opts = _opts()
    return _banks.for_bank(opts, bank).flush(opts, kwargs, bank, key)


def list_(bank, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    opts = _opts()
    return _banks.for_bank(opts, bank).list_(opts, kwargs, bank)


def list_all(bank, include_data=False, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    """``{key: data}`` for every key of ``bank`` (Salt 3008's ``Cache.list_all``; ``salt.key``
    lists minion keys with it). Sub-banks are not included."""
    opts = _opts()
    return _banks.for_bank(opts, bank).list_all(opts, kwargs, bank, include_data)


def contains(bank, key=None, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    opts = _opts()
    return _banks.for_bank(opts, bank).contains(opts, kwargs, bank, key)
