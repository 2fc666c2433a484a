"""The ``raft`` state module's ``wait`` argument as YAML and salt-api hand it over: an odd value
fails the state with a clear comment and asks nothing (it raised a TypeError traceback)."""

from __future__ import annotations

import pytest

from saltext_raft.states import raft as state

BAD = [None, "None", "abc", 0, -5, "nan", float("inf"), True, [1]]


@pytest.fixture
def asked(monkeypatch):
    calls = []
    monkeypatch.setattr(
        state, "__salt__", {"saltutil.runner": lambda fun, kwarg: calls.append(fun)}, raising=False
    )
    monkeypatch.setattr(state, "__opts__", {"test": False}, raising=False)
    return calls


@pytest.mark.parametrize("wait", BAD)
@pytest.mark.parametrize(
    "call",
    [
        lambda wait: state.member("m4", "127.0.0.4:4606", wait=wait),
        lambda wait: state.absent("m4", wait=wait),
        lambda wait: state.leader("m4", wait=wait),
    ],
    ids=["member", "absent", "leader"],
)
def test_an_odd_wait_fails_the_state_and_asks_nothing(asked, call, wait):
    ret = call(wait)
    assert ret["result"] is False and ret["changes"] == {} and ret["name"] == "m4"
    assert "wait must be a number of seconds above 0" in ret["comment"]
    assert asked == []


def test_a_wait_given_as_text_is_taken(asked):
    """salt-api passes ``wait: "5"`` as text: it is five seconds, and the state goes on to ask
    the cluster (here the runner answers nothing useful, so it fails after asking)."""
    ret = state.absent("m4", wait="5")
    assert asked and "wait must be" not in ret["comment"]
