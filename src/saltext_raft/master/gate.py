"""The request gate: hold minion requests in the master's workers until this master is ready.

Lives here: :func:`install` (wraps ``salt.master.MWorker._handle_payload`` at class level,
idempotently), the per-request decision (:func:`gated_call`), the error shapes of a refusal,
and :class:`GateSettings` (the gate's view of ``master/settings.py``, read from the master
opts at call time). Must not live here: the hold's default and ceiling (``master/settings.py``);
the
decision whether this master is ready: the engine makes it and publishes it through the
readiness file (``master/readiness.py``).

Theory of operation
-------------------
Salt has no hook for this. ``MWorker._handle_payload(self, payload)`` is the one stable
interception point in 3007 and 3008 (SALT-NOTES). The engine module is imported in the master
parent before the request server forks its workers, so wrapping the class there makes every
worker inherit the wrapper. Per request:

1. gate switched off, or the engine not configured -> call through;
2. ``_auth`` -> call through (minions must be able to authenticate while we are not ready;
   :func:`is_auth` says which payloads are one: never a minion's request with a ``cmd`` added
   to its envelope);
3. the readiness file says ready (cached stat, ~1 µs) -> call through;
4. otherwise wait, polling the readiness file, for at most ``gate_hold`` seconds; call through
   as soon as it opens;
5. still closed: refuse. Clear loads get a ClearFuncs-style error dict answered with
   ``{"fun": "send_clear"}``. AES (minion) loads get the refusal message as a plain string,
   also sent in the clear: the minion cannot decrypt it, so its request channel counts the
   try as failed and retries (``send()``'s ``tries`` loop; each job return gets
   ``return_retry_tries`` tries). That is what Salt itself answers when a handler raises
   ("Some exception handling minion payload"), without an ERROR traceback in the master log
   per refused request. Never an encrypted empty success: a minion would take its job return
   as delivered and it would be lost.

Keep ``gate_hold`` short (default 1 s, at most ``settings.MAX_GATE_HOLD``: 3 s). On both Salt
lines a request worker serves one request at a time (a zeromq REP socket: ``recv`` -> handle ->
``send``), so a held request ties up its whole worker; ``_auth`` is answered by the same
workers (3007: through ``_handle_payload``; 3008: in the channel, before it), with a 5 s
``auth_timeout`` on the minion. With ``worker_threads`` (default 5) requests held at once, a
new ``_auth`` waits up to ``gate_hold`` for a free worker: the hold must stay well below the
minion's timeouts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

from saltext_raft import methodwrap
from saltext_raft.master import settings as engine_settings
from saltext_raft.master.readiness import ReadinessReader

log = logging.getLogger(__name__)

#: Marks our wrapper so that installing twice does not wrap twice.
_MARK = "__saltext_raft_gate__"
#: Seconds between looks at the readiness file while a request is held.
POLL_INTERVAL = 0.05
ERROR_NAME = "SaltRaftNotReady"


class GateClosed(RuntimeError):
    """Kept for callers that caught it: refusals are now returned, not raised."""


@dataclass(frozen=True)
class GateSettings:
    enabled: bool
    hold: float
    readiness_path: str
    stale_after: float


_DISABLED = GateSettings(False, 0.0, "", 0.0)


def settings_from_opts(opts: dict) -> GateSettings:
    """The gate's settings from the master opts (the ``raft`` engine entry), through the one
    tolerant reader of the engine's settings."""
    found = engine_settings.read(opts)
    if not found.gate:
        return _DISABLED
    return GateSettings(True, found.gate_hold, found.readiness_path, found.stale_after)


class Gate:
    """One worker's gate: settings and a readiness reader, built lazily from the opts."""

    __slots__ = ("settings", "reader", "_opts_key", "_refused_log", "_held_log")

    def __init__(self):
        self.settings = _DISABLED
        self.reader: ReadinessReader | None = None
        self._opts_key = None
        self._refused_log = 0.0
        self._held_log = 0.0

    def for_opts(self, opts: dict) -> Gate:
        # Re-read the settings only when the engines option object changes (opts are reloaded
        # by replacing it), so switching the gate off takes effect without a restart of the
        # worker whenever Salt reloads its opts.
        key = (id(opts), id(opts.get("engines")))
        if key != self._opts_key:
            self.settings = settings_from_opts(opts)
            self.reader = (
                ReadinessReader(self.settings.readiness_path, self.settings.stale_after)
                if self.settings.enabled
                else None
            )
            self._opts_key = key
        return self

    def _due(self, attr: str) -> bool:
        """True at most once a minute per attribute (one worker's log rate limit)."""
        now = time.monotonic()
        if now - getattr(self, attr) < 60.0:
            return False
        setattr(self, attr, now)
        return True

    def note_refused(self, what: str, reason: str) -> None:
        if self._due("_refused_log"):
            log.warning(
                "saltext-raft gate: refused %s after holding it %.1fs: %s "
                "(logged at most once a minute per worker)",
                what,
                self.settings.hold,
                reason,
            )

    def note_held(self, what: str, waited: float) -> None:
        if self._due("_held_log"):
            log.info(
                "saltext-raft gate: held %s for %.2fs until this master was ready, then served "
                "it (logged at most once a minute per worker)",
                what,
                waited,
            )


