"""A standalone node with the commit-path trace installed (``bench trace`` starts three).

Lives here: :func:`install` (wraps, in this process only, the points a commit passes: a
proposal submitted, a Ready taken, append messages sent, received and stepped into the core,
the store's save and its ``fdatasync``/``fsync``, the apply) and :func:`main` (``python -m
saltext_raft.bench.tracednode`` with ``saltext_raft node``'s arguments). Must not live here: the
analysis (``bench.trace``), the runtime, transport or storage themselves: nothing there knows
about the trace, it is installed by wrapping their methods in a process started for it, so it
costs nothing anywhere else.

Timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process on the
machine). Each event is one line ``t_ns node thread what index`` appended with one
``os.write`` to the node's own file in ``$SALTEXT_RAFT_TRACE_DIR``: a few µs per event, a
handful of events per commit.
"""

from __future__ import annotations

import os
import sys
import threading
import time

#: The environment variable naming the directory a traced node writes its events to.
TRACE_DIR_ENV = "SALTEXT_RAFT_TRACE_DIR"


class _Sink:
    def __init__(self, path: str, node: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.node = node

    def __call__(self, what: str, index: int) -> None:
        tname = "loop" if threading.current_thread() is threading.main_thread() else "store"
        line = f"{time.monotonic_ns()} {self.node} {tname} {what} {index}\n"
        os.write(self.fd, line.encode())


def _last_entry_index(entries) -> int:
    return entries[-1].index if entries else -1


def install(trace_dir: str, node: str) -> None:
    """Wrap the commit path's methods of this process so that each records an event."""
    # pylint: disable=import-outside-toplevel,protected-access
    from saltext_raft.core import MsgType
    from saltext_raft.core import RaftNode
    from saltext_raft.runtime.apply import Applier
    from saltext_raft.runtime.proposals import Proposals
    from saltext_raft.storage.store import CacheStore
    from saltext_raft.transport.base import Transport
    from saltext_raft.transport.zmqtransport import ZmqTransport

    rec = _Sink(os.path.join(trace_dir, f"{node}.trace"), node)
    append, append_resp = MsgType.APPEND, MsgType.APPEND_RESP

    def wrap(cls, name, before=None, after=None):
        orig = getattr(cls, name)

        def wrapper(self, *args, **kw):
            if before is not None:
                before(*args)
            result = orig(self, *args, **kw)
            if after is not None:
                after(result, *args)
            return result

        setattr(cls, name, wrapper)

    wrap(Proposals, "submit", before=lambda data, timeout: rec("submit", -1))
    wrap(
        RaftNode,
        "ready",
        after=lambda rd: rec("ready", _last_entry_index(rd.entries)) if rd.entries else None,
    )

    def sent(msg):
        if msg.type is append and msg.entries:
            rec("send_append", _last_entry_index(msg.entries))
        elif msg.type is append_resp and not msg.reject:
            rec("send_resp", msg.index)

    def received(msg):
        if msg.type is append and msg.entries:
            rec("recv_append", _last_entry_index(msg.entries))
        elif msg.type is append_resp and not msg.reject:
            rec("recv_resp", msg.index)

    wrap(ZmqTransport, "send", before=sent)
    wrap(Transport, "_deliver", before=received)

    def stepped(_result, msg):
        if msg.type is append and msg.entries:
            rec("stepped_append", _last_entry_index(msg.entries))
        elif msg.type is append_resp and not msg.reject:
            rec("stepped_resp", msg.index)

    wrap(RaftNode, "step", after=stepped)

    def save_start(hs, entries, snapshot=None):
        if entries:
            rec("save_start", _last_entry_index(entries))

    def save_end(result, hs, entries, snapshot=None):
        if entries:
            rec("save_end", _last_entry_index(entries))

    wrap(CacheStore, "save", before=save_start, after=save_end)

    def applying(rd, install_):
        if rd.committed_entries:
            rec("apply", _last_entry_index(rd.committed_entries))

    wrap(Applier, "apply", before=applying)
    for name in ("fdatasync", "fsync"):
        orig = getattr(os, name)

        def timed(fd, _orig=orig, _name=name):
            t0 = time.monotonic_ns()
            _orig(fd)
            rec(_name, time.monotonic_ns() - t0)

        setattr(os, name, timed)


def main(argv=None) -> int:
    """A standalone node (``saltext_raft node``'s arguments) with the trace installed."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft import standalone

    argv = list(sys.argv[1:] if argv is None else argv)
    node = argv[argv.index("--id") + 1]
    install(os.environ[TRACE_DIR_ENV], node)
    return standalone.main(argv)


if __name__ == "__main__":
    sys.exit(main())
