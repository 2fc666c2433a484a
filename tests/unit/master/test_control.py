"""Runner <-> engine control requests: authenticity, peer forwarding, reply matching, timeouts."""

from __future__ import annotations

import queue
import threading

import pytest

from saltext_raft.master import control
from saltext_raft.master.control import ControlClient
from saltext_raft.master.control import ControlError
from saltext_raft.master.control import ControlRelay
from saltext_raft.master.control import ControlTimeout

KEY = "master-key-abc"
OPTS = {"id": "m1", "engines": [{"raft": {}}]}


class Bus:
    """An in-memory master event bus: every SaltEvent-like handle sees every event."""

    def __init__(self):
        self.subscribers: list[queue.Queue] = []
        self.fired = []

    def handle(self):
        q: queue.Queue = queue.Queue()
        self.subscribers.append(q)
        bus = self

        class Handle:
            def fire_event(self, data, tag):
                bus.fired.append((tag, data))
                for s in list(bus.subscribers):
                    s.put({"tag": tag, "data": data})
                return True

            def get_event(self, wait=5, tag="", full=False):
                try:
                    while True:
                        ev = q.get(timeout=wait)
                        if ev["tag"].startswith(tag):
                            return ev
                except queue.Empty:
                    return None

            def destroy(self):
                bus.subscribers.remove(q)

        return Handle()


def serve(bus, handler, node="m1", key=KEY):
    server = ControlRelay(OPTS, node, handler, bus=bus.handle(), key=key)
    stop = threading.Event()
    t = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    t.start()
    return server, stop, t


def test_request_reply_round_trip():
    bus = Bus()
    server, stop, t = serve(bus, lambda op, args: {"op": op, "args": args})
    try:
        client = ControlClient(OPTS, bus_factory=bus.handle, key=KEY)
        assert client.call("members", {"x": 1}, timeout=5) == {"op": "members", "args": {"x": 1}}
    finally:
        stop.set()
        t.join(5)


def test_engine_error_becomes_control_error():
    bus = Bus()

    def handler(op, args):
        raise ValueError("remove: m9 is not a member")

    server, stop, t = serve(bus, handler)
    try:
        with pytest.raises(ControlError, match="m9 is not a member"):
            ControlClient(OPTS, bus_factory=bus.handle, key=KEY).call("remove", {}, timeout=5)
    finally:
        stop.set()
        t.join(5)


def test_no_engine_times_out_with_a_clear_message():
    bus = Bus()
    with pytest.raises(ControlTimeout, match="no reply from the raft engine on master m1"):
        ControlClient(OPTS, bus_factory=bus.handle, key=KEY).call("status", timeout=0.3)


def test_server_ignores_forwarded_foreign_and_forged_requests():
    calls = []
    server = ControlRelay(OPTS, "m1", lambda op, a: calls.append(op), bus=Bus().handle(), key=KEY)
    good = control.make_request(KEY, "m1", "status")
    assert control.check_request(good, "m1", KEY) is None
    assert server.handle(dict(good, __peer_id="m2")) is None  # re-published by a peer master
    assert server.handle(control.make_request(KEY, "m2", "status")) is None  # for another node
    assert server.handle(control.make_request("other-key", "m1", "status")) is None  # forged
    tampered = dict(good, op="remove", args={"node": "m2"})
    assert server.handle(tampered) is None
    old = control.make_request(KEY, "m1", "status", now=1000.0)
    assert control.check_request(old, "m1", KEY) == "too old"
    assert calls == []
    reply = server.handle(good)
    assert reply["ok"] is True and reply["rid"] == good["rid"]
    assert calls == ["status"]


def test_key_never_travels_on_the_bus():
    bus = Bus()
    h = bus.handle()
    with pytest.raises(ControlTimeout):
        ControlClient(OPTS, bus_factory=lambda: h, key=KEY).call("status", timeout=0.1)
    assert bus.fired
    assert all(KEY not in repr(data) for _, data in bus.fired)


def test_client_matches_its_own_request_id():
    bus = Bus()
    server_h = bus.handle()

    def fake_engine():
        ev = server_h.get_event(wait=5, tag=control.REQ_PREFIX)
        rid = ev["data"]["rid"]
        server_h.fire_event(
            {"rid": "someone-else", "ok": True, "result": "wrong"},
            control.reply_tag("someone-else"),
        )
        server_h.fire_event({"rid": rid, "ok": True, "result": "mine"}, control.reply_tag(rid))

    t = threading.Thread(target=fake_engine, daemon=True)
    t.start()
    assert ControlClient(OPTS, bus_factory=bus.handle, key=KEY).call("leader", timeout=5) == "mine"
    t.join(5)


def test_a_replayed_signed_remove_is_refused_and_membership_changes_once():
    """Regression (issue 18, L4): the same signed ``remove`` ran twice within its 120 s
    window. The attacker recorded the request off the bus and fires it again, unchanged."""
    bus = Bus()
    members = {"m1", "m2", "m3"}
    changes = []

    def engine(op, args):
        assert op == "remove"
        if args["node"] not in members:
            raise LookupError(f"{args['node']} is not a member")
        members.discard(args["node"])
        changes.append(args["node"])
        return {"voters": sorted(members)}

    server = ControlRelay(OPTS, "m1", engine, bus=bus.handle(), key=KEY)
    request = control.make_request(KEY, "m1", "remove", {"node": "m2"})
    assert server.handle(request)["ok"] is True
    members.add("m2")  # the operator adds m2 back ...
    replay = dict(request)  # ... and the recorded request is fired again
    assert server.handle(replay) is None
    assert changes == ["m2"] and "m2" in members
    fresh = control.make_request(KEY, "m1", "remove", {"node": "m2"})
    assert server.handle(fresh)["ok"] is True  # a new request still works
    assert changes == ["m2", "m2"]


def test_remembered_request_ids_are_bounded_and_refuse_rather_than_forget():
    seen = control.SeenRequests(limit=3, window=10.0)
    for i in range(3):
        assert seen.admit(f"r{i}", 100.0, 100.0) is None
    assert "replayed" in seen.admit("r0", 100.0, 105.0)
    assert "more than 3 requests" in seen.admit("r3", 105.0, 105.0)  # full, none expired
    assert "replayed" in seen.admit("r1", 100.0, 109.0)  # not forgotten to make room
    assert seen.admit("r3", 111.0, 111.0) is None  # the old ones expired: room again
    assert len(seen) == 1


def test_the_engine_serves_exactly_the_vocabulary_the_client_sends():
    """``control.OPS`` is the one list of operations: the engine has a method for each and
    none besides (a new op added to one side only would be refused, or unreachable)."""
    from saltext_raft.master import control  # pylint: disable=import-outside-toplevel
    from saltext_raft.master.operations import EngineOperations  # pylint: disable=import-outside-toplevel

    served = {name[len("_op_") :] for name in dir(EngineOperations) if name.startswith("_op_")}
    assert served == set(control.OPS)
    assert set(control.NODE_OPS) <= set(control.OPS)
