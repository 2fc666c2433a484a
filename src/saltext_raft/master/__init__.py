"""What the ``raft`` engine runs inside a Salt master, and what the master's other processes
read of it.

Lives here: the Salt side of one master's Raft node. Must not live here: Raft rules (``core/``),
the asyncio driver (``runtime/``), the replicated Salt cache (``replicated/``), Salt loader
modules (``engines/``, ``runners/``, ``modules/``, ``cache/``: thin adapters over this package).

Map (who uses each module):

=================  ============================================================================
``service``        the engine process: builds the Raft node, decides readiness, fires events,
                   hosts the replicated cache (``engines/raft.py``)
``operations``     the runners' operations as the engine carries them out (``service``)
``control``        the operations' vocabulary and the signed request/reply over the event bus:
                   :class:`~.control.ControlClient` (``runners/raft.py``) and
                   :class:`~.control.ControlRelay` (``service``)
``config``         the engine's options: :class:`~.config.EngineConfig`, validated; the secret
``settings``       the one reader of the engine's settings for processes that are not the
                   engine (gate, runners, execution module, key store, recovery); home of the
                   readiness path and the gate hold's ceiling
``readiness``      the readiness file: writer (engine), reader (workers), the staleness rule
``gate``           holds minion requests in the request workers until the master is ready
``health``         what the ``raft`` execution module reports (``modules/raft.py``)
``revocation``     a replicated key delete or reject ends the minion's access here too
``secret``         the cluster secret file: checks, reading, generating
``recover``        offline recovery and backups (``python -m saltext_raft recover``)
``fileutil``       atomic files, the process lock, private directories
``bootepoch``      the transport epoch each boot claims, persisted so that it only grows
                   (``service``, and ``standalone.py``)
=================  ============================================================================

Layering: this package and ``replicated/`` are the Salt side; they may import ``runtime/``,
``core/``, ``storage/``, ``transport/`` and ``kv/``, never the reverse. ``replicated/`` may
import only ``settings``, ``readiness`` and ``fileutil`` from here (the engine's contract with
the master's other processes); ``tests/unit/test_layering.py`` checks both.
"""
