"""The ``raft`` engine's configuration: one dataclass, its defaults, validation and the secret.

Lives here: :class:`EngineConfig` (every engine option with its default), :func:`from_opts`
(engine options + Salt master opts -> a validated config), the secret loading (a file, or a key
derived from Salt's cluster key material). Must not live here: anything that starts processes
or opens sockets; how processes that are not the engine read its options (``master/settings.py``,
whose defaults and limits this config uses).

Defaults come from Salt's own options where Salt has one (``cluster_id``, ``cluster_peers``,
``interface``, ``cluster_pki_dir``), but saltext-raft never *writes* anything under a
``cluster_`` name, path or tag: those belong to Salt's own clustering.

The secret is never logged and never part of ``repr()``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields

from saltext_raft.core.nodeid import node_id_problem
from saltext_raft.master.fileutil import CLUSTER_PEM_FILE
from saltext_raft.master.readiness import stale_after
from saltext_raft.master.secret import HOW_TO_GENERATE
from saltext_raft.master.secret import MIN_SECRET_BYTES
from saltext_raft.master.secret import SecretError
from saltext_raft.master.secret import read_secret_file
from saltext_raft.master.settings import DEFAULT_GATE_HOLD
from saltext_raft.master.settings import DEFAULT_READINESS_INTERVAL
from saltext_raft.master.settings import MAX_GATE_HOLD
from saltext_raft.master.settings import readiness_path
from saltext_raft.master.settings import state_dir
from saltext_raft.optionerror import OptionError
from saltext_raft.replicated.config import CacheConfigError
from saltext_raft.replicated.config import cache_enabled
from saltext_raft.replicated.config import from_opts as cache_settings
from saltext_raft.replicated.keys3007 import check_option as check_keys_option
from saltext_raft.roots.config import RootsConfigError
from saltext_raft.roots.config import from_opts as roots_settings
from saltext_raft.runtime.config import DEFAULT_ELECTION_TICKS
from saltext_raft.runtime.config import DEFAULT_HEARTBEAT_TICKS
from saltext_raft.runtime.config import DEFAULT_TICK_SECONDS
from saltext_raft.runtime.config import RuntimeConfig
from saltext_raft.transport.crypto import derive_secret_from_cluster_key

#: The engine's own TCP port. Clear of Salt's publish (4505) and request (4506) ports and of
#: Salt 3008's core consensus pool port (4520; 55596 in 3008.0).
DEFAULT_PORT = 4606
RESERVED_PORTS = {
    4505: "Salt's publish_port",
    4506: "Salt's ret_port",
    4520: "Salt 3008 core consensus (cluster_pool_port)",
    55596: "Salt 3008.0 core consensus",
}
#: Cluster id used when neither the engine nor Salt's ``cluster_id`` names one.
DEFAULT_CLUSTER_ID = "saltext-raft"
#: Default directory of ``raft.backup`` files, relative to ``cachedir``.
BACKUP_DIRNAME = "saltext_raft_backups"
_WILDCARDS = {"0.0.0.0", "::", "*", ""}


class EngineConfigError(OptionError):
    """An engine option is invalid (:class:`~saltext_raft.optionerror.OptionError`)."""

    subject = "raft engine"


@dataclass
class EngineConfig:
    """Every option of the ``raft`` engine (``engines: [{raft: {...}}]`` in the master config).

    The docstrings of the fields are the reference; docs/configuration.md repeats them.
    """

    #: This master's node id. Default: the master's ``id``.
    node_id: str = ""
    #: The Raft cluster's id; every master of the cluster must use the same one.
    #: Default: Salt's ``cluster_id`` if set, else "saltext-raft".
    cluster_id: str = ""
    #: The founding voter set, node id -> "host:port" (a list of "host" or "host:port" is also
    #: accepted: the node id is then the host, as Salt's own clustering requires). Read only on
    #: a node's first start: afterwards membership comes from the Raft log.
    #: Default: this master plus Salt's ``cluster_peers``, each at ``port``.
    peers: dict = field(default_factory=dict)
    #: Address to bind the Raft port to. Default: Salt's ``interface``.
    bind: str = ""
    #: The Raft port (TCP), used for the bind and for peers listed without a port.
    port: int = DEFAULT_PORT
    #: "host:port" the other masters use to reach this one. Default: this node's entry in
    #: ``peers``, else ``bind:port``. Required when ``bind`` is a wildcard and this node is not
    #: in ``peers``.
    advertise: str = ""
    #: File holding the shared cluster secret: at least 32 random bytes (hex, base64 or raw),
    #: owned by the master's user, mode 0600 (``python -m saltext_raft secret
    #: generate PATH`` writes one).
    #: Default: derived from ``cluster_pki_dir``/cluster.pem when Salt clustering is configured.
    secret_file: str = ""
    #: Files holding further secrets that frames from other masters may be sealed with (never
    #: used to send): a secret rotation without downtime (docs/operations.md). A listed file
    #: that does not exist is skipped, so the list can name a file created only for a
    #: rotation; ``salt-run raft.reload_secrets`` re-reads these files and ``secret_file``.
    accept_secret_files: list = field(default_factory=list)
    #: Join an existing cluster instead of founding one, even if this master is listed in
    #: ``peers`` (a master added later is normally simply left out of ``peers``). Ignored after
    #: the first start.
    join: bool = False
    #: Hold minion requests until this master is a committed voter with a live leader.
    gate: bool = True
    #: Learners count as ready for the gate (normally only voters do).
    gate_learners: bool = False
    #: Seconds a request is held while the gate is closed before it is refused with an error
    #: (the minion retries). At most 3: a held request ties up a request worker, and minions
    #: authenticate through the same workers with a 5 s timeout.
    gate_hold: float = DEFAULT_GATE_HOLD
    #: Seconds without a known leader before an open gate closes again.
    gate_grace: float = 5.0
    #: Salt 3008 with ``cluster_id``: once our gate opens, open Salt's own core request gate
    #: too if its consensus has not (it never does after a restart of every master:
    #: ``master/coregate.py``). Our gate keeps applying. Ignored with ``gate: false``.
    core_gate: bool = True
    #: Seconds per Raft tick (the runtime's default; see docs/architecture.md).
    tick: float = DEFAULT_TICK_SECONDS
    #: Election timeout in ticks (randomized in [election_ticks, 2 * election_ticks)):
    #: 300-575 ms with the default tick.
    election_ticks: int = DEFAULT_ELECTION_TICKS
    #: Leader heartbeat interval in ticks (50 ms with the default tick).
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    #: Take a snapshot after this many applied entries since the last one.
    snapshot_entries: int = RuntimeConfig.snapshot_interval
    #: This master's proposals (cache writes, batched) waiting for their answer beyond which a
    #: new one is refused at once as ``overloaded`` (the runtime's ``max_pending_proposals``).
    max_pending_proposals: int = RuntimeConfig.max_pending_proposals
    #: A follower saves small batches of log entries on its event loop instead of handing them
    #: to the storage thread (the runtime's ``follower_inline_saves``; docs/architecture.md,
    #: "The loop"): lower commit latency; false keeps every fsync off the loop.
    follower_inline_saves: bool = RuntimeConfig.follower_inline_saves
    #: Seconds between refreshes of the readiness file (workers treat a file older than three
    #: intervals plus one second as "not ready": a dead engine fails closed).
    readiness_interval: float = DEFAULT_READINESS_INTERVAL
    #: Fire events under ``saltext/raft/`` on the master event bus.
    events: bool = True
    #: Frame cipher between masters: "chacha20poly1305" or "aesgcm".
    aead: str = "chacha20poly1305"
    #: Host the replicated Salt cache (the ``raft`` cache driver; docs/cache.md). Default
    #: (unset): on when the master's ``cache`` (or 3008's ``keys.cache_driver``) is ``raft``.
    cache: bool | None = None
    #: Salt 3007 only: ``replicate`` keeps the minion key directories of every master in step
    #: through the log (docs/keys.md); unset: off. On 3008 use ``keys.cache_driver: raft``.
    keys: str = ""
    #: The only directory ``salt-run raft.backup`` writes to (created 0700, owned by the
    #: master's user). Default: ``<cachedir>/saltext_raft_backups``.
    backup_dir: str = ""
    #: Keep Salt's cluster secrets the same in every master's own ``cluster_pki_dir`` through
    #: the replicated cache: the committed ``cluster.pub`` fingerprint (a master with another
    #: cluster key keeps its gate closed), the cluster session key ``.aes`` and each member's
    #: ``peers/<id>.pub`` (docs/nothing-shared.md). Needs Salt's cluster mode (``cluster_id``,
    #: ``cluster_pki_dir``) and the replicated cache.
    cluster_secrets: bool = False
    #: Resolved ``cache`` (from_opts fills it in).
    cache_enabled: bool = False

    #: Loaded secret bytes (never logged, never in repr).
    secret: bytes = field(default=b"", repr=False, compare=False)
    #: Loaded contents of the existing ``accept_secret_files`` (never logged, never in repr).
    accept_secrets: tuple = field(default=(), repr=False, compare=False)
    #: Where the secret came from (a path; for messages).
    secret_source: str = ""
    #: The master's cachedir (for the readiness file); from opts.
    cachedir: str = ""

    # ------------------------------------------------------------------------------------------
    @property
    def founding(self) -> bool:
        """This node is in the founding voter set (bootstraps instead of joining)."""
        return self.node_id in self.peers and not self.join

    @property
    def founders(self) -> dict:
        """The founding voter set: ``peers``, unless this node joins (then it founds nothing)."""
        return dict(self.peers) if self.founding else {}

    @property
    def listen(self) -> str:
        return join_host_port(self.bind, self.port)

    @property
    def state_dir(self) -> str:
        return state_dir(self.cachedir)

    @property
    def lock_path(self) -> str:
        """Held (``flock``) by the running engine and by the offline recovery command."""
        return os.path.join(self.state_dir, "engine.lock")

    @property
    def backups(self) -> str:
        """Where backups are written (``backup_dir``, or its default under ``cachedir``)."""
        return self.backup_dir or os.path.join(self.cachedir, BACKUP_DIRNAME)

    @property
    def readiness_path(self) -> str:
        return readiness_path(self.cachedir)

    @property
    def readiness_stale_after(self) -> float:
        return stale_after(self.readiness_interval)

    def public_dict(self) -> dict:
        """The options as configured, without the secret (for logs and status)."""
        out = {}
        for f in fields(self):
            if f.name in ("secret", "accept_secrets"):
                continue
            out[f.name] = getattr(self, f.name)
        return out

    # ------------------------------------------------------------------------------------------
    def validate(self) -> EngineConfig:
        problem = node_id_problem(self.node_id)
        if problem:
            raise EngineConfigError("node_id", f"{problem} (set node_id, or the master's id)")
        value = self.cluster_id
        if not isinstance(value, str) or not value or len(value.encode()) > 255:
            raise EngineConfigError(
                "cluster_id", f"must be a non-empty string of at most 255 bytes (got {value!r})"
            )
        check_port("port", self.port)
        if not isinstance(self.bind, str) or not self.bind:
            raise EngineConfigError("bind", "must be an address to bind to")
        if not self.advertise and _is_wildcard(self.bind):
            raise EngineConfigError(
                "advertise",
                f"bind is the wildcard address {self.bind!r} and this master ({self.node_id}) "
                "is not listed in peers: set advertise to the host:port other masters should use",
            )
        if not isinstance(self.peers, dict) or not self.peers:
            raise EngineConfigError(
                "peers",
                "no founding voters: list the masters (id: host:port) or set Salt's cluster_peers",
            )
        for nid, addr in self.peers.items():
            problem = node_id_problem(nid)
            if problem:
                raise EngineConfigError("peers", problem)
            _check_host_port(f"peers[{nid}]", addr, wildcard_ok=False)
        if self.advertise:
            _check_host_port("advertise", self.advertise, wildcard_ok=False)
        for name in (
            "gate",
            "gate_learners",
            "core_gate",
            "events",
            "join",
            "cluster_secrets",
            "follower_inline_saves",
        ):
            if not isinstance(getattr(self, name), bool):
                raise EngineConfigError(
                    name, f"must be true or false (got {getattr(self, name)!r})"
                )
        for name, low in (
            ("gate_hold", 0.0),
            ("gate_grace", 0.0),
            ("tick", 0.001),
            ("readiness_interval", 0.05),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise EngineConfigError(name, f"must be a number >= {low} (got {value!r})")
        if self.gate_hold > MAX_GATE_HOLD:
            raise EngineConfigError(
                "gate_hold",
                f"must be at most {MAX_GATE_HOLD:g} seconds (got {self.gate_hold!r}): a held "
                "request ties up a request worker, and minions authenticate through the same "
                "workers with a 5 s timeout",
            )
        if self.tick > 10:
            raise EngineConfigError("tick", f"must be at most 10 seconds (got {self.tick!r})")
        for name in (
            "election_ticks",
            "heartbeat_ticks",
            "snapshot_entries",
            "max_pending_proposals",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise EngineConfigError(name, f"must be a positive integer (got {value!r})")
        if self.election_ticks <= self.heartbeat_ticks:
            raise EngineConfigError(
                "election_ticks",
                f"must be greater than heartbeat_ticks ({self.election_ticks} <= "
                f"{self.heartbeat_ticks})",
            )
        if not isinstance(self.backup_dir, str) or (
            self.backup_dir and not os.path.isabs(self.backup_dir)
        ):
            raise EngineConfigError(
                "backup_dir", f"must be an absolute directory path (got {self.backup_dir!r})"
            )
        if self.aead not in ("chacha20poly1305", "aesgcm"):
            raise EngineConfigError("aead", "must be 'chacha20poly1305' or 'aesgcm'")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise EngineConfigError(
                "secret_file",
                f"the secret from {self.secret_source or 'nowhere'} is shorter "
                f"than {MIN_SECRET_BYTES} bytes",
            )
        return self


# ----------------------------------------------------------------------------------------------
# building a config from Salt opts
# ----------------------------------------------------------------------------------------------
_OPTION_NAMES = {
    f.name
    for f in fields(EngineConfig)
    if f.name not in ("secret", "accept_secrets", "secret_source", "cachedir", "cache_enabled")
}


def _check_roots(opts: dict, cache_on: bool) -> None:
    """The ``raft_roots*`` options (``saltext_raft.roots.config``), so that a bad one stops the
    engine with its reason; the roots live in the replicated cache, which must be on."""
    try:
        settings = roots_settings(opts)
    except RootsConfigError as exc:
        raise EngineConfigError(exc.option, exc.why) from None
    if settings.enabled and not cache_on:
        raise EngineConfigError(
            "cache", "is false, but raft_roots needs the replicated cache: remove cache: false"
        )


def from_opts(opts: dict, options: dict | None = None, *, load_secret: bool = True) -> EngineConfig:
    """Build and validate the engine config from its options and the master's opts.

    Raises :class:`EngineConfigError` naming the offending option.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise EngineConfigError(
            unknown[0],
            f"unknown option (unknown: {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(_OPTION_NAMES))})",
        )
    cfg = EngineConfig(**options)
    cfg.cachedir = opts.get("cachedir") or ""
    if cfg.cache is not None and not isinstance(cfg.cache, bool):
        raise EngineConfigError("cache", f"must be true or false (got {cfg.cache!r})")
    try:
        cfg.keys = check_keys_option(cfg.keys, cache=cfg.cache)
    except ValueError as exc:
        raise EngineConfigError("keys", str(exc)) from None
    # The replicated key state lives in the cache: the option turns it on unless set.
    cfg.cache_enabled = cache_enabled(opts, cfg.cache) or bool(cfg.keys)
    _check_roots(opts, cfg.cache_enabled)
    if cfg.cache_enabled:
        try:  # the cache options too, so that a bad one stops the engine with its reason
            cache_settings(opts)
        except CacheConfigError as exc:
            raise EngineConfigError(exc.option, exc.why) from None
    check_cluster_secrets(opts, cfg)
    if cfg.advertise:
        _check_host_port("advertise", cfg.advertise, wildcard_ok=False)
    if not cfg.node_id:
        cfg.node_id = str(opts.get("id") or "")
    if not cfg.cluster_id:
        cfg.cluster_id = str(opts.get("cluster_id") or DEFAULT_CLUSTER_ID)
    if not cfg.bind:
        cfg.bind = str(opts.get("interface") or "0.0.0.0")
    check_port("port", cfg.port)
    if not options.get("peers"):
        # Founding voters from Salt's clustering: this master plus cluster_peers. Salt requires
        # each clustered master's id to be its address, so a peer's id is its host.
        # With a wildcard bind and no advertise there is no address for this master: validate()
        # says so.
        own = cfg.advertise or (cfg.listen if not _is_wildcard(cfg.bind) else "")
        salt_peers = [p for p in (opts.get("cluster_peers") or []) if p != cfg.node_id]
        cfg.peers = {cfg.node_id: own} if own else {}
        for nid, addr in parse_peers(list(salt_peers), cfg.port).items():
            cfg.peers.setdefault(nid, addr)
    else:
        cfg.peers = parse_peers(cfg.peers, cfg.port)
    if not cfg.advertise and cfg.node_id in cfg.peers:
        cfg.advertise = cfg.peers[cfg.node_id]
    if not cfg.advertise and not _is_wildcard(cfg.bind):
        cfg.advertise = cfg.listen
    if not isinstance(cfg.accept_secret_files, (list, tuple)) or not all(
        isinstance(p, str) and p for p in cfg.accept_secret_files
    ):
        raise EngineConfigError("accept_secret_files", "must be a list of file paths")
    if load_secret:
        cfg.secret, cfg.secret_source = read_secret(cfg.secret_file, opts)
        cfg.accept_secrets = read_accept_secrets(cfg.accept_secret_files, opts)
    else:
        cfg.secret, cfg.secret_source = b"\0" * MIN_SECRET_BYTES, "(not loaded)"
    return cfg.validate()


