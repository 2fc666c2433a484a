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
in :mod:`saltext_raft.integration.cachedriver`; this module only adapts it to the loader.
"""

import time

from saltext_raft.integration import cachedriver as _driver

__virtualname__ = "raft"
__func_alias__ = {"list_": "list"}


def _opts() -> dict:
    return __opts__  # pylint: disable=undefined-variable  (injected by the loader)


def __virtual__():
    return __virtualname__


def init_kwargs(kwargs):
    return _driver.init_kwargs(_opts(), kwargs)


def get_storage_id(kwargs):
    return _driver.get_storage_id(_opts(), kwargs)


def store(bank, key, data, cachedir=None, expires=None, **kwargs):  # pylint: disable=unused-argument
    """Replicate ``data`` under ``bank``/``key``; returns once committed and mirrored here.

    ``expires`` (Salt 3008's ``Cache.store``): stored in the envelope ``Cache.fetch`` and
    ``Cache.clean_expired`` understand, as Salt does for drivers without native expiry.
    """
    if expires:
        data = {"data": data, "_expires": int(time.time() + expires)}
    return _driver.store(_opts(), bank, key, data)


def fetch(bank, key, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    return _driver.fetch(_opts(), bank, key)


def updated(bank, key, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    return _driver.updated(_opts(), bank, key)


def flush(bank, key=None, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    return _driver.flush(_opts(), bank, key)


def list_(bank, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    return _driver.list_(_opts(), bank)


def contains(bank, key=None, cachedir=None, **kwargs):  # pylint: disable=unused-argument
    return _driver.contains(_opts(), bank, key)
