"""The process the crash tests kill: it writes to a CacheStore on localfs as fast as it can.

Two log schemes: ``segments`` (the localfs fast path, with small segment files so roll-over
and segment deletion happen under the kills) and ``keys`` (one key per record, sealed often:
what every other cache driver gets).

Run as ``python -m tests.functional.storage.crash_worker``: a *zygote* that imports Salt once
and forks one worker per ``run`` command read on stdin, so a kill cycle costs a fork rather
than a Salt start-up. Workers share the zygote's stdout (a pipe to the test); each line is
written with one ``os.write`` of less than PIPE_BUF bytes, so lines never interleave.

Worker protocol, one line per event:
    ``B <json op>``   about to run this op (save or compact), described fully so the test can
                      replay it on its model;
    ``P``             the op returned: it is persisted.
Zygote commands: ``run <cachedir> <scenario> <seed> <segments|keys>``, ``reap <pid>``, ``exit``.
Zygote protocol: ``PID <pid>`` after forking, ``REAPED <pid>`` after ``reap <pid>``.

Entry data is derived from (term, index) so the test can check every byte it gets back.
"""

from __future__ import annotations

import json
import os
import random
import sys


def entry_data(term: int, index: int) -> bytes:
    return b"%d:%d:" % (term, index) + b"x" * (index % 61)


def _out(line: str) -> None:
    os.write(1, (line + "\n").encode())


def store_kwargs(mode: str) -> dict:
    if mode == "segments":
        return {"log_format": "segments", "segment_bytes": 16384}
    return {"log_format": "keys", "seal_records": 8}


def worker(cachedir: str, scenario: str, seed: int, mode: str) -> None:
    # pylint: disable=import-outside-toplevel
    from saltext_raft.core.types import Entry
    from saltext_raft.core.types import HardState
    from saltext_raft.core.types import Membership
    from saltext_raft.core.types import Snapshot
    from saltext_raft.core.types import SnapshotMeta
    from saltext_raft.storage import open_store
    from tests.functional.storage.backends import master_opts

    rng = random.Random(seed)
    store = open_store(master_opts(cachedir), "crash", "m1", **store_kwargs(mode))
    state = store.load()
    hs = state.hard_state
    base = state.snapshot.meta.index if state.snapshot else 0
    terms = {e.index: e.term for e in state.entries}
    last = base + len(state.entries)
    term = max([hs.term, *terms.values()] or [1]) or 1
    members = Membership(frozenset({"m1"}))

    for _ in range(100_000):
        roll = rng.random()
        op = None
        if scenario == "truncate" and roll < 0.3 and last > hs.commit:
            first = rng.randint(max(hs.commit + 1, last - 400), last)
            term += 1
            op = ["save", [term, "m1", hs.commit], first, rng.randint(1, 200), term, None]
        elif scenario == "snapshot" and roll < 0.15 and hs.commit > base:
            index = rng.randint(base + 1, hs.commit)
            op = ["compact", index, terms[index]]
        elif scenario == "snapshot" and roll < 0.2:
            # a snapshot received from a leader: matching (keeps the suffix) or not (drops it)
            if rng.random() < 0.5 and last > max(base, hs.commit):
                index = rng.randint(max(base, hs.commit) + 1, last)
                snap_term = terms[index]
            else:
                index = last + rng.randint(1, 50)
                term += 1
                snap_term = term
            op = ["save", [term, "", index], 0, 0, term, [index, snap_term]]
        if op is None:
            n = rng.randint(1, 64)
            commit = min(last, hs.commit + rng.randint(0, 64))
            op = ["save", [term, "m1", commit], last + 1, n, term, None]
        _out("B " + json.dumps(op))
        if op[0] == "compact":
            _, index, snap_term = op
            store.compact(Snapshot(SnapshotMeta(index, snap_term, members), b"app@%d" % index))
            for i in range(base + 1, index + 1):
                terms.pop(i, None)
            base = index
        else:
            _, hs_list, first, n, entry_term, snap = op
            snapshot = None
            if snap is not None:
                snapshot = Snapshot(SnapshotMeta(snap[0], snap[1], members), b"leader@%d" % snap[0])
            entries = [
                Entry(entry_term, i, 0, entry_data(entry_term, i)) for i in range(first, first + n)
            ]
            hs = HardState(*hs_list)
            store.save(hs, entries, snapshot)
            if snapshot is not None:
                keep = terms.get(snap[0]) == snap[1]
                terms = {i: t for i, t in terms.items() if i > snap[0]} if keep else {}
                last = max(last, snap[0]) if keep else snap[0]
                base = snap[0]
            if n:
                for i in range(first, last + 1):
                    terms.pop(i, None)
                terms.update((e.index, e.term) for e in entries)
                last = first + n - 1
        _out("P")
    _out("DONE")


def zygote() -> None:
    # Import everything a worker needs once, before forking.
    import tempfile  # pylint: disable=import-outside-toplevel

    import salt.cache  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    from saltext_raft.storage import open_store  # pylint: disable=import-outside-toplevel
    from tests.functional.storage.backends import master_opts  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as warm:  # import the cache driver modules once
        store = open_store(master_opts(warm), "warm", "up")
        store.load()
        store.close()
    _out("READY")
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "run":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    worker(cmd[1], cmd[2], int(cmd[3]), cmd[4])
                except BaseException as exc:  # pylint: disable=broad-except
                    _out(f"ERROR {type(exc).__name__}: {exc}".replace("\n", " "))
                    code = 1
                finally:
                    os._exit(code)  # pylint: disable=protected-access
            _out(f"PID {pid}")
        elif cmd[0] == "reap":
            pid = int(cmd[1])
            os.waitpid(pid, 0)
            _out(f"REAPED {pid}")
        elif cmd[0] == "exit":
            return


if __name__ == "__main__":
    zygote()
