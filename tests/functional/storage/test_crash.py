"""Crash safety on localfs: SIGKILL a writer at random moments, reopen, check everything.

Run for both log schemes: segment files (the localfs fast path) and one key per record.

A worker process (``crash_worker.py``) appends, truncates, compacts and installs snapshots as
fast as it can, announcing each op before it starts (``B``) and after ``save()``/``compact()``
returned (``P``). The test replays the ops on a MemoryStore model. After each SIGKILL it
reopens the store and requires the state to be *exactly* the model after the last reported op,
or after the op that was in flight: every batch reported persisted is present and intact,
nothing is invented, hard state never goes backwards, and the log is contiguous with
non-decreasing terms (log matching).

Kills per scenario: ``SALTEXT_RAFT_CRASH_KILLS`` (default 20; the long nox session uses 200).
The seed of a failing run is in the assertion message; rerun with ``SALTEXT_RAFT_CRASH_SEED``.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from saltext_raft.core.types import Entry
from saltext_raft.core.types import HardState
from saltext_raft.core.types import Membership
from saltext_raft.core.types import Snapshot
from saltext_raft.core.types import SnapshotMeta
from saltext_raft.storage import MemoryStore
from saltext_raft.storage import open_store
from tests.functional.storage.backends import master_opts
from tests.functional.storage.crash_worker import entry_data
from tests.functional.storage.crash_worker import store_kwargs

KILLS = int(os.environ.get("SALTEXT_RAFT_CRASH_KILLS", "20"))
REPO = pathlib.Path(__file__).resolve().parents[3]
LINE_TIMEOUT = 30.0  # seconds to wait for the next line from the zygote/worker


class Lines:
    """Line reader over a pipe with a bound on every wait."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def next(self, what: str) -> str:
        deadline = time.monotonic() + LINE_TIMEOUT
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(
                    f"no line from the crash worker within {LINE_TIMEOUT}s ({what})"
                )
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError(f"crash worker pipe closed while waiting for {what}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


@pytest.fixture(scope="module")
def zygote():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "tests.functional.storage.crash_worker"],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    lines = Lines(proc.stdout.fileno())
    try:
        assert lines.next("zygote start") == "READY"
        yield proc, lines
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def apply(model: MemoryStore, op: list) -> None:
    members = Membership(frozenset({"m1"}))
    if op[0] == "compact":
        _, index, term = op
        model.compact(Snapshot(SnapshotMeta(index, term, members), b"app@%d" % index))
        return
    _, hs, first, n, term, snap = op
    snapshot = None
    if snap is not None:
        snapshot = Snapshot(SnapshotMeta(snap[0], snap[1], members), b"leader@%d" % snap[0])
    entries = [Entry(term, i, 0, entry_data(term, i)) for i in range(first, first + n)]
    model.save(HardState(*hs), entries, snapshot)


def check_log_matching(state, context: str) -> None:
    prev_index = state.snapshot.meta.index if state.snapshot else 0
    prev_term = state.snapshot.meta.term if state.snapshot else 0
    for e in state.entries:
        assert e.index == prev_index + 1, f"{context}: gap before index {e.index}"
        assert e.term >= prev_term, f"{context}: term goes backwards at {e.index}"
        assert e.data == entry_data(e.term, e.index), f"{context}: entry {e.index} damaged"
        prev_index, prev_term = e.index, e.term


@pytest.mark.parametrize("mode", ["segments", "keys"])
@pytest.mark.parametrize("scenario", ["append", "truncate", "snapshot"])
def test_sigkill_never_loses_or_invents_state(zygote, tmp_path, scenario, mode):
    proc, lines = zygote
    seed = int(os.environ.get("SALTEXT_RAFT_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    cachedir = str(tmp_path / "cache")
    opts = master_opts(cachedir)
    model = MemoryStore()
    model.load()
    prev_hs = HardState()
    persisted_ops = in_flight_kills = 0
    op_seconds = 0.005  # running mean of one op's duration, to aim kills inside ops
    for kill in range(KILLS):
        context = (
            f"{mode} scenario {scenario} seed {seed} kill {kill} (SALTEXT_RAFT_CRASH_SEED={seed})"
        )
        proc.stdin.write(f"run {cachedir} {scenario} {rng.randrange(1 << 30)} {mode}\n".encode())
        proc.stdin.flush()
        # Kill after a random number of persisted ops, sometimes right as an op starts
        # (most interesting for truncations, compactions and snapshot installs).
        target = rng.randint(1, 25)
        on_begin = rng.random() < 0.5
        pid, pending, seen, killed = None, None, 0, False
        while not killed:
            line = lines.next(f"worker output, {context}")
            if line.startswith("PID "):
                pid = int(line.split()[1])
            elif line.startswith("B "):
                pending = json.loads(line[2:])
                began = time.monotonic()
                if on_begin and seen >= target and pid is not None:
                    killed = True
            elif line == "P":
                apply(model, pending)
                pending = None
                seen += 1
                op_seconds = 0.9 * op_seconds + 0.1 * (time.monotonic() - began)
                if not on_begin and seen >= target and pid is not None:
                    killed = True
            elif line.startswith("ERROR") or line == "DONE":
                pytest.fail(f"{context}: worker stopped on its own: {line}")
            if killed:
                # land anywhere inside the op (record write, seal, deletions...)
                time.sleep(rng.random() * 1.5 * op_seconds)
                os.kill(pid, signal.SIGKILL)
        proc.stdin.write(f"reap {pid}\n".encode())
        proc.stdin.flush()
        while True:  # everything the worker wrote comes before REAPED
            line = lines.next(f"reap, {context}")
            if line.startswith("REAPED"):
                break
            if line.startswith("B "):
                pending = json.loads(line[2:])
            elif line == "P":
                apply(model, pending)
                pending = None
                seen += 1
        persisted_ops += seen

        store = open_store(opts, "crash", "m1", **store_kwargs(mode))
        try:
            got = store.load()
        finally:
            store.close()
        check_log_matching(got, context)
        before = model.load()
        if got != before:
            assert pending is not None, f"{context}: state differs from the last persisted op"
            after = MemoryStore(
                type(model.disk)(
                    model.disk.hard_state, model.disk.snapshot, list(model.disk.entries)
                )
            )
            after.load()
            apply(after, pending)
            assert got == after.load(), f"{context}: state is neither before nor after op {pending}"
            model = after
            in_flight_kills += 1
        assert got.hard_state.term >= prev_hs.term, f"{context}: term went backwards"
        assert got.hard_state.commit >= prev_hs.commit, f"{context}: commit went backwards"
        prev_hs = got.hard_state
    assert persisted_ops >= KILLS
    print(
        f"{mode} {scenario}: {KILLS} kills, {persisted_ops} ops persisted, "
        f"{in_flight_kills} in-flight ops found durable"
    )
