"""The node id rule (L9 of issue 18) and each edge that applies it: engine config, transport
config, the standalone node's arguments and the runners. The runtime's edges (admin, JOIN) and
the core's refusal to commit one are in tests/unit/runtime/test_replay.py."""

from __future__ import annotations

import pytest

from saltext_raft.core import Config
from saltext_raft.core.nodeid import MAX_NODE_ID_LEN
from saltext_raft.core.nodeid import InvalidNodeId
from saltext_raft.core.nodeid import check_node_id
from saltext_raft.core.types import ConfigError

GOOD = ["m1", "salt-master-01.example.com_master", "10.0.0.4", "fe80::1", "a" * 128, "ops@m1"]
BAD = ["", "n" * 300, "a" * (MAX_NODE_ID_LEN + 1), "a/b", "a\\b", "evil\nid", "x\x00y",
       "tab\tid", "sp ace", "..", "-", "ünï", 42, None]  # fmt: skip


@pytest.mark.parametrize("value", GOOD)
def test_salt_master_ids_and_addresses_are_valid(value):
    assert check_node_id(value) == value


@pytest.mark.parametrize("value", BAD)
def test_invalid_ids_are_refused_with_a_reason(value):
    with pytest.raises(InvalidNodeId, match="node id"):
        check_node_id(value)


def test_the_core_config_refuses_an_invalid_id():
    with pytest.raises(ConfigError, match="id: a node id must be at most 128"):
        Config("n" * 300).validate()


def test_the_engine_config_refuses_invalid_ids_in_node_id_and_peers(tmp_path):
    from saltext_raft.master.config import EngineConfigError  # pylint: disable=import-outside-toplevel
    from saltext_raft.master.config import from_opts  # pylint: disable=import-outside-toplevel

    opts = {"id": "m1", "interface": "127.0.0.1", "cachedir": str(tmp_path)}
    with pytest.raises(EngineConfigError, match="node_id.*at most 128"):
        from_opts(dict(opts, id="m" * 300), {}, load_secret=False)
    with pytest.raises(EngineConfigError, match="node_id.*characters outside"):
        from_opts(opts, {"node_id": "m1/../x"}, load_secret=False)
    with pytest.raises(EngineConfigError, match="peers.*characters outside"):
        from_opts(
            opts, {"peers": {"m1": "127.0.0.1:4606", "bad\tid": "10.0.0.2"}}, load_secret=False
        )


def test_the_transport_config_refuses_an_invalid_node_id():
    from saltext_raft.transport import TransportConfig  # pylint: disable=import-outside-toplevel
    from saltext_raft.transport import TransportConfigError  # pylint: disable=import-outside-toplevel

    with pytest.raises(TransportConfigError, match="node_id"):
        TransportConfig("c", "n" * 200, b"s" * 32).validate()


def test_the_standalone_node_refuses_invalid_ids_in_its_arguments(capsys):
    from saltext_raft.standalone import build_parser  # pylint: disable=import-outside-toplevel

    base = ["--listen", "127.0.0.1:1", "--data-dir", "/nonexistent", "--secret-file", "/x"]
    for argv in (["--id", "a/b", *base], ["--id", "n1", "--peers", "n" * 300 + "=h:1", *base]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert "node id" in capsys.readouterr().err


@pytest.mark.parametrize("fn", ["add", "promote", "demote", "transfer_leader"])
def test_the_runners_refuse_an_invalid_id_before_asking_the_engine(fn, monkeypatch):
    from saltext_raft.runners import raft as runner  # pylint: disable=import-outside-toplevel

    asked = []
    monkeypatch.setattr(runner, "_call", lambda *a, **kw: asked.append(a) or {"result": True})
    args = {"node": "n" * 300}
    if fn == "add":
        args["address"] = "10.0.0.9:4606"
    out = getattr(runner, fn)(**args)
    assert out["result"] is False and out["retcode"] == 1 and "node id" in out["error"]
    assert asked == []
    args["node"] = "m4"
    assert getattr(runner, fn)(**args) == {"result": True}