def check_cluster_secrets(opts: dict, cfg: EngineConfig) -> None:
    """``cluster_secrets`` needs Salt's cluster mode, a ``cluster_pki_dir`` and the replicated
    cache, and does not mix with Salt 3008's ``cluster_isolated_filesystem`` (which copies keys
    once at a master's first start and would fight the replicated values)."""
    if cfg.cluster_secrets is False:
        return
    if not isinstance(cfg.cluster_secrets, bool):
        raise EngineConfigError(
            "cluster_secrets", f"must be true or false (got {cfg.cluster_secrets!r})"
        )
    if not opts.get("cluster_id"):
        raise EngineConfigError(
            "cluster_secrets",
            "Salt's master cluster mode is off (cluster_id is not set): there are no cluster "
            "secrets to keep; set cluster_id, cluster_peers and cluster_pki_dir, or turn "
            "cluster_secrets off",
        )
    if not opts.get("cluster_pki_dir"):
        raise EngineConfigError(
            "cluster_secrets", "Salt's cluster_pki_dir is not set: set it to a local directory"
        )
    if opts.get("cluster_isolated_filesystem"):
        raise EngineConfigError(
            "cluster_secrets",
            "Salt's cluster_isolated_filesystem is also on: it copies keys once at a master's "
            "first start and would overwrite what is replicated; turn it off "
            "(docs/nothing-shared.md, migration)",
        )
    if not cfg.cache_enabled:
        raise EngineConfigError(
            "cluster_secrets",
            "needs the replicated cache (cache: raft, master_job_cache: raft, Salt 3008's "
            "keys.cache_driver: raft, or the engine option cache: true)",
        )


