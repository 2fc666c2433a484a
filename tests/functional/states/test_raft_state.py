"""The ``raft`` state module through Salt's real state loader: it is found as ``raft.*``, reaches
the runners only through ``saltutil.runner("raft.<op>", kwarg=...)`` and honours the
``test`` option from ``__opts__``. The runners are the unit tests' fake (a membership in
memory); tests/scenarios/test_states.py runs the same module on real masters."""

from __future__ import annotations

import salt.config
import salt.loader

from tests.unit.test_statelogic import ADDR
from tests.unit.test_statelogic import FakeRunners


def raft_states(tmp_path, fake: FakeRunners, test: bool):
    calls = []

    def saltutil_runner(name, arg=None, kwarg=None, **kwargs):
        calls.append(name)
        assert name.startswith("raft.") and not arg and not kwargs, (name, arg, kwargs)
        return fake(name[len("raft.") :], **kwarg)

    opts = salt.config.DEFAULT_MINION_OPTS.copy()
    opts.update({"cachedir": str(tmp_path / "cache"), "test": test})
    utils = salt.loader.utils(opts)
    states = salt.loader.states(
        opts, {"saltutil.runner": saltutil_runner}, utils, salt.loader.serializers(opts)
    )
    return states, calls


def test_the_loader_finds_the_raft_states(tmp_path):
    states, _ = raft_states(tmp_path, FakeRunners(["m1"]), test=False)
    for fun in ("raft.member", "raft.absent", "raft.leader"):
        assert fun in states, fun


def test_member_through_the_loader_adds_once(tmp_path):
    fake = FakeRunners(["m1", "m2", "m3"])
    states, calls = raft_states(tmp_path, fake, test=False)
    ret = states["raft.member"]("m4", address=ADDR["m4"], wait=5)
    assert ret["result"] is True and ret["changes"]["new"]["role"] == "voter", ret
    assert "raft.add" in calls and fake.voters == {"m1", "m2", "m3", "m4"}
    ret = states["raft.member"]("m4", address=ADDR["m4"], wait=5)
    assert ret["result"] is True and ret["changes"] == {}, ret


def test_test_option_from_opts_changes_nothing(tmp_path):
    fake = FakeRunners(["m1", "m2", "m3"])
    states, calls = raft_states(tmp_path, fake, test=True)
    for ret in (
        states["raft.member"]("m4", address=ADDR["m4"], wait=5),
        states["raft.absent"]("m3", wait=5),
        states["raft.leader"]("m2", wait=5),
    ):
        assert ret["result"] is None and ret["changes"], ret
    assert set(calls) == {"raft.members"}
    assert fake.voters == {"m1", "m2", "m3"} and fake.leader == "m1"
