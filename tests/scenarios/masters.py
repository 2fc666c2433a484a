"""Three real masters on 127.0.0.1-3 with the raft engine and ``cache: raft``, for the scenario
modules: one builder, so each module states only what its own masters need differently."""

from __future__ import annotations

import secrets

from pytestshellutils.utils import ports

IDS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def start_masters(
    salt_factories, tmp_path_factory, stack, prefix: str, config, **factory_kwargs
) -> dict:
    """Create and start the three masters (each with its own address and the same secret and
    raft port), entering each daemon into ``stack``. ``config`` (a dict, or a function of the
    master id returning one) is merged over the shared settings; ``factory_kwargs`` go to
    ``salt_master_daemon``. Returns ``{id: factory}``."""
    secret_file = tmp_path_factory.mktemp(f"{prefix}-secret") / "raft.secret"
    secret_file.write_text(secrets.token_hex(32))
    raft_port = ports.get_unused_localhost_port()
    masters = {}
    for mid in IDS:
        defaults = {
            "id": mid,
            "interface": mid,
            "cache": "raft",
            "log_level_logfile": "info",
            "engines": [
                {
                    "raft": {
                        "peers": {m: f"{m}:{raft_port}" for m in IDS},
                        "port": raft_port,
                        "secret_file": str(secret_file),
                        "readiness_interval": 0.5,
                    }
                }
            ],
        }
        defaults.update(config(mid) if callable(config) else config)
        masters[mid] = salt_factories.salt_master_daemon(
            f"{prefix}-{mid}",
            defaults=defaults,
            overrides={"interface": mid, "id": mid},
            **factory_kwargs,
        )
    for mid in IDS:  # start them all before waiting: a master alone has no quorum
        stack.enter_context(masters[mid].started(start_timeout=120))
    return masters