_GATE = Gate()


def _describe(payload) -> str:
    enc = payload.get("enc") if isinstance(payload, dict) else None
    load = payload.get("load") if isinstance(payload, dict) else None
    cmd = load.get("cmd") if isinstance(load, dict) else None
    return f"a request (enc={enc}, cmd={cmd})"


def is_auth(payload) -> bool:
    """Whether ``payload`` is an ``_auth`` (passes a closed gate): a clear load with
    ``cmd: _auth``, or Salt 3008's after-``_auth`` stats call (``{"cmd": "_auth", "_start"}``,
    no ``enc``, no ``load``: nothing to serve). A top-level ``cmd`` beside an ``enc`` or a
    ``load`` is not one: the outer envelope is what the minion wrote, and Salt 3007 serves such
    a payload by its ``enc`` alone."""
    if not isinstance(payload, dict):
        return False
    if payload.get("cmd") == "_auth" and "enc" not in payload and "load" not in payload:
        return True
    load = payload.get("load")
    return payload.get("enc") == "clear" and isinstance(load, dict) and load.get("cmd") == "_auth"


def refusal_message(reason: str, hold: float) -> str:
    return (
        f"This Salt master is not ready to serve requests (saltext-raft: {reason}); "
        f"held {hold:g}s, retry later or use another master"
    )


def clear_refusal(reason: str, hold: float) -> tuple[dict, dict]:
    """What a ClearFuncs method returns on failure, answered in the clear."""
    return (
        {"error": {"name": ERROR_NAME, "message": refusal_message(reason, hold)}},
        {"fun": "send_clear"},
    )


def aes_refusal(reason: str, hold: float) -> tuple[str, dict]:
    """What an encrypted (minion) request gets: a string in the clear, which the minion fails
    to decrypt and retries. Not a dict: never mistaken for a reply."""
    return refusal_message(reason, hold), {"fun": "send_clear"}


async def gated_call(original, worker, payload, gate: Gate | None = None):
    """Run ``original(worker, payload)`` once the gate lets this payload through."""
    gate = (gate or _GATE).for_opts(worker.opts)
    reader = gate.reader
    if reader is None or reader.is_open() or is_auth(payload):
        return await original(worker, payload)
    hold = gate.settings.hold
    start = time.monotonic()
    deadline = start + hold
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(POLL_INTERVAL, remaining))
        if reader.check():
            gate.note_held(_describe(payload), time.monotonic() - start)
            return await original(worker, payload)
    reason = reader.reason
    gate.note_refused(_describe(payload), reason)
    if isinstance(payload, dict) and payload.get("enc") == "clear":
        return clear_refusal(reason, hold)
    return aes_refusal(reason, hold)


def install(worker_cls=None) -> bool:
    """Wrap ``worker_cls._handle_payload`` (default ``salt.master.MWorker``). Idempotent:
    returns False if it was already wrapped."""
    if worker_cls is None:
        import salt.master  # pylint: disable=import-outside-toplevel

        worker_cls = salt.master.MWorker
    if methodwrap.is_wrapped(worker_cls, "_handle_payload", _MARK):
        return False
    original = methodwrap.current(worker_cls, "_handle_payload")

    @functools.wraps(original)
    async def _handle_payload(self, payload):
        return await gated_call(original, self, payload)

    methodwrap.wrap(worker_cls, "_handle_payload", _handle_payload, original, _MARK)
    log.debug("saltext-raft gate installed on %s._handle_payload", worker_cls.__name__)
    return True


class GateNotInstalled(SystemExit):
    """The gate is on but could not be installed: the master must not start serving.

    A ``SystemExit`` on purpose: Salt's loader turns an ``Exception`` raised by a module's
    ``__virtual__`` into a log line and carries on, and a master without its gate would serve
    minions whatever the cluster says. Raised in the master parent while it loads its engines,
    before it creates its request server, it stops the master there (fail closed)."""


def install_for_master(opts: dict, worker_cls=None) -> bool:
    """Install the gate when the master's engine options have it on (the default); if that
    fails, raise :class:`GateNotInstalled` instead of letting the master serve ungated."""
    if not settings_from_opts(opts).enabled:
        return False
    try:
        return install(worker_cls)
    except Exception as exc:  # pylint: disable=broad-except
        msg = (
            f"saltext-raft: could not install the request gate ({type(exc).__name__}: {exc}); "
            "the master stops here rather than serve minions without it. Set the raft engine "
            "option 'gate: false' to run without the gate."
        )
        log.critical("%s", msg)
        raise GateNotInstalled(msg) from exc


def uninstall(worker_cls) -> bool:
    return methodwrap.unwrap(worker_cls, "_handle_payload", _MARK)
