"""The engine configuration: defaults from Salt's options, and errors that name the option."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from saltext_raft.master import config as cfgmod
from saltext_raft.master.config import DEFAULT_PORT
from saltext_raft.master.config import EngineConfigError
from saltext_raft.master.config import from_opts
from saltext_raft.master.settings import engine_options
from saltext_raft.transport.crypto import derive_secret_from_cluster_key

SECRET = b"0123456789abcdef" * 4  # 64 hex digits: 32 bytes of key material


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "raft.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return str(path)


def opts(tmp_path, **extra):
    base = {"id": "m1", "interface": "127.0.0.1", "cachedir": str(tmp_path / "cache")}
    base.update(extra)
    return base


def test_single_master_defaults(tmp_path, secret_file):
    cfg = from_opts(opts(tmp_path), {"secret_file": secret_file})
    assert cfg.node_id == "m1"
    assert cfg.cluster_id == cfgmod.DEFAULT_CLUSTER_ID
    assert cfg.port == DEFAULT_PORT
    assert cfg.peers == {"m1": f"127.0.0.1:{DEFAULT_PORT}"}
    assert cfg.advertise == f"127.0.0.1:{DEFAULT_PORT}"
    assert cfg.secret == SECRET  # surrounding whitespace stripped
    assert cfg.gate is True and cfg.gate_learners is False
    assert cfg.readiness_path.endswith("saltext_raft/ready")


def test_default_port_is_clear_of_salt_ports():
    assert DEFAULT_PORT not in (4505, 4506, 4520, 55596)


def test_defaults_come_from_salt_clustering_options(tmp_path):
    pki = tmp_path / "cpki"
    pki.mkdir()
    (pki / "cluster.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nabc\n")
    o = opts(
        tmp_path,
        id="127.0.0.1",
        cluster_id="clu",
        cluster_peers=["127.0.0.2", "127.0.0.3"],
        cluster_pki_dir=str(pki),
    )
    cfg = from_opts(o, {"port": 4700})
    assert cfg.cluster_id == "clu"
    assert cfg.peers == {
        "127.0.0.1": "127.0.0.1:4700",
        "127.0.0.2": "127.0.0.2:4700",
        "127.0.0.3": "127.0.0.3:4700",
    }
    assert len(cfg.secret) == 32
    assert cfg.secret_source.startswith("derived from")
    # Same key material -> same secret on every master; different material -> different secret.
    assert cfg.secret == derive_secret_from_cluster_key(b"-----BEGIN PRIVATE KEY-----\nabc\n")
    assert cfg.secret != derive_secret_from_cluster_key(b"other")
    # The derivation itself is pinned: a changed label would split a cluster on upgrade.
    assert cfg.secret.hex() == ("8b756b40c9cf9ed3767b220af3cb1b74a11f3114712d90ab780d80547a97421d")
    assert b"abc" not in cfg.secret


def test_explicit_peers_as_mapping_and_list(tmp_path, secret_file):
    cfg = from_opts(
        opts(tmp_path),
        {"secret_file": secret_file, "peers": {"m1": "127.0.0.1", "m2": "10.0.0.2:4700"}},
    )
    assert cfg.peers == {"m1": f"127.0.0.1:{DEFAULT_PORT}", "m2": "10.0.0.2:4700"}
    cfg = from_opts(
        opts(tmp_path, id="127.0.0.1"),
        {"secret_file": secret_file, "peers": ["127.0.0.1:4701", "[::1]:4702"]},
    )
    assert cfg.peers == {"127.0.0.1": "127.0.0.1:4701", "::1": "[::1]:4702"}
    assert cfg.advertise == "127.0.0.1:4701"


@pytest.mark.parametrize(
    "options,option,fragment",
    [
        ({"bogus": 1}, "bogus", "unknown option"),
        ({"port": 4506}, "port", "ret_port"),
        ({"port": 4520}, "port", "core consensus"),
        ({"port": 55596}, "port", "core consensus"),
        ({"port": 70000}, "port", "1..65535"),
        ({"peers": {"m1": "127.0.0.1:x"}}, "peers[m1]", "not a number"),
        ({"peers": {"m1": "tcp://1.2.3.4:5"}}, "peers[m1]", "not a URL"),
        ({"peers": {"m1": "0.0.0.0:4700"}}, "peers[m1]", "wildcard"),
        ({"advertise": "0.0.0.0:4700"}, "advertise", "wildcard"),
        ({"gate_hold": -1}, "gate_hold", ">= 0"),
        ({"gate_hold": 5}, "gate_hold", "at most 3"),
        ({"gate": "yes"}, "gate", "true or false"),
        ({"election_ticks": 1, "heartbeat_ticks": 1}, "election_ticks", "greater than"),
        ({"aead": "rot13"}, "aead", "chacha20poly1305"),
        # every other branch of validate() and of the address parsers
        ({"node_id": 5}, "node_id", "non-empty string"),
        ({"cluster_id": "c" * 256}, "cluster_id", "non-empty string"),
        ({"port": "4606"}, "port", "1..65535"),
        ({"port": True}, "port", "1..65535"),
        ({"gate_learners": 1}, "gate_learners", "true or false"),
        ({"events": "no"}, "events", "true or false"),
        ({"follower_inline_saves": "off"}, "follower_inline_saves", "true or false"),
        ({"join": None}, "join", "true or false"),
        ({"cache": "yes"}, "cache", "true or false"),
        ({"gate_hold": True}, "gate_hold", ">= 0"),
        ({"gate_grace": -0.5}, "gate_grace", ">= 0"),
        ({"gate_grace": "5"}, "gate_grace", ">= 0"),
        ({"tick": 0}, "tick", ">= 0.001"),
        ({"tick": 11}, "tick", "at most 10 seconds"),
        ({"readiness_interval": 0.01}, "readiness_interval", ">= 0.05"),
        ({"election_ticks": 0}, "election_ticks", "positive integer"),
        ({"heartbeat_ticks": 1.5}, "heartbeat_ticks", "positive integer"),
        ({"snapshot_entries": "10000"}, "snapshot_entries", "positive integer"),
        ({"election_ticks": 2, "heartbeat_ticks": 3}, "election_ticks", "greater than"),
        ({"peers": "m1,m2"}, "peers", "mapping id: host:port or a list"),
        ({"peers": ["127.0.0.1", 5]}, "peers", "is not 'host' or 'host:port'"),
        ({"peers": ["127.0.0.1", ""]}, "peers", "is not 'host' or 'host:port'"),
        ({"peers": {"m1": 4700}}, "peers[m1]", "is not 'host:port'"),
        ({"peers": {"m1": ":4700"}}, "peers[m1]", "has no host"),
        ({"peers": {"m1": "[::1]x"}}, "peers[m1]", "is not 'host:port'"),
        ({"peers": {"m1": "my host:4700"}}, "peers[m1]", "not a host name or address"),
        ({"peers": {"m1": "a/b:4700"}}, "peers[m1]", "not a host name or address"),
        ({"peers": {"m1": "127.0.0.1:4505"}}, "peers[m1]", "publish_port"),
        ({"advertise": "127.0.0.1"}, "advertise", "has no port"),
        ({"advertise": "[::]:4700"}, "advertise", "wildcard"),
    ],
)
def test_bad_options_are_named(tmp_path, secret_file, options, option, fragment):
    with pytest.raises(EngineConfigError) as excinfo:
        from_opts(opts(tmp_path), {"secret_file": secret_file, **options})
    assert excinfo.value.option == option
    assert fragment in str(excinfo.value)
    assert option in str(excinfo.value)


def test_wildcard_bind_needs_an_advertised_address(tmp_path, secret_file):
    with pytest.raises(EngineConfigError) as excinfo:
        from_opts(opts(tmp_path, interface="0.0.0.0"), {"secret_file": secret_file})
    assert excinfo.value.option == "advertise"
    assert "wildcard" in str(excinfo.value)
    with pytest.raises(EngineConfigError, match="advertise"):
        from_opts(opts(tmp_path), {"secret_file": secret_file, "bind": "::"})
    cfg = from_opts(
        opts(tmp_path, interface="0.0.0.0"),
        {"secret_file": secret_file, "advertise": "10.1.1.1:4700"},
    )
    assert cfg.listen == f"0.0.0.0:{DEFAULT_PORT}"
    assert cfg.peers == {"m1": "10.1.1.1:4700"}
    # Listed in peers: that entry is the advertised address.
    cfg = from_opts(
        opts(tmp_path, interface="0.0.0.0"),
        {"secret_file": secret_file, "peers": {"m1": "10.1.1.1", "m2": "10.1.1.2"}},
    )
    assert cfg.advertise == f"10.1.1.1:{DEFAULT_PORT}"


def test_missing_secret_says_what_to_do(tmp_path):
    with pytest.raises(EngineConfigError) as excinfo:
        from_opts(opts(tmp_path), {})
    assert excinfo.value.option == "secret_file"
    assert "python -m saltext_raft secret generate" in str(excinfo.value)


def test_unreadable_or_short_secret(tmp_path):
    with pytest.raises(EngineConfigError, match="cannot read .*nope"):
        from_opts(opts(tmp_path), {"secret_file": str(tmp_path / "nope")})
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(EngineConfigError, match="at least 32"):
        from_opts(opts(tmp_path), {"secret_file": str(short)})
    with pytest.raises(EngineConfigError, match="cluster.pem"):
        from_opts(opts(tmp_path, cluster_pki_dir=str(tmp_path / "nopki")), {})


def test_secret_never_in_repr_or_public_dict(tmp_path, secret_file, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = from_opts(opts(tmp_path), {"secret_file": secret_file})
    assert SECRET.decode() not in repr(cfg)
    assert "secret" not in cfg.public_dict()
    assert SECRET.decode() not in str(cfg.public_dict())
    assert SECRET.decode() not in caplog.text


def test_engine_options_finds_the_raft_entry():
    assert engine_options({}) is None
    assert engine_options({"engines": [{"other": {}}]}) is None
    assert engine_options({"engines": ["raft"]}) == {}
    assert engine_options({"engines": [{"x": {}}, {"raft": {"port": 1}}]}) == {"port": 1}
    assert engine_options({"engines": {"raft": None}}) == {}
    assert engine_options({"engines": [{"r2": {"engine_module": "raft", "gate": False}}]}) == {
        "gate": False
    }


#: A second secret for the rotation tests (64 hex digits: 32 bytes of key material).
NEXT_SECRET = b"0f1e2d3c4b5a6978" * 4


def test_accept_secret_files_are_read_skipped_when_absent_and_checked(tmp_path, secret_file):
    """Secret rotation: further secrets accepted on frames (docs/operations.md)."""
    nxt = tmp_path / "raft.secret.next"
    base = {"secret_file": secret_file, "accept_secret_files": [str(nxt)]}
    cfg = from_opts(opts(tmp_path), base)
    assert cfg.accept_secrets == ()  # absent: nothing more accepted yet
    nxt.write_bytes(NEXT_SECRET + b"\n")
    nxt.chmod(0o600)  # checked like secret_file
    cfg = from_opts(opts(tmp_path), base)
    assert cfg.accept_secrets == (NEXT_SECRET,)
    assert NEXT_SECRET not in repr(cfg).encode() and "accept_secrets" not in cfg.public_dict()
    nxt.write_bytes(b"short")
    with pytest.raises(EngineConfigError, match="accept_secret_files"):
        from_opts(opts(tmp_path), base)
    with pytest.raises(EngineConfigError, match="accept_secret_files"):
        from_opts(opts(tmp_path), dict(base, accept_secret_files="/etc/one/path"))


def test_reload_secrets_switches_the_transport_to_the_files_contents(tmp_path, secret_file):
    from saltext_raft.master.operations import EngineOperations  # pylint: disable=import-outside-toplevel

    nxt = tmp_path / "raft.secret.next"
    cfg = from_opts(opts(tmp_path), {"secret_file": secret_file, "accept_secret_files": [str(nxt)]})

    class Transport:
        calls = []

        def set_secrets(self, secret, accept):
            self.calls.append((secret, accept))

    class Runtime:
        transport = Transport()

    # the operations' port: the service's cfg, opts and runtime
    operations = EngineOperations(SimpleNamespace(cfg=cfg, opts=opts(tmp_path), runtime=Runtime()))

    def reload_secrets():
        return asyncio.run(operations.run("reload_secrets", {}, 5))

    nxt.write_bytes(NEXT_SECRET)
    nxt.chmod(0o600)
    out = reload_secrets()
    assert out == {"secret_file": secret_file, "accepted_more": 1}
    assert Transport.calls == [(SECRET, (NEXT_SECRET,))]
    open(secret_file, "wb").write(NEXT_SECRET)  # step 2: send under the new one
    nxt.write_bytes(SECRET)
    reload_secrets()
    assert Transport.calls[-1] == (NEXT_SECRET, (SECRET,))
    nxt.unlink()  # step 3: the old one is dropped
    reload_secrets()
    assert Transport.calls[-1] == (NEXT_SECRET, ())


@pytest.mark.parametrize(
    "salt_opts, fragment",
    [
        ({"cache": "raft"}, "cluster mode is off (cluster_id is not set)"),
        ({"cache": "raft", "cluster_id": "c"}, "cluster_pki_dir is not set"),
        (
            {
                "cache": "raft",
                "cluster_id": "c",
                "cluster_pki_dir": "/p",
                "cluster_isolated_filesystem": True,
            },
            "cluster_isolated_filesystem is also on",
        ),
        ({"cluster_id": "c", "cluster_pki_dir": "/p"}, "needs the replicated cache"),
    ],
)
def test_cluster_secrets_refused_without_what_it_needs(tmp_path, secret_file, salt_opts, fragment):
    with pytest.raises(EngineConfigError) as err:
        from_opts(
            opts(tmp_path, **salt_opts), {"secret_file": secret_file, "cluster_secrets": True}
        )
    assert err.value.option == "cluster_secrets" and fragment in str(err.value)


def test_cluster_secrets_accepted_with_cluster_mode_and_the_replicated_cache(tmp_path, secret_file):
    salt_opts = {"master_job_cache": "raft", "cluster_id": "c", "cluster_pki_dir": "/p"}
    cfg = from_opts(
        opts(tmp_path, **salt_opts), {"secret_file": secret_file, "cluster_secrets": True}
    )
    assert cfg.cluster_secrets is True and cfg.cache_enabled
    with pytest.raises(EngineConfigError, match="must be true or false"):
        from_opts(
            opts(tmp_path, **salt_opts), {"secret_file": secret_file, "cluster_secrets": "yes"}
        )
