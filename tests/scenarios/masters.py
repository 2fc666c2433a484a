"""Three real masters on 127.0.0.1-3 with the raft engine and ``cache: raft``, for the scenario
modules: one builder, so each module states only what its own masters need differently."""

from __future__ import annotations

import json
import secrets

import pytest
from pytestshellutils.utils import ports

from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until

IDS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    try:
        return wait_until(predicate, timeout, what, interval)
    except WaitTimeout as exc:
        pytest.fail(str(exc))


def run(master, *args, timeout=60):
    """``salt-run --out json`` on ``master``: (returncode, data or None, raw result)."""
    ret = master.salt_run_cli(timeout=timeout).run(*args, "--out", "json", _timeout=timeout)
    data = ret.data
    if data is None and ret.stdout:
        try:
            data = json.loads(ret.stdout)
        except ValueError:
            data = ret.stdout.strip()  # a bare string is printed without JSON quotes
    return ret.returncode, data, ret


def start_masters(
    salt_factories, tmp_path_factory, stack, prefix: str, config, **factory_kwargs
) -> dict:
    """Create and start the three masters (each with its own address and the same secret and
    raft port), entering each daemon into ``stack``. ``config`` (a dict, or a function of the
    master id returning one) is merged over the shared settings; ``factory_kwargs`` go to
    ``salt_master_daemon``. Returns ``{id: factory}`` once a first cache write through master 1
    has committed."""
    secret_file = tmp_path_factory.mktemp(f"{prefix}-secret") / "raft.secret"
    secret_file.write_text(secrets.token_hex(32))
    secret_file.chmod(0o600)  # the engine refuses a secret others can read
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
    # The cluster is up once a write through the cache succeeds on master 1.
    wait_for(
        lambda: run(masters[IDS[0]], "cache.store", "scenario", "ready", "yes")[0] == 0,
        60,
        "a first cache write to commit",
        interval=0.5,
    )
    return masters
