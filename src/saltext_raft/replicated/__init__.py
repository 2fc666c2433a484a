"""The replicated Salt cache and minion key store (``cache: raft``, ``keys.cache_driver: raft``).

Lives here: both halves of the ``raft`` cache driver: what runs in the master's request
workers (the driver, reading a local copy and sending writes to the engine) and what runs in
the engine (the state machine, the local copy, the socket). Must not live here: Raft rules
(``core/``, ``kv/``), the engine's process and readiness decision (``master/``), the loader
module (``cache/raft.py``, a thin adapter over ``banks``).

Map (who uses each module):

=============  ================================================================================
``banks``      which bank goes where: one object per kind of bank, chosen once per driver call
               (``cache/raft.py``)
``driver``     the driver functions for the plain replicated cache: bank/key names checked once
               at the edge, writes over the engine's socket, reads from the local copy
``keystore``   Salt 3008's replicated minion key store (``keys``, ``denied_keys``) and the
               per-master ``master_keys``; a minion id checked once at the edge
``config``     the cache's settings (master opts), shared by the engine and the driver
``service``    the engine side: the state machine, the mirror writer, the unix socket
               (``master/service.py`` starts it)
``mirror``     the state machine wrapper and the writer thread of the local copy
``localfs``    the ``localfs`` layout of the local copy (``raft_cache_backend: localfs``)
``sqlite``     the ``sqlite`` layout of the local copy, the default (writer and reader)
``importer``   copying an existing Salt cache in (``salt-run raft.import_cache``)
=============  ================================================================================

Layering: see ``master/__init__.py``.
"""
