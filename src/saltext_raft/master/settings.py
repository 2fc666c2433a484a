"""The engine's settings as the processes that are not the engine read them.

Lives here: :func:`engine_options` (the ``raft`` entry of the master's ``engines`` list),
:class:`EngineSettings` and :func:`read` (the few settings the request gate, the ``raft``
runners, the execution module, the cache driver's key store and the recovery command need:
the node id, the readiness file and its staleness, the gate and its hold, whether Salt 3007's
key directories are replicated), and the one home of
the readiness file's path (:func:`readiness_path`) and of the gate hold's default and ceiling.
Must not live here: validation that refuses a bad option (the engine does that, in
``master/config.py``, and refuses to start), anything that opens files or sockets.

Why tolerant: these readers run in every request worker and in ``salt-run``; the engine has
already validated the same options (or refused to start on them), so a bad value here falls
back to its default rather than failing every request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from saltext_raft.master.readiness import stale_after

#: Where the readiness file and other small engine files live, relative to ``cachedir``.
#: Not ``.cluster_joined.*`` nor ``health/`` (Salt 3008 core consensus owns those).
STATE_DIRNAME = "saltext_raft"
#: The readiness file's name inside :data:`STATE_DIRNAME`.
READINESS_FILE = "ready"
#: Default seconds between refreshes of the readiness file (engine option ``readiness_interval``).
DEFAULT_READINESS_INTERVAL = 1.0
#: Default and ceiling of the engine option ``gate_hold`` (seconds): a held request ties up a
#: request worker, and minions authenticate through the same workers with a 5 s timeout.
DEFAULT_GATE_HOLD = 1.0
MAX_GATE_HOLD = 3.0
#: The engine option that replicates Salt 3007's key directories, and its one value (checked
#: by the engine: ``replicated/keys3007.py``).
KEYS_OPTION = "keys"
KEYS_REPLICATE = "replicate"


def engine_options(opts: dict) -> dict | None:
    """The ``raft`` entry of the master's ``engines`` option ({} when listed without options),
    or None when the engine is not configured."""
    engines = opts.get("engines") or []
    if isinstance(engines, dict):
        engines = [{k: v} for k, v in engines.items()]
    for item in engines:
        if isinstance(item, str) and item == "raft":
            return {}
        if isinstance(item, dict) and "raft" in item:
            value = item["raft"]
            return dict(value) if isinstance(value, dict) else {}
        if isinstance(item, dict):
            for value in item.values():
                if isinstance(value, dict) and value.get("engine_module") == "raft":
                    return {k: v for k, v in value.items() if k != "engine_module"}
    return None


def state_dir(cachedir: str) -> str:
    """The engine's state directory (readiness file, process lock) under ``cachedir``."""
    return os.path.join(cachedir or "", STATE_DIRNAME)


def readiness_path(cachedir: str) -> str:
    """The readiness file the engine writes and the workers read."""
    return os.path.join(state_dir(cachedir), READINESS_FILE)


@dataclass(frozen=True)
class EngineSettings:
    """What a process that is not the engine knows of the engine's settings."""

    #: The ``raft`` engine is listed in the master's ``engines``.
    configured: bool
    #: This master's node id (engine option ``node_id``, else the master's ``id``).
    node_id: str
    readiness_path: str
    #: Seconds without a heartbeat after which the readiness file is not believed.
    stale_after: float
    #: The request gate is on (engine option ``gate``).
    gate: bool
    #: Seconds the gate holds a request (engine option ``gate_hold``, at most the ceiling).
    gate_hold: float
    #: Salt 3007's minion key directories are replicated (engine option ``keys: replicate``).
    keys_replicate: bool = False


def read(opts: dict) -> EngineSettings:
    """The engine's settings from the master opts, tolerant of bad values (see the module
    docstring)."""
    options = engine_options(opts)
    configured = options is not None
    options = options or {}
    interval = _number(options.get("readiness_interval"), DEFAULT_READINESS_INTERVAL)
    if interval <= 0:
        interval = DEFAULT_READINESS_INTERVAL
    return EngineSettings(
        configured=configured,
        node_id=str(options.get("node_id") or opts.get("id") or ""),
        readiness_path=readiness_path(opts.get("cachedir") or ""),
        stale_after=stale_after(interval),
        gate=configured and options.get("gate", True) is not False,
        gate_hold=min(_number(options.get("gate_hold"), DEFAULT_GATE_HOLD), MAX_GATE_HOLD),
        keys_replicate=configured and options.get(KEYS_OPTION) == KEYS_REPLICATE,
    )


def _number(value, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return default
    return float(value)
