"""Runner <-> engine control requests: authenticity, peer forwarding, reply matching, timeouts."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from saltext_raft.master import control
from saltext_raft.master.control import ControlClient
from saltext_raft.master.control import ControlError
from saltext_raft.master.control import ControlRelay
from saltext_raft.master.control import ControlTimeout

KEY = "master-key-abc"
ADD = control.NODE_OPS[0]  # adding a master (as a learner): waits for a commit
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


def test_a_slow_operation_does_not_hold_up_status_and_each_reply_reaches_its_caller():
    """A membership change without quorum waits its whole timeout on the engine's loop. It
    was served on the relay's one thread, so ``raft.status`` (what an operator runs in that
    very outage) went unanswered until it gave up. The relay runs each request on its own
    thread now."""
    bus = Bus()
    release = threading.Event()
    started = threading.Event()

    def engine(op, args):
        if op == ADD:
            started.set()
            assert release.wait(30), "the test never released the add"
            return {"added": args["node"]}
        return {"op": op}

    _, stop, t = serve(bus, engine)
    results = {}

    def slow_add():
        client = ControlClient(OPTS, bus_factory=bus.handle, key=KEY)
        results["add"] = client.call(ADD, {"node": "m4"}, timeout=30)

    adder = threading.Thread(target=slow_add, daemon=True)
    adder.start()
    try:
        assert started.wait(10), "the add never reached the engine"
        client = ControlClient(OPTS, bus_factory=bus.handle, key=KEY)
        assert client.call("status", timeout=5) == {"op": "status"}  # while the add waits
        assert client.call("members", timeout=5) == {"op": "members"}
        assert "add" not in results
        release.set()
        adder.join(10)
        assert results["add"] == {"added": "m4"}
    finally:
        release.set()
        stop.set()
        t.join(5)
    assert not t.is_alive()


class BlockingEngine:
    """An engine whose operations (but ``instant`` ones) wait for ``release``; it records the
    order they started in and how many ran at once."""

    def __init__(self, instant=()):
        self.release = threading.Event()
        self.instant = set(instant)
        self.running = self.most = 0
        self.order = []
        self._lock = threading.Lock()

    def __call__(self, op, args):
        with self._lock:
            self.most = max(self.most, self.running + 1)
            if op in self.instant:
                return args["n"]
            self.running += 1
            self.order.append(args["n"])
        try:
            assert self.release.wait(30), "the test never released the engine"
            return args["n"]
        finally:
            with self._lock:
                self.running -= 1


def start_call(bus, op, n, answers) -> threading.Thread:
    """A runner calling ``op`` with ``{"n": n}`` on a thread; its answer lands in ``answers``."""

    def call():
        client = ControlClient(OPTS, bus_factory=bus.handle, key=KEY)
        answers[n] = client.call(op, {"n": n}, timeout=30)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_reads_beyond_the_concurrency_bound_wait_for_a_slot_and_are_all_answered(monkeypatch):
    monkeypatch.setattr(control, "MAX_CONCURRENT", 2)
    bus = Bus()
    engine = BlockingEngine()
    _, stop, t = serve(bus, engine)
    answers = {}
    try:
        callers = [start_call(bus, "ping", n, answers) for n in range(6)]
        assert wait_for(lambda: engine.most >= 2)
        engine.release.set()
        for c in callers:
            c.join(10)
        assert answers == {n: n for n in range(6)}
        assert engine.most == 2  # never more than the bound at once
    finally:
        engine.release.set()
        stop.set()
        t.join(5)


def test_operations_that_change_something_are_served_one_at_a_time_in_order():
    """Two backups to one name, two membership changes: they must not race, as before."""
    bus = Bus()
    engine = BlockingEngine(instant=("ping",))
    _, stop, t = serve(bus, engine)
    answers = {}
    try:
        callers = []
        for n in range(3):  # each request reaches the relay before the next is sent
            callers.append(start_call(bus, "backup", n, answers))
            assert wait_for(lambda n=n: len(bus.fired) >= n + 1)
        assert wait_for(lambda: engine.order)
        client = ControlClient(OPTS, bus_factory=bus.handle, key=KEY)
        assert client.call("ping", {"n": "p"}, timeout=5) == "p"  # a read beside the backup
        engine.release.set()
        for c in callers:
            c.join(10)
        assert answers == {0: 0, 1: 1, 2: 2}
        assert engine.order == [0, 1, 2]
        assert engine.most == 2  # one backup and the ping, never two backups
    finally:
        engine.release.set()
        stop.set()
        t.join(5)
