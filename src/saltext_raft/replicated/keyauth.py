"""Salt 3007's ``_auth`` confirms a missing minion key with the cluster before it treats the
minion as new (engine option ``keys: replicate``; docs/keys.md).

Lives here: :func:`install` (wraps ``salt.channel.server.ReqServerChannel._auth`` at class
level, idempotently), the per-request decision (:func:`confirmed_auth`) and the refusal a minion
gets when the cluster cannot be asked. Must not live here: what the engine does to answer
(``replicated/keys3007.py``, ``KeyReplication.handle_sync``), the key directories' layout
(``replicated/keyview.py``).

Why: ``_auth`` files a minion whose key it does not find as a new, pending key. A minion
accepted through master 1 that reaches master 2 before master 2 applied the acceptance would be
written pending there, and that pending key would be proposed to every master. So when none of
``minions/``, ``minions_pre/``, ``minions_rejected/`` holds the id, the wrapper asks the local
engine (``keys.sync`` on the cache socket): the engine takes a ReadIndex barrier (a quorum
confirms it is current) and writes that id's replicated state to the directories; then Salt's
``_auth`` runs and finds it. Without an answer (no quorum, engine down, timeout) the minion is
answered with a refusal it cannot read: its sign-in fails and it tries again later, and nothing
is written. The reconciler's rules cover the rest (a new pending key for an id the log has is
never proposed).

Installed in the master parent when the engine module is loaded, before the request server
forks its workers (as the request gate: SALT-NOTES "Holding back minion requests"); the opts
are read at call time.
"""

from __future__ import annotations

import functools
import logging
import os
import time

from salt.utils.verify import valid_id

from saltext_raft import methodwrap
from saltext_raft.master import settings as engine_settings
from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated.driver import EngineClient
from saltext_raft.replicated.keys3007 import SYNC_OP
from saltext_raft.replicated.keys3007 import salt_has_key_cache
from saltext_raft.replicated.keyview import ACCEPTED
from saltext_raft.replicated.keyview import KEY_DIRS
from saltext_raft.replicated.keyview import PENDING
from saltext_raft.replicated.keyview import REJECTED
from saltext_raft.replicated.keyview import view_root

log = logging.getLogger(__name__)

_MARK = "__saltext_raft_keyauth__"
#: Seconds ``_auth`` waits for the engine's answer: below the minion's 5 s ``auth_timeout``,
#: and a request worker is held meanwhile.
SYNC_TIMEOUT = 3.0
#: The directories whose entry makes ``_auth`` decide without treating the minion as new.
KNOWN_STATES = (ACCEPTED, PENDING, REJECTED)

#: Seconds after a sync the cluster could not answer (no quorum, engine down, timeout) during
#: which another missing key is refused without asking: each such sync holds this request
#: worker for ``SYNC_TIMEOUT``, and a minion naming new ids would keep every worker waiting.
HOLD_OFF = 1.0
#: Error codes of an engine that answered but refused the request itself (not unavailable).
_REFUSED_CODES = ("rejected", "bad_request")

_clients: dict = {}
_last_log = [0.0]
_held_until = [0.0]


class NotConfirmed(Exception):
    """The engine did not confirm the id's state with the cluster; ``unavailable``: it could
    not (no quorum, engine down, timeout), rather than refusing this request."""

    def __init__(self, message: str, unavailable: bool = True):
        super().__init__(message)
        self.unavailable = unavailable


def _known_locally(opts: dict, minion_id: str) -> bool:
    root = view_root(opts)
    return any(
        os.path.lexists(os.path.join(root, KEY_DIRS[state], minion_id)) for state in KNOWN_STATES
    )


def ask_engine(opts: dict, minion_id: str, timeout: float = SYNC_TIMEOUT) -> dict:
    """``keys.sync`` through the local engine's cache socket (one client per process)."""
    path = cacheconfig.from_opts(opts).socket
    client = _clients.get((os.getpid(), path))
    if client is None:
        client = _clients[(os.getpid(), path)] = EngineClient(path)
    try:
        answer = client.call({"op": SYNC_OP, "minion": minion_id, "timeout": timeout}, timeout)
    except OSError as exc:
        raise NotConfirmed(f"the local raft engine did not answer ({exc})") from None
    if not answer.get("ok"):
        err = answer.get("error") or {}
        code = err.get("code", "error")
        raise NotConfirmed(
            f"{code}: {err.get('message', '')}", unavailable=code not in _REFUSED_CODES
        )
    return answer.get("result") or {}