def parse_peers(peers, default_port: int) -> dict[str, str]:
    """``{id: "host[:port]"}`` or ``["host[:port]", ...]`` -> ``{id: "host:port"}``."""
    out: dict[str, str] = {}
    if isinstance(peers, dict):
        items = [(str(k), v) for k, v in peers.items()]
    elif isinstance(peers, (list, tuple)):
        items = []
        for p in peers:
            if not isinstance(p, str) or not p:
                raise EngineConfigError("peers", f"entry {p!r} is not 'host' or 'host:port'")
            items.append((split_host_port(p, default_port, "peers")[0], p))
    else:
        raise EngineConfigError(
            "peers", f"must be a mapping id: host:port or a list (got {peers!r})"
        )
    for nid, addr in items:
        if addr is None or addr == "":
            addr = nid
        if not isinstance(addr, str):
            raise EngineConfigError(f"peers[{nid}]", f"address {addr!r} is not 'host:port'")
        host, port = split_host_port(addr, default_port, f"peers[{nid}]")
        out[nid] = join_host_port(host, port)
    return out


def split_host_port(addr: str, default_port: int | None, option: str) -> tuple[str, int]:
    addr = addr.strip()
    if "://" in addr:
        raise EngineConfigError(option, f"{addr!r}: give host:port, not a URL")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise EngineConfigError(option, f"{addr!r} is not 'host:port'")
    elif addr.count(":") > 1:  # bare IPv6 without brackets and without port
        host, port_s = addr, ""
    else:
        host, _, port_s = addr.partition(":")
    if not host:
        raise EngineConfigError(option, f"{addr!r} has no host")
    if port_s:
        if not port_s.isdigit():
            raise EngineConfigError(option, f"{addr!r}: port {port_s!r} is not a number")
        port = int(port_s)
    elif default_port is None:
        raise EngineConfigError(option, f"{addr!r} has no port")
    else:
        port = default_port
    check_port(option, port)
    if any(c.isspace() for c in host) or "/" in host:
        raise EngineConfigError(option, f"{addr!r}: {host!r} is not a host name or address")
    return host, port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(option: str, port) -> None:
    if type(port) is not int or not 0 < port < 65536:
        raise EngineConfigError(option, f"port must be an integer in 1..65535 (got {port!r})")
    if port in RESERVED_PORTS:
        raise EngineConfigError(
            option,
            f"port {port} is used by {RESERVED_PORTS[port]}; pick another (default {DEFAULT_PORT})",
        )


