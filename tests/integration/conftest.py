"""Real Salt masters with the raft engine, at 127.0.0.1, .2, .3 (and .4), via pytest-salt-factories.

Helpers, not fixtures with hidden state: each test starts what it needs and every daemon is
stopped by its factory (by PID) when the test ends.
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest
from pytestshellutils.utils import ports

pytest.importorskip("saltfactories")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # pylint: disable=broad-except
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def ready_state(master) -> dict:
    path = os.path.join(master.config["cachedir"], "saltext_raft", "ready")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def run_json(master, *args, timeout=60):
    """``salt-run --out json`` on ``master``; (returncode, parsed stdout or None)."""
    cli = master.salt_run_cli(timeout=timeout)
    ret = cli.run(*args, "--out", "json", _timeout=timeout)
    data = ret.data
    if data is None and ret.stdout:
        try:
            data = json.loads(ret.stdout)
        except ValueError:
            data = None
    return ret.returncode, data, ret


class Cluster:
    """Builds master configs for a saltext-raft cluster on loopback addresses."""

    def __init__(self, salt_factories, tmp_path, size=3, raft_port=None, **engine_extra):
        self.factories = salt_factories
        self.ids = [f"127.0.0.{i}" for i in range(1, size + 1)]
        self.raft_port = raft_port or ports.get_unused_localhost_port()
        self.secret_file = str(tmp_path / "raft.secret")
        with open(self.secret_file, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32))
        self.engine_extra = engine_extra
        self.ret_port = ports.get_unused_localhost_port()
        self.publish_port = ports.get_unused_localhost_port()
        self.masters = {}

    def engine(self, **extra):
        conf = {
            "peers": {mid: f"{mid}:{self.raft_port}" for mid in self.ids},
            "port": self.raft_port,
            "secret_file": self.secret_file,
            "readiness_interval": 0.5,
        }
        conf.update(self.engine_extra)
        conf.update(extra)
        return conf

    def master_factory(self, mid, engine=None, **overrides):
        config = {
            "id": mid,
            "interface": mid,
            "ret_port": self.ret_port,
            "publish_port": self.publish_port,
            "engines": [{"raft": engine if engine is not None else self.engine()}],
            "log_level_logfile": "info",
        }
        config.update(overrides)
        factory = self.factories.salt_master_daemon(
            f"{mid}", defaults=config, overrides={"interface": mid, "id": mid}
        )
        self.masters[mid] = factory
        return factory

    def ready(self, mid) -> bool:
        return bool(ready_state(self.masters[mid]).get("ready"))