def refusal(minion_id: str, why: str) -> str:
    """A reply the minion cannot read as a sign-in answer: it fails this sign-in and retries.
    Not ``{"ret": False}``, which a minion takes as a rejection (and may exit)."""
    return (
        f"saltext-raft: this master cannot confirm the key state of minion {minion_id!r} with "
        f"the raft cluster ({why}); retry later or use another master"
    )


def confirmed_auth(original, channel, load, *args, **kwargs):
    """Run Salt's ``_auth`` once a missing key has been confirmed with the cluster."""
    opts = channel.opts
    minion_id = load.get("id") if isinstance(load, dict) else None
    if (
        not engine_settings.read(opts).keys_replicate
        or opts.get("open_mode")
        or not isinstance(minion_id, str)
    ):
        return original(channel, load, *args, **kwargs)
    if not valid_id(opts, minion_id):  # Salt's _auth refuses it, writing nothing
        return original(channel, load, *args, **kwargs)
    if not _known_locally(opts, minion_id):
        if time.monotonic() < _held_until[0]:
            return refusal(minion_id, "the cluster could not be asked a moment ago")
        try:
            states = ask_engine(opts, minion_id, SYNC_TIMEOUT)
        except NotConfirmed as exc:
            now = time.monotonic()
            if exc.unavailable:
                _held_until[0] = now + HOLD_OFF
            if now - _last_log[0] >= 30.0:
                _last_log[0] = now
                log.warning(
                    "saltext-raft keys: minion %r not authenticated: no key here and the "
                    "cluster could not confirm its state: %s (logged every 30s per worker)",
                    minion_id,
                    exc,
                )
            return refusal(minion_id, str(exc))
        # Once per minion that has no key file here (after it, Salt has written one).
        log.info(
            "saltext-raft keys: minion %r had no key file here; the cluster has it as %s",
            minion_id,
            (states or {}).get("keys") or "unknown (a new minion)",
        )
    return original(channel, load, *args, **kwargs)


def install(channel_cls=None) -> bool:
    """Wrap ``channel_cls._auth`` (default Salt's ``ReqServerChannel``); False if already."""
    if channel_cls is None:
        import salt.channel.server  # pylint: disable=import-outside-toplevel

        channel_cls = salt.channel.server.ReqServerChannel
    if methodwrap.is_wrapped(channel_cls, "_auth", _MARK):
        return False
    original = methodwrap.current(channel_cls, "_auth")

    @functools.wraps(original)
    def _auth(self, load, *args, **kwargs):
        return confirmed_auth(original, self, load, *args, **kwargs)

    methodwrap.wrap(channel_cls, "_auth", _auth, original, _MARK)
    return True


def uninstall(channel_cls) -> bool:
    return methodwrap.unwrap(channel_cls, "_auth", _MARK)


class KeyAuthNotInstalled(SystemExit):
    """``keys: replicate`` is on but the wrapper could not be installed: the master stops
    rather than let ``_auth`` demote keys (a ``SystemExit``, as ``gate.GateNotInstalled``)."""


def install_for_master(opts: dict, channel_cls=None) -> bool:
    """Wrap ``_auth`` when ``keys: replicate`` is on, on a Salt without a key cache driver
    (on 3008 the engine refuses the option and says why; ``_auth`` is left alone)."""
    if not engine_settings.read(opts).keys_replicate or salt_has_key_cache():
        return False
    try:
        return install(channel_cls)
    except Exception as exc:  # pylint: disable=broad-except
        msg = (
            f"saltext-raft: keys: replicate is on but _auth could not be wrapped "
            f"({type(exc).__name__}: {exc}); the master stops here"
        )
        log.critical("%s", msg)
        raise KeyAuthNotInstalled(msg) from exc