def _is_wildcard(host: str) -> bool:
    host = host.strip("[]")
    if host in _WILDCARDS:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_host_port(option: str, addr, *, wildcard_ok: bool) -> None:
    if not isinstance(addr, str):
        raise EngineConfigError(option, f"{addr!r} is not 'host:port'")
    host, _ = split_host_port(addr, None, option)
    if not wildcard_ok and _is_wildcard(host):
        raise EngineConfigError(
            option, f"{addr!r} is a wildcard address: other masters cannot connect to it"
        )


# ----------------------------------------------------------------------------------------------
# the secret
# ----------------------------------------------------------------------------------------------
def read_secret(secret_file: str, opts: dict) -> tuple[bytes, str]:
    """The cluster secret and where it came from. Never logs the secret.

    ``secret_file`` set: its contents, surrounding whitespace stripped, once
    :func:`~saltext_raft.master.secret.read_secret_file` has checked its owner, mode and
    strength. Otherwise, when Salt's ``cluster_pki_dir`` holds ``cluster.pem`` (the
    private key every master of a Salt cluster shares): HKDF-SHA256 of that key, so the Raft
    secret changes when the cluster key does and is never the key itself.
    """
    if secret_file:
        try:
            return read_secret_file(secret_file), secret_file
        except SecretError as exc:
            raise EngineConfigError("secret_file", str(exc)) from None
    pki_dir = opts.get("cluster_pki_dir")
    if not pki_dir:
        raise EngineConfigError(
            "secret_file",
            "not set, and Salt's cluster_pki_dir is not set either, so there is "
            "no cluster key to derive a secret from: create a secret file ("
            + HOW_TO_GENERATE.format(path="/etc/salt/raft.secret")
            + "), copy it to every master and set secret_file to its path",
        )
    path = os.path.join(pki_dir, CLUSTER_PEM_FILE)
    try:
        with open(path, "rb") as fh:
            material = fh.read()
    except OSError as exc:
        raise EngineConfigError(
            "secret_file",
            f"not set, and the cluster key {path} to derive it from cannot be "
            f"read: {exc.strerror or exc}",
        ) from None
    if not material.strip():
        raise EngineConfigError("secret_file", f"not set, and the cluster key {path} is empty")
    return derive_secret_from_cluster_key(material), f"derived from {path}"


def read_accept_secrets(paths, opts: dict) -> tuple[bytes, ...]:
    """The contents of those of ``paths`` that exist, each read and checked as ``secret_file``
    is (a file that exists but is unusable is an error, naming it)."""
    out = []
    for path in paths:
        if not os.path.lexists(path):
            continue
        try:
            secret, _ = read_secret(path, opts)
        except EngineConfigError as exc:
            raise EngineConfigError("accept_secret_files", exc.why) from None
        out.append(secret)
    return tuple(out)
