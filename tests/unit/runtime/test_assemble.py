"""runtime.assemble: the one place a node's settings, transport and runtime are wired."""

from __future__ import annotations

import pytest

from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import RuntimeConfig
from saltext_raft.runtime import RuntimeConfigError
from saltext_raft.runtime.assemble import NodeSpec
from saltext_raft.runtime.assemble import assemble
from saltext_raft.runtime.config import DEFAULT_ELECTION_TICKS
from saltext_raft.runtime.config import DEFAULT_HEARTBEAT_TICKS
from saltext_raft.runtime.limits import max_frame_bytes
from saltext_raft.storage import MemoryStore

SECRET = b"k" * 32


class RecordingTransport:
    """Stands in for ZmqTransport: records the config it is built with, opens nothing."""

    built: list = []

    def __init__(self, config, *, epoch=None):
        self.config = config
        self.epoch = epoch
        RecordingTransport.built.append(config)


def spec(**kw) -> NodeSpec:
    base = {
        "node_id": "n1",
        "cluster_id": "c",
        "listen": "127.0.0.1:4701",
        "secret": SECRET,
        "peers": {"n1": "127.0.0.1:4701", "n2": "127.0.0.1:4702"},
        "founders": {"n1": "127.0.0.1:4701", "n2": "127.0.0.1:4702"},
    }
    base.update(kw)
    return NodeSpec(**base)


def build(s: NodeSpec, config: RuntimeConfig | None = None):
    store, sm = MemoryStore(), DictStateMachine()
    return assemble(s, store, sm, config, transport_class=RecordingTransport)


def test_transport_gets_the_spec_and_a_frame_cap_derived_from_both_configs():
    config = RuntimeConfig(max_entry_bytes=64 * 1024)
    rt = build(
        spec(accept_secrets=(b"o" * 32,), aead="aes256gcm", advertise="10.0.0.1:4701"), config
    )
    tc = rt.transport.config
    assert (tc.cluster_id, tc.node_id, tc.listen, tc.aead) == (
        "c",
        "n1",
        "127.0.0.1:4701",
        "aes256gcm",
    )
    assert tc.secret == SECRET and tc.accept_secrets == (b"o" * 32,)
    assert tc.max_frame_bytes == max_frame_bytes(rt.core_config, config)
    assert rt.config is config
    assert rt.address == "10.0.0.1:4701"
    assert rt.founders == {"n1": "127.0.0.1:4701", "n2": "127.0.0.1:4702"}


def test_the_claimed_boot_epoch_reaches_the_transport():
    rt = assemble(
        spec(), MemoryStore(), DictStateMachine(), transport_class=RecordingTransport, epoch=99
    )
    assert rt.transport.epoch == 99
    assert build(spec()).transport.epoch is None  # the transport picks one


def test_timing_defaults_unless_the_spec_overrides_them():
    rt = build(spec())
    assert (rt.core_config.election_ticks, rt.core_config.heartbeat_ticks) == (
        DEFAULT_ELECTION_TICKS,
        DEFAULT_HEARTBEAT_TICKS,
    )
    rt = build(spec(election_ticks=30, heartbeat_ticks=3))
    assert (rt.core_config.election_ticks, rt.core_config.heartbeat_ticks) == (30, 3)


def test_without_advertise_the_address_comes_from_peers_not_from_listen():
    rt = build(spec(listen="0.0.0.0:4701"))
    assert rt.address == "127.0.0.1:4701"


def test_a_bad_runtime_setting_is_refused_before_a_transport_exists():
    RecordingTransport.built.clear()
    with pytest.raises(RuntimeConfigError, match="tick_seconds"):
        build(spec(), RuntimeConfig(tick_seconds=0))
    assert not RecordingTransport.built


def test_the_default_transport_is_zmq():
    pytest.importorskip("zmq")
    from saltext_raft.transport.zmqtransport import ZmqTransport  # pylint: disable=import-outside-toplevel

    rt = assemble(spec(), MemoryStore(), DictStateMachine())
    assert type(rt.transport) is ZmqTransport
